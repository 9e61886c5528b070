"""The request body as the server hands it over: a body the client framed badly is a 400.

gunicorn parses a chunked body only while the app reads it, so a bad chunk size or
terminator (``zz\\r\\n…``), or a body that ends before its framing says it does, raises in
the middle of werkzeug's form or JSON parsing: gunicorn's ``ParseException`` or
``NoMoreData``, which werkzeug does not know and which reached the app's last-resort handler
as a 500 ``internal_error`` with a traceback. ``BodyErrors`` wraps the WSGI input stream so
that those errors arrive as ``BadRequest`` (400 ``malformed_body``), a ``ServiceError``: the
predict endpoint records it like any other refused request, and the error handler shapes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from gunicorn.http.errors import NoMoreData, ParseException

from imgclass.errors import BadRequest

# What gunicorn raises while reading a body; other servers (the test client, apig-wsgi) give
# the app a buffer that cannot be malformed.
_FRAMING_ERRORS = (ParseException, NoMoreData)


def malformed(exc: Exception) -> BadRequest:
    reason = str(exc)[:120]
    return BadRequest(
        f"the request body could not be read: its framing is malformed or it ended early "
        f"({reason}); send a complete body with a valid Content-Length or chunked encoding",
        code="malformed_body",
    )


class _GuardedInput:
    """A WSGI input stream whose framing errors are ``BadRequest``."""

    def __init__(self, stream):
        self._stream = stream

    def read(self, *args) -> bytes:
        try:
            return self._stream.read(*args)
        except _FRAMING_ERRORS as exc:
            raise malformed(exc) from exc

    def readline(self, *args) -> bytes:
        try:
            return self._stream.readline(*args)
        except _FRAMING_ERRORS as exc:
            raise malformed(exc) from exc

    def readlines(self, *args) -> list[bytes]:
        try:
            return self._stream.readlines(*args)
        except _FRAMING_ERRORS as exc:
            raise malformed(exc) from exc

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class BodyErrors:
    """WSGI middleware: the app reads its body through ``_GuardedInput``."""

    def __init__(self, wsgi_app: Callable):
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        stream = environ.get("wsgi.input")
        if stream is not None:
            environ["wsgi.input"] = _GuardedInput(stream)
        return self.wsgi_app(environ, start_response)
