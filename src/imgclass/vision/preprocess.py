"""Turn an RGB image into the model's input tensor (resize, center-crop, normalise).

The EfficientNet-Lite weights we serve were trained in TensorFlow with pixels
scaled as (x - 127) / 128; bench/preprocessing_eval.py measures that against the
ImageNet mean/std and docs/ARCHITECTURE.md records why we chose it. The
parameters travel inside the exported ONNX file, so model and preprocessing
cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Preprocessing:
    input_size: int = 224  # the square crop the network sees
    resize_short: int = 256  # short side before the center crop (224 / 0.875)
    mean: float = 127.0
    std: float = 128.0


def to_tensor(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    """RGB image -> float32 array (3, input_size, input_size).

    The resize and the center crop are one Pillow call: the crop box is mapped
    back to source coordinates, so only the pixels that survive are resampled.
    """
    width, height = image.size
    scale = prep.resize_short / min(width, height)
    crop = prep.input_size / scale  # crop side in source pixels
    left = (width - crop) / 2
    top = (height - crop) / 2
    size = (prep.input_size, prep.input_size)
    resized = image.resize(
        size, Image.Resampling.BILINEAR, box=(left, top, left + crop, top + crop)
    )
    arr = np.asarray(resized, dtype=np.float32)  # HWC, a fresh float32 array
    arr -= prep.mean
    arr *= 1.0 / prep.std
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


# ITU-R BT.601 luma weights, the same as Pillow's RGB -> "L" conversion.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def brightness(tensor: np.ndarray, prep: Preprocessing) -> float:
    """Mean luma (0-255) of the crop the model saw, recovered from its input tensor.

    Used for input drift; computing it from the tensor costs three means and
    no second pass over the decoded image.
    """
    channel_means = tensor.reshape(3, -1).mean(axis=1) * prep.std + prep.mean
    return float(np.clip(channel_means @ _LUMA, 0.0, 255.0))
