"""AWS Lambda entry point: the same Flask app behind API Gateway (HTTP API or REST API) or an ALB.

Handler name: ``imgclass.lambda_handler.handler`` (install the ``lambda`` extra). apig-wsgi
turns each event into a WSGI request and the app's response into the event reply, so
every route, limit, error and warehouse row is the app's own.

A Lambda instance serves one request at a time, so it is one worker: ONNX Runtime gets
every CPU the function has (Lambda gives CPU in proportion to memory). The app is built
on the first invocation and kept for the instance's life (the cold start loads the model).
Configure it with the usual ``IMGCLASS_*`` variables; see the README's "AWS Lambda".
"""

from __future__ import annotations

import binascii
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from apig_wsgi import make_lambda_handler

from imgclass.app import create_app
from imgclass.config import Settings

log = logging.getLogger(__name__)

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


def make_handler(settings: Settings | None = None) -> LambdaHandler:
    """A Lambda handler serving ``create_app(settings)``."""
    settings = settings or Settings()
    if settings.workers is None:  # one request at a time: all CPUs to the one inference
        settings = settings.model_copy(update={"workers": 1})
    app = create_app(settings)
    wsgi = make_lambda_handler(app, binary_support=True)

    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        try:
            return wsgi(event, context)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            # Not an API Gateway / ALB event (or a broken one): the app never saw it.
            log.warning("unusable event: %s: %s", type(exc).__name__, exc)
            return bad_event(f"not an API Gateway or ALB HTTP event ({type(exc).__name__})")

    handle.app = app  # type: ignore[attr-defined]  # for inspection (tests, debugging)
    return handle


def bad_event(message: str) -> dict[str, Any]:
    request_id = uuid.uuid4().hex
    body = {"error": {"code": "bad_event", "message": message, "request_id": request_id}}
    return {
        "statusCode": 400,
        "headers": {"content-type": "application/json", "x-request-id": request_id},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


_handler: LambdaHandler | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The function's entry point: builds the app once per instance, then serves."""
    global _handler
    if _handler is None:
        _handler = make_handler()
    return _handler(event, context)
