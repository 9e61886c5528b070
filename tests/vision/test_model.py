"""The served ONNX model: it matches the PyTorch original and gets real photos right."""

from __future__ import annotations

import numpy as np
import pytest

from imgclass.vision.images import load_image
from imgclass.vision.preprocess import Preprocessing, to_tensor
from tests.conftest import CAT_CLASSES, ESPRESSO, jpeg_bytes


def tensor_of(photo, prep: Preprocessing) -> np.ndarray:
    decoded = load_image(jpeg_bytes(photo), max_pixels=10**8, min_short_side=prep.resize_short)
    return to_tensor(decoded.image, prep)


def test_preprocessing_travels_with_the_model(classifier):
    prep = classifier.preprocessing
    assert (prep.input_size, prep.resize_short, prep.mean, prep.std) == (224, 256, 127.0, 128.0)
    assert classifier.info.name == "efficientnet-lite0"
    assert classifier.info.version.endswith("+fp32")


def test_tensor_shape_and_range(classifier, photos):
    tensor = tensor_of(photos["chelsea"], classifier.preprocessing)
    assert tensor.shape == (3, 224, 224) and tensor.dtype == np.float32
    assert -1.0 <= tensor.min() < 0 < tensor.max() <= 1.0


@pytest.mark.slow
def test_onnx_matches_pytorch_on_real_photos(classifier, photos):
    torch = pytest.importorskip("torch")
    from imgclass.vision.export import load_torch_model

    batch = np.stack([tensor_of(p, classifier.preprocessing) for p in photos.values()])
    with torch.no_grad():
        reference = load_torch_model()(torch.from_numpy(batch)).numpy()
    ours = classifier.logits(batch)
    assert np.abs(ours - reference).max() < 1e-3
    for a, b in zip(ours, reference, strict=True):
        assert list(np.argsort(-a)[:5]) == list(np.argsort(-b)[:5])


def test_real_photos_get_the_right_class(classifier, photos):
    prep = classifier.preprocessing
    batch = np.stack([tensor_of(photos["chelsea"], prep), tensor_of(photos["coffee"], prep)])
    cat, coffee = classifier.predict(batch, top_k=5)
    assert cat[0].class_id in CAT_CLASSES
    assert coffee[0].class_id == ESPRESSO and coffee[0].label == "espresso"


def test_predictions_are_ordered_probabilities(classifier, photos):
    preds = classifier.predict(
        tensor_of(photos["rocket"], classifier.preprocessing)[None], top_k=20
    )[0]
    scores = [p.score for p in preds]
    assert len(preds) == 20 and scores == sorted(scores, reverse=True)
    assert 0 < sum(scores) <= 1.0 + 1e-5
    assert len({p.class_id for p in preds}) == 20
