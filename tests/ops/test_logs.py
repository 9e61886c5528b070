"""Logs are JSON lines with the request id, and never contain API keys or image bytes."""

from __future__ import annotations

import io
import json
import logging

import pytest

from imgclass.app import create_app, services
from imgclass.ops.logs import setup_logging
from tests.api.test_predict import post_files

MARKER = b"SECRET-IMAGE-BYTES-7f3a"


@pytest.fixture
def json_logs():
    root = logging.getLogger()
    pil = logging.getLogger("PIL")
    saved = root.handlers[:], root.level, pil.level
    stream = io.StringIO()
    setup_logging("DEBUG", "json", stream)

    def read() -> str:
        text = stream.getvalue()
        stream.seek(0)
        stream.truncate()
        return text

    yield read
    root.handlers[:], level, pil_level = saved
    root.setLevel(level)
    pil.setLevel(pil_level)


def test_logs_are_json_with_request_ids_and_no_secrets(json_logs, settings, cat_jpeg, admin_key):
    read_only = settings.model_copy(
        update={
            "database_url": f"sqlite:///file:{settings.data_dir / 'imgclass.db'}?mode=ro&uri=true"
        }
    )
    broken = create_app(read_only).test_client()
    # A fault of ours (logged with a traceback), a corrupt upload carrying the marker, a bad key.
    post_files(
        broken, [("a.jpg", cat_jpeg + MARKER)], headers={"Authorization": f"Bearer {admin_key}"}
    )
    post_files(broken, [("b.jpg", b"\xff\xd8\xff" + MARKER)])
    post_files(broken, [("c.jpg", cat_jpeg)], headers={"Authorization": "Bearer imgc_" + "x" * 43})
    output = json_logs()
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]  # all JSON
    assert lines, "expected log lines from the failures above"
    assert all({"time", "level", "logger", "request_id", "message"} <= set(r) for r in lines)
    assert any(r["level"] == "ERROR" and len(r["request_id"]) == 32 for r in lines)
    assert admin_key not in output and "x" * 43 not in output
    assert MARKER.decode() not in output
    services(broken.application).engine.dispose()


def test_pillow_never_logs_what_it_reads_from_an_upload(json_logs, client, photos):
    # At DEBUG, Pillow's TIFF plugin logs every tag's value: image content in the logs.
    buf = io.BytesIO()
    photos["chelsea"].save(buf, "TIFF", tiffinfo={270: MARKER.decode()})  # ImageDescription
    assert post_files(client, [("a.tif", buf.getvalue())]).status_code == 200
    output = json_logs()
    assert MARKER.decode() not in output
    assert logging.getLogger("PIL").getEffectiveLevel() >= logging.INFO
