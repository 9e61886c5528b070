"""A full TMPDIR does not fail uploads: they are parsed into memory, not spooled to disk.

werkzeug writes file parts over 500 KB to a temporary file; a full /tmp (a pod's small
memory-backed emptyDir) turned such uploads into a 500 from inside the parser.
"""

from __future__ import annotations

import io
import json
import urllib.request
import uuid

import pytest

from tests.support.disk import fill
from tests.support.servers import start_imgclass

pytestmark = pytest.mark.slow


def multipart_predict(base: str, name: str, data: bytes) -> tuple[int, dict]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        base + "/api/v1/predict",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_a_full_tmpdir_does_not_fail_uploads(tmp_path, small_disk, model_dir, photos):
    buf = io.BytesIO()
    photos["coffee"].resize((4032, 3024)).save(buf, "JPEG", quality=95)
    big = buf.getvalue()
    assert len(big) > 600_000  # over werkzeug's 500 KB in-memory threshold
    server = start_imgclass(tmp_path / "run", model_dir, workers=1, env={"TMPDIR": str(small_disk)})
    try:
        server.wait_until("/readyz")
        # The first upload lets the worker settle on TMPDIR as its temporary directory.
        assert multipart_predict(server.base, "first.jpg", big)[0] == 200
        fill(small_disk)
        status, body = multipart_predict(server.base, "second.jpg", big)
        assert status == 200, body
        assert body["results"][0]["predictions"][0]["class_id"] == 967  # espresso
    finally:
        server.stop()
