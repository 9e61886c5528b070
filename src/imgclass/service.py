"""The predict use-case: decode each upload, classify the batch, record the events.

Plain Python, no Flask: the API hands in bytes and who asked, and gets back
dataclasses. ``predict`` returns only after the warehouse committed the
request's events, so whatever the API acknowledges is durable. Failures are
recorded too (``record_failure``), best effort: a failure that cannot be
recorded is still reported to the client.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from imgclass.errors import ModelUnavailable, ServiceError, StorageUnavailable
from imgclass.ops import metrics
from imgclass.vision.classifier import Classifier, Prediction
from imgclass.vision.images import DecodedImage, content_sha256, load_image
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


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    received_at: datetime  # naive UTC
    requester: Requester
    started: float  # time.perf_counter() at arrival


class PredictionService:
    def __init__(
        self,
        *,
        classifier: Classifier | None,
        classifier_error: str | None,
        recorder: Recorder,
        max_image_pixels: int,
    ):
        self.classifier = classifier
        self.classifier_error = classifier_error
        self.recorder = recorder
        self.max_image_pixels = max_image_pixels

    def predict(self, ctx: RequestContext, uploads: list[Upload], top_k: int) -> list[ImageResult]:
        try:
            classifier = self._require_classifier()
        except ModelUnavailable as exc:
            self.record_failure(ctx, exc.status, exc.code)
            raise
        prep = classifier.preprocessing
        decoded: list[DecodedImage] = []
        tensors: list[np.ndarray] = []
        prep_ms: list[float] = []
        for index, upload in enumerate(uploads):
            started = time.perf_counter()
            try:
                with metrics.stage("decode"):
                    image = load_image(
                        upload.data,
                        max_pixels=self.max_image_pixels,
                        min_short_side=prep.resize_short,
                    )
            except ServiceError as exc:
                self.record_failure(ctx, exc.status, exc.code, upload=upload)
                if len(uploads) > 1:
                    exc.message = f"file {index + 1} ({upload.filename!r}): {exc.message}"
                    exc.args = (exc.message,)
                raise
            decoded.append(image)
            metrics.observe_input(image.width, image.height, image.n_bytes)
            with metrics.stage("preprocess"):
                tensors.append(to_tensor(image.image, prep))
            prep_ms.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        try:
            with metrics.stage("inference"):
                predictions = classifier.predict(np.stack(tensors), top_k)
        except ModelUnavailable as exc:
            self.record_failure(ctx, exc.status, exc.code)
            raise
        # One batched inference serves every image; each carries an equal share.
        infer_share = (time.perf_counter() - started) * 1000 / len(uploads)

        model = ModelFacts(classifier.info.name, classifier.info.version, classifier.info.sha256)
        wnids = classifier.labels.wnids
        results, events = [], []
        for upload, image, tensor, preds, ms in zip(
            uploads, decoded, tensors, predictions, prep_ms, strict=True
        ):
            time_ms = ms + infer_share
            best = preds[0]
            wnid = wnids[best.class_id] if best.class_id < len(wnids) else None
            results.append(ImageResult(upload.filename, preds, time_ms, image.width, image.height))
            events.append(
                Event(
                    request_id=ctx.request_id,
                    event_time=ctx.received_at,
                    requester=ctx.requester,
                    endpoint=PREDICT_ENDPOINT,
                    status_code=200,
                    time_taken_ms=time_ms,
                    image=ImageFacts(
                        image.sha256,
                        upload.filename,
                        image.n_bytes,
                        image.width,
                        image.height,
                        image.format,
                        brightness(tensor, prep),
                    ),
                    predicted=ClassFacts(best.class_id, best.label, wnid),
                    model=model,
                    confidence=best.score,
                )
            )
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

    def _require_classifier(self) -> Classifier:
        if self.classifier is None:
            raise ModelUnavailable(f"the model is not loaded: {self.classifier_error}")
        return self.classifier
