"""Coverage-guided fuzzing of the upload decoder, ``vision.images.load_image``, with atheris.

    .venv/bin/python scripts/fuzz_images.py                     # 10 minutes
    .venv/bin/python scripts/fuzz_images.py --seconds 3600 --corpus fuzz-corpus/

Every input must end in an image or in one of the documented errors (``BadRequest``,
``ImageRejected``, ``UnsupportedImage``: the 400/415/422 answers); anything else (another
exception, a crash, an input that takes longer than ``--timeout-s``, or a process over
``--rss-mb``) stops the run, leaves the input in ``--artifacts`` as ``crash-*``,
``timeout-*`` or ``oom-*``, and exits non-zero. Replay one with
``python scripts/fuzz_images.py --replay FILE``.

The seed corpus is real images: scikit-image photos saved in every accepted format and in
unusual pixel modes, and every case of the hostile-input corpus (tests/hostile). The
fuzzer itself runs in a child process under ``RLIMIT_AS`` (``--as-mb``), so a decoder that
asked for unbounded memory fails the run instead of the machine. The decode limit is the
server's default ``IMGCLASS_MAX_IMAGE_PIXELS``.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.hostile

MIN_SHORT_SIDE = 256  # what the serving path asks for (the model's resize)


def seed_images() -> dict[str, bytes]:
    """Small real photos in every accepted format and in the pixel modes decoding converts."""
    from PIL import Image
    from skimage import data as skdata

    cat = Image.fromarray(skdata.chelsea()).reduce(4)  # 113x75: cheap to mutate and decode
    coffee = Image.fromarray(skdata.coffee()).reduce(4)
    seeds: dict[str, bytes] = {}

    def save(name: str, img: Image.Image, fmt: str, **kw) -> None:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        seeds[name] = buf.getvalue()

    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"):
        save(f"cat.{fmt.lower()}", cat, fmt)
    save("coffee-progressive.jpg", coffee, "JPEG", progressive=True, quality=70)
    save("coffee-cmyk.jpg", coffee.convert("CMYK"), "JPEG")
    save("coffee-gray.png", coffee.convert("L"), "PNG")
    save("coffee-palette-transparent.png", coffee.convert("P"), "PNG", transparency=0)
    save("coffee-rgba.webp", coffee.convert("RGBA"), "WEBP", lossless=True)
    save("coffee-16bit.png", coffee.convert("I;16"), "PNG")
    save("coffee-float.tiff", coffee.convert("F"), "TIFF")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    save("cat-exif-rotated.jpg", cat, "JPEG", exif=exif.tobytes())
    frames = [cat.convert("P"), coffee.resize(cat.size).convert("P")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    seeds["animated.gif"] = buf.getvalue()
    return seeds


def write_seed_corpus(directory: Path) -> int:
    """Seeds and hostile cases as files in ``directory``; returns how many."""
    from tests.hostile.corpus import build_cases

    directory.mkdir(parents=True, exist_ok=True)
    seeds = seed_images()
    for name, case in build_cases().items():
        seeds["hostile-" + re.sub(r"[^a-z0-9]+", "-", name.lower())] = case.content
    for name, content in seeds.items():
        (directory / name).write_bytes(content)
    return len(seeds)


# -- the fuzzed process --------------------------------------------------------------------


def fuzz_target():
    """The function atheris calls with each input (imports instrumented for coverage)."""
    import atheris

    with atheris.instrument_imports():
        import PIL.BmpImagePlugin
        import PIL.GifImagePlugin
        import PIL.JpegImagePlugin
        import PIL.PngImagePlugin
        import PIL.TiffImagePlugin
        import PIL.WebPImagePlugin  # noqa: F401

        from imgclass.vision import images
    from imgclass.config import Settings
    from imgclass.errors import BadRequest, ImageRejected, UnsupportedImage

    documented = (BadRequest, ImageRejected, UnsupportedImage)
    max_pixels = Settings.model_fields["max_image_pixels"].default

    def one_input(data: bytes) -> None:
        try:
            decoded = images.load_image(data, max_pixels=max_pixels, min_short_side=MIN_SHORT_SIDE)
        except documented:
            return
        # What the serving path relies on when decoding succeeded.
        assert decoded.image.mode == "RGB", decoded.image.mode
        assert decoded.width * decoded.height <= max_pixels
        assert min(decoded.image.size) >= 1

    return one_input


def run_child(libfuzzer_args: list[str]) -> None:
    import atheris

    target = fuzz_target()
    atheris.Setup([sys.argv[0], *libfuzzer_args], target)
    atheris.Fuzz()


def replay(path: Path) -> None:
    """Run one saved input through the target, raising what it raised."""
    fuzz_target()(path.read_bytes())
    print(f"{path}: no error")


# -- the driver ---------------------------------------------------------------------------


def limit_address_space(megabytes: int):
    def apply() -> None:
        limit = megabytes * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def fuzz(
    *,
    seconds: int,
    corpus: Path,
    artifacts: Path,
    timeout_s: int = 10,
    rss_mb: int = 2048,
    as_mb: int = 4096,
    max_len: int = 262_144,
    seed: int | None = None,
) -> subprocess.CompletedProcess:
    """Fuzz for ``seconds``; the child's combined output is in the result's ``stdout``."""
    with tempfile.TemporaryDirectory(prefix="imgclass-fuzz-seeds-") as seeds:
        write_seed_corpus(Path(seeds))
        corpus.mkdir(parents=True, exist_ok=True)
        artifacts.mkdir(parents=True, exist_ok=True)
        args = [
            f"-max_total_time={seconds}",
            f"-timeout={timeout_s}",
            f"-rss_limit_mb={rss_mb}",
            f"-max_len={max_len}",
            f"-artifact_prefix={artifacts}/",
            "-print_final_stats=1",
            *([f"-seed={seed}"] if seed is not None else []),
            str(corpus),  # new inputs are written to the first directory
            seeds,
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        return subprocess.run(
            [sys.executable, __file__, "--child", "--", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            preexec_fn=limit_address_space(as_mb),
            timeout=seconds + 120,
        )


def stats(output: str) -> dict[str, int]:
    """libFuzzer's final statistics (``stat::number_of_executed_units: N``, …)."""
    return {m[0]: int(m[1]) for m in re.findall(r"stat::(\w+):\s+(\d+)", output)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        run_child(argv[2:] if argv[1:2] == ["--"] else argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=600, help="fuzzing time (600)")
    parser.add_argument("--corpus", type=Path, help="keep the grown corpus here (default: temp)")
    parser.add_argument("--artifacts", type=Path, default=Path("fuzz-artifacts"))
    parser.add_argument("--timeout-s", type=int, default=10, help="per input (10)")
    parser.add_argument("--rss-mb", type=int, default=2048, help="libFuzzer's RSS limit (2048)")
    parser.add_argument("--as-mb", type=int, default=4096, help="RLIMIT_AS of the child (4096)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--replay", type=Path, help="run one saved input and exit")
    args = parser.parse_args(argv)
    if args.replay:
        replay(args.replay)
        return 0
    with tempfile.TemporaryDirectory(prefix="imgclass-fuzz-corpus-") as scratch:
        result = fuzz(
            seconds=args.seconds,
            corpus=args.corpus or Path(scratch),
            artifacts=args.artifacts,
            timeout_s=args.timeout_s,
            rss_mb=args.rss_mb,
            as_mb=args.as_mb,
            seed=args.seed,
        )
    print(result.stdout[-4000:])
    found = stats(result.stdout)
    print(
        f"exit {result.returncode}: {found.get('number_of_executed_units', 0):,} inputs, "
        f"peak RSS {found.get('peak_rss_mb', 0)} MB"
    )
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
