"""The predict use-case: look up the cache, decode, classify, record the events.

Plain Python, no Flask: the API hands in bytes and who asked, and gets back
dataclasses. Each upload is first looked up in the result cache by its bytes;
the misses are decoded and classified in one batch by the model chain (primary,
or the fallback when the primary fails). ``predict`` returns only after the
warehouse committed the request's events, so whatever the API acknowledges is
durable. Failures are recorded too (``record_failure``), best effort: a failure
that cannot be recorded is still reported to the client.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from imgclass.errors import ModelUnavailable, ServiceError, StorageUnavailable
from imgclass.ops import metrics
from imgclass.ops.cache import CachedResult, ResultCache, cache_key
from imgclass.vision.classifier import ModelInfo, Prediction
from imgclass.vision.fallback import ModelChain
from imgclass.vision.images import content_sha256, load_image
from imgclass.vision.preprocess import brightness, to_tensor
from imgclass.warehouse.recorder import (
    ClassFacts,
    Event,
    ImageFacts,
    ModelFacts,
    Recorder,
    Requester,
)

log = logging.getLogger(__name__)

PREDICT_ENDPOINT = "predict"


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


@dataclass(frozen=True)
class ImageResult:
    filename: str
    predictions: list[Prediction]
    time_ms: float
    width: int
    height: int
    model: ModelInfo  # the model whose answer this is
    cached: bool  # answered from the result cache
    is_fallback: bool  # answered by the fallback model


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    received_at: datetime  # naive UTC
    requester: Requester
    started: float  # time.perf_counter() at arrival


@dataclass
class _Pending:
    """An upload on its way through the request: cache lookup, then maybe the model."""

    index: int  # 1-based position in the request, for error messages
    upload: Upload
    sha256: str
    started: float
    key: str | None = None
    cached: CachedResult | None = None
    tensor: np.ndarray | None = None
    image_facts: ImageFacts | None = None
    decode_ms: float = 0.0


class PredictionService:
    def __init__(
        self,
        *,
        models: ModelChain,
        recorder: Recorder,
        max_image_pixels: int,
        cache: ResultCache | None = None,
    ):
        self.models = models
        self.recorder = recorder
        self.max_image_pixels = max_image_pixels
        self.cache = cache

    def predict(self, ctx: RequestContext, uploads: list[Upload], top_k: int) -> list[ImageResult]:
        if not self.models.heal():  # nothing loaded: loads again once per cool-down
            exc = ModelUnavailable(f"no model can answer: {self.models.unavailable_reason}")
            self.record_failure(ctx, exc.status, exc.code)
            raise exc
        identity = self.models.cache_identity if self.cache else None
        pending = [
            self._look_up(index, upload, identity, top_k)
            for index, upload in enumerate(uploads, start=1)
        ]
        answer = None
        misses = [item for item in pending if item.cached is None]
        if misses:
            self._decode(ctx, misses, len(uploads))
            started = time.perf_counter()
            try:
                with metrics.stage("inference"):
                    answer = self.models.classify(np.stack([m.tensor for m in misses]), top_k)
            except ModelUnavailable as exc:
                self.record_failure(ctx, exc.status, exc.code)
                raise
            # One batched inference serves every miss; each carries an equal share.
            infer_share = (time.perf_counter() - started) * 1000 / len(misses)
            for item, predictions in zip(misses, answer.predictions, strict=True):
                facts = item.image_facts
                item.cached = CachedResult(
                    tuple(predictions), facts.width, facts.height, facts.format, facts.brightness
                )
                item.decode_ms += infer_share
                # Only the healthy primary's answers are cached: a fallback answer must
                # not outlive the incident that caused it.
                if item.key is not None and not answer.is_fallback:
                    self.cache.put(item.key, item.cached)

        results, events = [], []
        for item in pending:
            fresh = item.tensor is not None
            model = answer.info if fresh else identity
            is_fallback = fresh and answer.is_fallback
            entry = item.cached
            time_ms = item.decode_ms if fresh else (time.perf_counter() - item.started) * 1000
            results.append(
                ImageResult(
                    item.upload.filename,
                    list(entry.predictions),
                    time_ms,
                    entry.width,
                    entry.height,
                    model,
                    cached=not fresh,
                    is_fallback=is_fallback,
                )
            )
            events.append(self._event(ctx, item, model, time_ms, is_fallback))
        try:
            with metrics.stage("db_write"):
                self.recorder.record(events)
        except Exception as exc:
            log.exception("could not record request %s", ctx.request_id)
            raise StorageUnavailable(
                "the request could not be recorded, so it was not processed; retry later"
            ) from exc
        for result in results:  # what the client is told, now that it is recorded
            metrics.observe_prediction(result.predictions[0].label, result.predictions[0].score)
        return results

    def _look_up(
        self, index: int, upload: Upload, identity: ModelInfo | None, top_k: int
    ) -> _Pending:
        item = _Pending(index, upload, content_sha256(upload.data), time.perf_counter())
        if identity is not None and upload.data:
            item.key = cache_key(identity, top_k, item.sha256)
            item.cached = self.cache.get(item.key)
            if item.cached is None:
                metrics.cache_miss()
            else:
                metrics.cache_hit()
        return item

    def _decode(self, ctx: RequestContext, misses: list[_Pending], n_uploads: int) -> None:
        """Decode and preprocess each miss (fills tensor and image_facts) or raise its error."""
        prep = self.models.preprocessing
        for item in misses:
            upload = item.upload
            try:
                with metrics.stage("decode"):
                    image = load_image(
                        upload.data,
                        max_pixels=self.max_image_pixels,
                        min_short_side=prep.resize_short,
                        sha256=item.sha256,
                    )
            except ServiceError as exc:
                self.record_failure(ctx, exc.status, exc.code, upload=upload)
                if n_uploads > 1:
                    exc.message = f"file {item.index} ({upload.filename!r}): {exc.message}"
                    exc.args = (exc.message,)
                raise
            metrics.observe_input(image.width, image.height, image.n_bytes)
            with metrics.stage("preprocess"):
                item.tensor = to_tensor(image.image, prep)
            item.image_facts = ImageFacts(
                image.sha256,
                upload.filename,
                image.n_bytes,
                image.width,
                image.height,
                image.format,
                brightness(item.tensor, prep),
            )
            item.decode_ms = (time.perf_counter() - item.started) * 1000

    def _event(
        self,
        ctx: RequestContext,
        item: _Pending,
        model: ModelInfo,
        time_ms: float,
        is_fallback: bool,
    ) -> Event:
        entry = item.cached
        best = entry.predictions[0]
        wnids = self.models.labels.wnids
        wnid = wnids[best.class_id] if best.class_id < len(wnids) else None
        return Event(
            request_id=ctx.request_id,
            event_time=ctx.received_at,
            requester=ctx.requester,
            endpoint=PREDICT_ENDPOINT,
            status_code=200,
            time_taken_ms=time_ms,
            image=ImageFacts(
                item.sha256,
                item.upload.filename,
                len(item.upload.data),
                entry.width,
                entry.height,
                entry.format,
                entry.brightness,
            ),
            predicted=ClassFacts(best.class_id, best.label, wnid),
            model=ModelFacts(model.name, model.version, model.sha256),
            confidence=best.score,
            cache_hit=item.tensor is None,
            is_fallback=is_fallback,
        )

    def record_failure(
        self, ctx: RequestContext, status: int, code: str, *, upload: Upload | None = None
    ) -> None:
        """Record a failed predict request; never raises (the client still gets its error)."""
        image = None
        if upload is not None and upload.data:
            image = ImageFacts(content_sha256(upload.data), upload.filename, len(upload.data))
        event = Event(
            request_id=ctx.request_id,
            event_time=ctx.received_at,
            requester=ctx.requester,
            endpoint=PREDICT_ENDPOINT,
            status_code=status,
            time_taken_ms=(time.perf_counter() - ctx.started) * 1000,
            image=image,
            error_code=code,
        )
        try:
            self.recorder.record([event])
        except Exception:
            log.exception("could not record failed request %s (%s)", ctx.request_id, code)
