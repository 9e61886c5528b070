"""Save sample photos (from scikit-image's bundled data) for the README's examples.

Usage: python scripts/make_samples.py DIR  ->  DIR/cat.jpg, DIR/coffee.jpg
"""

import sys
from pathlib import Path

from PIL import Image
from skimage import data

SAMPLES = {"cat.jpg": data.chelsea, "coffee.jpg": data.coffee}


def main(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name, load in SAMPLES.items():
        Image.fromarray(load()).save(target / name, quality=92)
        print(f"wrote {target / name}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "samples"))
