"""atheris on the upload decoder (``vision.images.load_image``): only documented errors,
bounded time per input and bounded memory, from a seed corpus of real images.

A short run (``IMGCLASS_FUZZ_SECONDS``, 20 s) in CI; ``scripts/fuzz_images.py`` runs longer.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from imgclass.errors import BadRequest, ImageRejected

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fuzz_images.py"
FUZZ_SECONDS = int(os.environ.get("IMGCLASS_FUZZ_SECONDS", "20"))


def _harness():
    spec = importlib.util.spec_from_file_location("fuzz_images", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fuzz_images = _harness()


def test_the_seed_corpus_is_real_images_of_every_format(tmp_path):
    from PIL import Image

    from imgclass.vision.images import load_image

    count = fuzz_images.write_seed_corpus(tmp_path)
    files = sorted(tmp_path.iterdir())
    assert count == len(files) >= 40
    formats, refused = set(), 0
    for path in files:
        try:
            formats.add(load_image(path.read_bytes(), max_pixels=50_000_000).format)
        except (BadRequest, ImageRejected):
            refused += 1  # the hostile cases
    assert formats == {"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"}
    assert refused >= 15
    assert Image.open(tmp_path / "coffee-16bit.png").mode.startswith("I")


def test_the_decoder_raises_only_documented_errors(tmp_path):
    artifacts = tmp_path / "artifacts"
    result = fuzz_images.fuzz(
        seconds=FUZZ_SECONDS, corpus=tmp_path / "corpus", artifacts=artifacts, seed=7
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert list(artifacts.iterdir()) == []
    stats = fuzz_images.stats(result.stdout)
    assert stats["number_of_executed_units"] >= 20 * FUZZ_SECONDS, stats  # it really fuzzed
    assert stats["new_units_added"] > 0, stats  # and found new paths through the decoders
    assert stats["peak_rss_mb"] < 2048, stats


def test_a_run_over_the_memory_bound_fails(tmp_path):
    # The interpreter with Pillow and numpy alone is over 40 MB: the first input trips the
    # bound, which shows that the limit the real run passes is enforced.
    artifacts = tmp_path / "artifacts"
    result = fuzz_images.fuzz(
        seconds=10, corpus=tmp_path / "corpus", artifacts=artifacts, rss_mb=40, seed=7
    )
    assert result.returncode != 0
    assert "out-of-memory" in result.stdout
