"""The classifier runtime: a small protocol and its ONNX Runtime implementation.

A model file is self-describing: the exporter writes its name, version and
preprocessing into the ONNX metadata, and ``OnnxClassifier`` reads them back,
so the service never guesses how to feed a model it loaded.
"""

from __future__ import annotations

import hashlib
import threading
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


class OnnxClassifier:
    """An exported model on ONNX Runtime (CPU), built once per process."""

    def __init__(self, path: Path, *, threads: int = 1, labels: Labels | None = None):
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
        try:
            with self._run_lock:
                return self._session.run(None, {self._input: batch})[0]
        except Exception as exc:
            raise ModelUnavailable(f"inference failed: {exc}") from exc

    def predict(self, batch: np.ndarray, top_k: int) -> list[list[Prediction]]:
        return top_k_predictions(self.logits(batch), top_k, self.labels)
