"""Regenerate docs/screenshots/upload.png and dashboard.png from a real server with demo data.

    .venv/bin/python scripts/screenshots.py [--events 40000] [--days 30]   (or `make screenshots`)

Starts ``imgclass serve`` on a free port with a throwaway data directory, fills the
warehouse with ``imgclass demo seed``, classifies scikit-image's cat photo on the upload
page, signs in to the dashboard with the generated admin key, and saves both pages as
seen by Debian's headless Chromium.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.support

from PIL import Image  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
from skimage import data as skdata  # noqa: E402

from tests.support.browser import launch  # noqa: E402
from tests.support.server import environment, imgclass_command, serve  # noqa: E402

OUT = REPO / "docs" / "screenshots"


def cat_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(skdata.chelsea()).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("chromium is not installed: apt-get install chromium")
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = REPO / "models"

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        with serve(data_dir, model_dir) as base, sync_playwright() as pw:
            subprocess.run(
                imgclass_command(
                    "demo", "seed", "--events", str(args.events), "--days", str(args.days)
                ),
                env=environment(data_dir, model_dir),
                check=True,
            )
            admin_key = (data_dir / "admin-token").read_text().strip()
            browser = launch(pw, chromium)

            page = browser.new_page(viewport={"width": 1280, "height": 640})
            page.goto(base + "/")
            page.set_input_files(
                "#file",
                files=[{"name": "chelsea.jpg", "mimeType": "image/jpeg", "buffer": cat_jpeg()}],
            )
            page.wait_for_selector("#predictions li")
            page.wait_for_timeout(800)  # let the bars finish growing
            page.screenshot(path=args.out / "upload.png")

            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(base + "/dashboard")
            page.fill("#admin-key", admin_key)
            page.click("#login-form button[type=submit]")
            page.wait_for_selector("#board[data-state=ready]")
            page.wait_for_timeout(1200)  # chart animations
            page.screenshot(path=args.out / "dashboard.png", full_page=True)
            browser.close()
    for name in ("upload.png", "dashboard.png"):
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
