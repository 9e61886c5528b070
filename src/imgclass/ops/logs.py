"""Logging set-up: one record per line, JSON by default, tagged with the request id.

Log lines carry messages, never request bodies or headers: the service logs error codes,
request ids and exception text, so API keys and image bytes cannot reach the logs through
it (tests/ops/test_logs.py sends both and searches the output). Libraries that log what they
read from an upload are kept at INFO or above whatever our level (``QUIET_LIBRARIES``):
Pillow's TIFF plugin logs every tag's value at DEBUG, i.e. image content. gunicorn's own
lines join the same stream through ``server.ServerLogger``.
"""

from __future__ import annotations

import logging
from typing import TextIO

from flask import g, has_request_context
from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
JSON_FIELDS = ["asctime", "levelname", "name", "request_id", "message"]
# Loggers that would write parts of an upload at DEBUG: never below INFO.
QUIET_LIBRARIES = ("PIL",)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


def setup_logging(level: str = "INFO", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Route every log record to ``stream`` (stderr by default) in the chosen format."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                JSON_FIELDS,
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
