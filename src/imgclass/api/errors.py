"""Request ids and the one JSON error shape: ``{"error": {"code", "message", "request_id"}}``."""

from __future__ import annotations

import logging
import re
import uuid

from flask import Flask, g, jsonify, request
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from imgclass.errors import ServiceError, StorageUnavailable

UNAVAILABLE_RETRY_AFTER_S = "5"  # on every 503: a transient fault, soon worth retrying

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def new_request_id() -> str:
    return uuid.uuid4().hex


def error_response(status: int, code: str, message: str):
    body = {"error": {"code": code, "message": message, "request_id": g.get("request_id")}}
    return jsonify(body), status


def _http_code(exc: HTTPException) -> str:
    name = (exc.name or "error").lower()
    return re.sub(r"[^a-z0-9]+", "_", name).strip("_")


def database_unreachable(exc: SQLAlchemyError) -> bool:
    """Whether ``exc`` says the database cannot be used right now (rather than a bug of ours).

    The server is down or restarting, a connection was cut, the pool has no free connection,
    SQLite's file is locked or its disk full: the client should retry, as it does after any
    other ``storage_unavailable``. Anything else (a constraint, a syntax error) stays a 500.
    """
    if isinstance(exc, OperationalError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _too_large(app: Flask) -> str:
    """Which limit a 413 met: the body's size, or werkzeug's bounds on a form's parts.

    werkzeug raises the same ``RequestEntityTooLarge`` for both; a body within the size limit
    (its Content-Length, or a chunked body read without reaching the limit) met the form's.
    """
    limit = app.config.get("MAX_CONTENT_LENGTH")
    length = request.content_length
    over = length is not None and limit is not None and length > limit
    if not over and length is None:
        stream = request.__dict__.get("stream")  # only if werkzeug made it; never make it here
        over = stream is None or getattr(stream, "is_exhausted", True)
    if over or request.mimetype != "multipart/form-data":
        return f"the request body exceeds the limit of {limit:,} bytes"
    return (
        f"the form has more than {app.config['MAX_FORM_PARTS']:,} parts, or a field that is not "
        f"a file is over {app.config['MAX_FORM_MEMORY_SIZE']:,} bytes; send images as files in "
        "field 'image'"
    )


def register(app: Flask) -> None:
    @app.before_request
    def _assign_request_id():
        # Keep a well-formed id from a proxy or client so logs line up end to end;
        # anything else is replaced, never echoed.
        supplied = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = supplied if _CLIENT_REQUEST_ID.match(supplied) else new_request_id()

    @app.after_request
    def _tag_response(response):
        response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
        return response

    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError):
        if exc.status >= 500:
            log.warning("%s: %s", exc.code, exc.message)
        response = error_response(exc.status, exc.code, exc.message)
        if exc.status == 503:
            response[0].headers["Retry-After"] = UNAVAILABLE_RETRY_AFTER_S
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if exc.code == 413:
            return error_response(413, "payload_too_large", _too_large(app))
        response, status = error_response(
            exc.code or 500, _http_code(exc), exc.description or exc.name
        )
        # Keep the headers the status requires, e.g. Allow on a 405 (RFC 9110 15.5.6).
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response, status

    @app.errorhandler(SQLAlchemyError)
    def _database_error(exc: SQLAlchemyError):
        # Reads outside the recorder (the key lookup of every authenticated request, the
        # analytics) meet an unreachable database too: a 503 the client retries, not a 500.
        if not database_unreachable(exc):
            return _unexpected(exc)
        reason = getattr(exc, "orig", None) or exc
        log.warning("database unavailable: %s", str(reason).splitlines()[0][:200])
        return _service_error(
            StorageUnavailable(
                "the database is unavailable, so the request was not processed; retry later"
            )
        )

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(
            500,
            "internal_error",
            "an internal error occurred; quote the request id when reporting it",
        )
