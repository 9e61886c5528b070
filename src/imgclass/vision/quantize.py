"""Static int8 quantization of the exported fp32 model (export time only).

Calibrated on photos that ship with scikit-image plus augmented crops of them
(random scale, aspect and mirror), never on the photos ``held_out_tensors``
uses to measure agreement with fp32. QOperator format with per-channel
weights: on CPUs with VNNI, ONNX Runtime then runs whole QLinearConv kernels
instead of quantize/dequantize pairs around fp32 ones.

The export is tuned to the CPU it runs on (``make install`` exports on the serving
machine). Without VNNI, ONNX Runtime's u8×s8 kernels accumulate pairs of products
in saturating 16-bit lanes, and full 8-bit weights overflow them: on an AVX2-only
AMD EPYC, top-1 agreement with fp32 fell to 85% (96% when the same model is
simulated in float). Weights quantized to 7 bits (``reduce_range``, ONNX Runtime's
advice for such CPUs) brought it back to 93%. With VNNI the full range is kept.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from imgclass.vision.preprocess import Preprocessing, to_tensor

# Disjoint sets of scikit-image photos: one to calibrate, one to check agreement.
CALIBRATION_PHOTOS = (
    "astronaut",
    "camera",
    "brick",
    "grass",
    "gravel",
    "coins",
    "clock",
    "moon",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
    "page",
    "text",
    "cell",
)
HELD_OUT_PHOTOS = ("chelsea", "coffee", "rocket", "stereo_motorcycle")
VNNI_FLAGS = {"avx512_vnni", "avx_vnni"}


def cpu_has_vnni(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU has VNNI dot products (False where it cannot tell: the safe side)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return bool(VNNI_FLAGS & set(flags.split()))


def skimage_photo(name: str) -> Image.Image:
    from skimage import data

    array = getattr(data, name)()
    if isinstance(array, tuple):  # stereo pairs: take the left view
        array = array[0]
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    return Image.fromarray(array).convert("RGB")


def augmented_crops(
    photo: Image.Image, count: int, rng: np.random.Generator
) -> Iterator[Image.Image]:
    """The photo, then ``count - 1`` random crops (10-100% area, 3:4..4:3, half mirrored)."""
    yield photo
    width, height = photo.size
    for _ in range(count - 1):
        area = width * height * rng.uniform(0.1, 1.0)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        w = int(min(width, max(16, round(np.sqrt(area * aspect)))))
        h = int(min(height, max(16, round(np.sqrt(area / aspect)))))
        left = int(rng.integers(0, width - w + 1))
        top = int(rng.integers(0, height - h + 1))
        crop = photo.crop((left, top, left + w, top + h))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        yield crop


def tensors(
    photos: tuple[str, ...], per_photo: int, prep: Preprocessing, seed: int
) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for name in photos:
        for crop in augmented_crops(skimage_photo(name), per_photo, rng):
            out.append(to_tensor(crop, prep)[np.newaxis])
    return out


def calibration_tensors(prep: Preprocessing, per_photo: int = 12) -> list[np.ndarray]:
    return tensors(CALIBRATION_PHOTOS, per_photo, prep, seed=1)


def held_out_tensors(prep: Preprocessing, per_photo: int = 25) -> list[np.ndarray]:
    return tensors(HELD_OUT_PHOTOS, per_photo, prep, seed=2)


def depthwise_conv_names(path: Path) -> list[str]:
    """Names of the grouped (depthwise) convolutions of an ONNX graph."""
    import onnx

    names = []
    for node in onnx.load(str(path)).graph.node:
        if node.op_type == "Conv":
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if group > 1:
                names.append(node.name)
    return names


def quantize_int8(
    fp32_path: Path, target: Path, prep: Preprocessing, *, keep_fp32: list[str] | None = None
) -> None:
    """Write a statically quantized copy of ``fp32_path`` to ``target``.

    ``keep_fp32``: node names left unquantized (bench/int8_profile.py experiments).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, batches: list[np.ndarray]):
            self._batches = iter(batches)

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {"input": batch}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(target),
                Reader(calibration_tensors(prep)),
                quant_format=QuantFormat.QOperator,
                per_channel=True,
                reduce_range=not cpu_has_vnni(),
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                # Clipping the top 0.001% of activations keeps rare outliers from
                # stretching the int8 range (96% top-1 agreement on held-out photos,
                # against 93% for plain min/max: docs/PERFORMANCE.md).
                calibrate_method=CalibrationMethod.Percentile,
                extra_options={"CalibPercentile": 99.999},
                nodes_to_exclude=keep_fp32 or [],
            )
