"""TorchServe's stock ``image_classifier`` handler, without its torchvision and captum imports.

The stock handler (ts/torch_handler/image_classifier.py on top of vision_handler.py)
cannot be imported here: it needs torchvision, and PyPI's torchvision wheel for Linux
is a CUDA build that fails to import next to the CPU torch 2.13.0 this project pins
("operator torchvision::nms does not exist"); vision_handler.py also imports captum
for explanations. This handler subclasses TorchServe's BaseHandler (model loading,
label mapping, request loop untouched) and does the stock handler's work with Pillow
and torch:

- request: the image is the raw body or the multipart field ``data`` (VisionHandler);
- transforms.Resize(256): short side to 256, long side truncated, bilinear (PIL);
- transforms.CenterCrop(224), ToTensor (x / 255), and Normalize with the ImageNet
  mean/std, exactly as the stock handler (imgclass uses (x - 127) / 128 instead);
- softmax and top 5, mapped through index_to_name.json (ImageClassifier).

It runs on whatever intra-op thread count torch picks (OMP_NUM_THREADS in the
environment); the thread count is logged once so a benchmark can confirm it.
"""

import io
import logging

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from ts.torch_handler.base_handler import BaseHandler
from ts.utils.util import map_class_to_label

logger = logging.getLogger(__name__)

RESIZE = 256
CROP = 224
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def image_processing(image: Image.Image) -> torch.Tensor:
    """What the stock handler's torchvision Compose does to a PIL image."""
    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_long = int(RESIZE * long / short)  # torchvision truncates, too
    size = (RESIZE, new_long) if width <= height else (new_long, RESIZE)
    image = image.resize(size, Image.Resampling.BILINEAR)
    width, height = image.size
    left = round((width - CROP) / 2.0)  # torchvision: int(round(...)), the same
    top = round((height - CROP) / 2.0)
    image = image.crop((left, top, left + CROP, top + CROP))
    array = np.array(image, dtype=np.uint8).reshape(CROP, CROP, len(image.getbands()))
    tensor = torch.from_numpy(array).permute(2, 0, 1).float().div(255)
    return (tensor - MEAN) / STD


class ImageClassifier(BaseHandler):
    topk = 5

    def initialize(self, context):
        super().initialize(context)
        logger.info("torch intra-op threads: %d", torch.get_num_threads())

    def preprocess(self, data):
        images = []
        for row in data:
            image = row.get("data") or row.get("body")
            images.append(image_processing(Image.open(io.BytesIO(image))))
        return torch.stack(images).to(self.device)

    def postprocess(self, data):
        probs, classes = torch.topk(F.softmax(data, dim=1), self.topk, dim=1)
        return map_class_to_label(probs.tolist(), self.mapping, classes.tolist())
