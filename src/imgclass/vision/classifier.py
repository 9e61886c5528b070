"""The classifier runtime: a small protocol and its ONNX Runtime implementation.

A model file is self-describing: the exporter writes its name, version and
preprocessing into the ONNX metadata, and ``OnnxClassifier`` reads them back,
so the service never guesses how to feed a model it loaded.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from imgclass.errors import ModelUnavailable
from imgclass.vision.labels import Labels, imagenet_labels
from imgclass.vision.preprocess import Preprocessing

META_PREFIX = "imgclass."


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    precision: str
    input_size: int
    runtime: str
    sha256: str
    path: str


@dataclass(frozen=True)
class Prediction:
    class_id: int
    label: str
    score: float


class Classifier(Protocol):
    info: ModelInfo
    preprocessing: Preprocessing
    labels: Labels

    def predict(self, batch: np.ndarray, top_k: int) -> list[list[Prediction]]:
        """batch: float32 (N, 3, H, W) -> for each image its top_k predictions, best first."""
        ...


def model_path(model_dir: Path, name: str, precision: str) -> Path:
    return model_dir / f"{name}-{precision}.onnx"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def top_k_predictions(logits: np.ndarray, top_k: int, labels: Labels) -> list[list[Prediction]]:
    """Softmax over each row of logits and keep the top_k classes, best first."""
    logits = logits.astype(np.float32, copy=False)
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    k = min(top_k, probs.shape[1])
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    results = []
    for row, idx in zip(probs, top, strict=True):
        ordered = idx[np.argsort(-row[idx], kind="stable")]
        results.append(
            [Prediction(int(i), labels.names[int(i)], float(row[int(i)])) for i in ordered]
        )
    return results


class _Watchdog:
    """Stops an ONNX Runtime run that overruns its deadline.

    One daemon thread per classifier, armed around each run (runs are serialised
    by the classifier's lock, so one slot is enough). Setting
    ``RunOptions.terminate`` makes ONNX Runtime abandon the run at the next
    node and raise; a timer thread per run would cost a thread start per image.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._options: ort.RunOptions | None = None
        self._deadline = 0.0
        self._thread: threading.Thread | None = None

    def arm(self, options: ort.RunOptions, timeout_s: float) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="onnx-watchdog", daemon=True
                )
                self._thread.start()
            self._options = options
            self._deadline = time.monotonic() + timeout_s
            self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._options = None

    def _watch(self) -> None:
        with self._cond:
            while True:
                if self._options is None:
                    self._cond.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    self._options.terminate = True
                    self._options = None
                else:
                    self._cond.wait(remaining)


class OnnxClassifier:
    """An exported model on ONNX Runtime (CPU), built once per process.

    ``timeout_s``: abandon an inference that runs longer (ModelUnavailable), so
    a stuck model fails over instead of holding the request.
    """

    def __init__(
        self,
        path: Path,
        *,
        threads: int = 1,
        labels: Labels | None = None,
        timeout_s: float | None = None,
    ):
        if not path.is_file():
            raise ModelUnavailable(
                f"model file {path} is missing; run `imgclass model export` (or `make install`)"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # One process per core (gunicorn workers) with one inference thread
        # each: more threads than cores only makes them fight.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelUnavailable(f"model file {path} could not be loaded: {exc}") from exc
        # One inference at a time per process: the session is sized to its share of the
        # cores, and gunicorn's threads running it at once would oversubscribe them
        # (measured: docs/PERFORMANCE.md). Other threads keep decoding meanwhile.
        self._run_lock = threading.Lock()
        self.timeout_s = timeout_s
        self._watchdog = _Watchdog()
        meta = self._session.get_modelmeta().custom_metadata_map
        self._input = self._session.get_inputs()[0].name
        self.labels = labels or imagenet_labels()
        self.preprocessing = Preprocessing(
            input_size=int(meta.get(META_PREFIX + "input_size", 224)),
            resize_short=int(meta.get(META_PREFIX + "resize_short", 256)),
            mean=float(meta.get(META_PREFIX + "mean", 127.0)),
            std=float(meta.get(META_PREFIX + "std", 128.0)),
        )
        self.info = ModelInfo(
            name=meta.get(META_PREFIX + "name", path.stem),
            version=meta.get(META_PREFIX + "version", "unknown"),
            precision=meta.get(META_PREFIX + "precision", "fp32"),
            input_size=self.preprocessing.input_size,
            runtime=f"onnxruntime {ort.__version__}",
            sha256=file_sha256(path),
            path=str(path),
        )

    def logits(self, batch: np.ndarray) -> np.ndarray:
        timeout = self.timeout_s
        try:
            with self._run_lock:
                if not timeout:
                    return self._session.run(None, {self._input: batch})[0]
                options = ort.RunOptions()
                self._watchdog.arm(options, timeout)
                try:
                    return self._session.run(None, {self._input: batch}, options)[0]
                finally:
                    self._watchdog.disarm()
        except Exception as exc:
            if timeout and "terminate" in str(exc):
                raise ModelUnavailable(
                    f"inference took longer than {timeout:g} s and was stopped"
                ) from exc
            raise ModelUnavailable(f"inference failed: {exc}") from exc

    def predict(self, batch: np.ndarray, top_k: int) -> list[list[Prediction]]:
        return top_k_predictions(self.logits(batch), top_k, self.labels)
