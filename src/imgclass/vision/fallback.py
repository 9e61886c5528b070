"""The model chain: a primary classifier behind a circuit breaker, and a fallback.

``ModelChain.classify`` asks the primary first. When the primary fails (a
missing or corrupt file, an exception in the session, an inference that
overruns its timeout) the fallback answers the same batch, and the answer says
so. After ``failure_threshold`` consecutive primary failures the breaker opens:
requests go straight to the fallback, without paying for a failing call, until
``reset_after_s`` has passed; then one request probes the primary (half-open),
and its success closes the breaker again. The probe loads the primary afresh
from disk, so fixing or replacing the model file heals the service without a
restart.

When no model loaded at all (both files missing or corrupt, or the primary's
with no fallback configured) there is no call for the breaker to probe, so
``heal`` loads them again (the primary, then the fallback) at most once per
cool-down; the predict path and the readiness check (hence every scrape) call
it, so such a service heals by itself too.

The breaker is pybreaker's; it holds its lock for the duration of a call, which
costs nothing here because inference is already one-at-a-time per process
(``OnnxClassifier``'s run lock).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pybreaker

from imgclass.errors import ModelUnavailable
from imgclass.vision.classifier import Classifier, ModelInfo, Prediction
from imgclass.vision.labels import Labels, imagenet_labels
from imgclass.vision.preprocess import Preprocessing

log = logging.getLogger(__name__)

# pybreaker's state names, as our API and metrics spell them.
BREAKER_STATES = {
    pybreaker.STATE_CLOSED: "closed",
    pybreaker.STATE_HALF_OPEN: "half_open",
    pybreaker.STATE_OPEN: "open",
}


@dataclass(frozen=True)
class Answer:
    predictions: list[list[Prediction]]
    info: ModelInfo  # the model that answered
    is_fallback: bool


class _StateListener(pybreaker.CircuitBreakerListener):
    def __init__(self, name: str, on_change: Callable[[str, str], None] | None):
        self.name = name
        self.on_change = on_change

    def state_change(self, cb, old_state, new_state) -> None:
        old = BREAKER_STATES.get(old_state.name if old_state else "", "none")
        new = BREAKER_STATES[new_state.name]
        log.warning("circuit breaker of model %s: %s -> %s", self.name, old, new)
        if self.on_change:
            self.on_change(self.name, new)


class ModelChain:
    """Primary + optional fallback; use ``classify`` on the request path.

    ``load_primary`` and ``load_fallback`` build a classifier from disk or raise
    ``ModelUnavailable``; they are called at start, by the breaker's probe
    (primary) and by ``heal`` (both).
    """

    def __init__(
        self,
        load_primary: Callable[[], Classifier],
        load_fallback: Callable[[], Classifier] | None = None,
        *,
        failure_threshold: int = 3,
        reset_after_s: float = 30.0,
        primary_name: str = "primary",
        on_breaker_change: Callable[[str, str], None] | None = None,
        on_fallback: Callable[[str], None] | None = None,
    ):
        self._load_primary = load_primary
        self._load_fallback = load_fallback
        self.reset_after_s = reset_after_s
        self.on_fallback = on_fallback
        self.primary: Classifier | None = None
        self.primary_error: str | None = None
        self.fallback: Classifier | None = None
        self.fallback_error: str | None = None
        self._heal_lock = threading.Lock()
        self._next_heal = 0.0  # time.monotonic() before which heal() does not load again
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=failure_threshold,
            reset_timeout=reset_after_s,
            name=primary_name,
            listeners=[_StateListener(primary_name, on_breaker_change)],
        )
        try:
            self.primary = load_primary()
        except ModelUnavailable as exc:
            self.primary_error = exc.message
            log.error("primary model unavailable: %s", exc.message)
            # Not loaded at all: no point in failing N requests before using the fallback.
            self.breaker.open()
        self._load_missing_fallback()
        if not self.available:
            self._next_heal = time.monotonic() + reset_after_s

    def _load_missing_fallback(self) -> None:
        if self._load_fallback is None or self.fallback is not None:
            return
        try:
            fallback = self._load_fallback()
        except ModelUnavailable as exc:
            self.fallback_error = exc.message
            log.warning("no fallback model: %s", exc.message)
            return
        primary = self.primary
        if primary is not None and fallback.preprocessing != primary.preprocessing:
            self.fallback_error = "it expects different input than the primary"
            log.error("fallback model %s %s; disabled", fallback.info.name, self.fallback_error)
            return
        self.fallback, self.fallback_error = fallback, None

    def heal(self) -> bool:
        """Whether a model can answer; when none is loaded, first try loading them again.

        At most once per cool-down (``reset_after_s``) and by one thread at a
        time (the others answer at once from the current state): the primary
        first, then the fallback if it is missing.
        """
        if self.available or time.monotonic() < self._next_heal:
            return self.available
        if not self._heal_lock.acquire(blocking=False):
            return self.available
        try:
            if not self.available and time.monotonic() >= self._next_heal:
                self._load_again()
                if not self.available:
                    self._next_heal = time.monotonic() + self.reset_after_s
        finally:
            self._heal_lock.release()
        return self.available

    def _load_again(self) -> None:
        try:
            primary = self._load_primary()
        except ModelUnavailable as exc:
            self.primary_error = exc.message
        else:
            log.warning("primary model %s loaded after none could answer", primary.info.name)
            self.primary, self.primary_error = primary, None
            self.breaker.close()  # it was opened because the primary was missing
        self._load_missing_fallback()
        if self.fallback is not None and self.primary is None:
            log.warning("fallback model %s loaded after none could answer", self.fallback.info.name)

    # -- what the rest of the service reads --------------------------------

    @property
    def available(self) -> bool:
        return self.primary is not None or self.fallback is not None

    @property
    def unavailable_reason(self) -> str:
        """Why no model can answer: the primary's failure and the fallback's."""
        primary = self.primary_error or "no model is loaded"
        if self._load_fallback is None:
            fallback = "none is configured"
        else:
            fallback = self.fallback_error or "not loaded"
        return (
            f"{primary}; fallback: {fallback}; "
            f"the models are loaded again every {self.reset_after_s:g} s"
        )

    @property
    def preprocessing(self) -> Preprocessing:
        model = self.primary or self.fallback
        if model is None:
            raise ModelUnavailable(f"no model can answer: {self.unavailable_reason}")
        return model.preprocessing

    @property
    def labels(self) -> Labels:
        model = self.primary or self.fallback
        return model.labels if model else imagenet_labels()

    @property
    def cache_identity(self) -> ModelInfo | None:
        """The primary's identity while it is healthy (only its answers are cached)."""
        if self.primary is None or self.breaker.current_state != pybreaker.STATE_CLOSED:
            return None
        return self.primary.info

    @property
    def breaker_state(self) -> str:
        return BREAKER_STATES[self.breaker.current_state]

    # -- the request path ----------------------------------------------------

    def classify(self, batch: np.ndarray, top_k: int) -> Answer:
        try:
            info, predictions = self.breaker.call(self._call_primary, batch, top_k)
            return Answer(predictions, info, is_fallback=False)
        except pybreaker.CircuitBreakerError as exc:
            primary_failure = f"primary model circuit open ({self.primary_error or exc})"
        except ModelUnavailable as exc:
            primary_failure = exc.message
        if self.fallback is None:
            raise ModelUnavailable(f"no model can answer: {primary_failure}")
        try:
            predictions = self.fallback.predict(batch, top_k)
        except ModelUnavailable as exc:
            raise ModelUnavailable(
                f"no model can answer: {primary_failure}; fallback: {exc.message}"
            ) from exc
        if self.on_fallback:
            self.on_fallback(self.fallback.info.name)
        return Answer(predictions, self.fallback.info, is_fallback=True)

    def _call_primary(
        self, batch: np.ndarray, top_k: int
    ) -> tuple[ModelInfo, list[list[Prediction]]]:
        primary = self.primary
        if primary is None or self.breaker.current_state == pybreaker.STATE_HALF_OPEN:
            # A probe after the cool-down: load the model afresh, so a model file that
            # was missing, corrupt or replaced on disk is picked up without a restart.
            try:
                primary = self._load_primary()
            except ModelUnavailable as exc:
                self.primary_error = exc.message
                raise
            if self.fallback and self.fallback.preprocessing != primary.preprocessing:
                self.fallback = None
                self.fallback_error = "it expects different input than the primary"
            log.warning("primary model %s (re)loaded for a probe", primary.info.name)
            self.primary = primary
        try:
            predictions = primary.predict(batch, top_k)
        except ModelUnavailable as exc:
            self.primary_error = exc.message
            raise
        self.primary_error = None
        return primary.info, predictions
