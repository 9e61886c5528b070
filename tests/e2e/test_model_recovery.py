"""A real `imgclass serve` started with no loadable model heals once the files are put back."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from imgclass.vision.classifier import model_path
from imgclass.vision.export import MODEL_NAME
from tests.support.server import environment, free_port, imgclass_command
from tests.support.servers import http_get, post_image

pytestmark = pytest.mark.slow


def wait_for_status(base: str, path: str, status: int, proc, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"imgclass serve exited with {proc.returncode}"
        try:
            if http_get(base + path, timeout=2)[0] == status:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{path} never answered {status}"
        time.sleep(0.2)


def test_a_server_started_with_both_model_files_corrupt_heals_when_they_are_replaced(
    tmp_path, model_dir, cat_jpeg
):
    models = tmp_path / "models"
    models.mkdir()
    files = [model_path(model_dir, MODEL_NAME, p) for p in ("fp32", "int8")]
    for source in files:
        good = source.read_bytes()
        (models / source.name).write_bytes(good[: len(good) // 2])  # an interrupted copy

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = environment(tmp_path / "data", models, port=str(port), workers="1", breaker_reset_s="1")
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen(
            imgclass_command("serve"), env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for_status(base, "/healthz", 200, proc)
        assert http_get(base + "/readyz")[0] == 503
        assert post_image(base, cat_jpeg) == 503

        for source in files:  # the operator copies the good files back; nobody restarts
            shutil.copyfile(source, models / source.name)
        # Only readiness probes until it is ready: they alone must bring the model back.
        wait_for_status(base, "/readyz", 200, proc)
        assert post_image(base, cat_jpeg) == 200
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0, (tmp_path / "serve.log").read_text()
