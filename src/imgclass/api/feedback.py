"""``POST /api/v1/feedback``: confirm or correct the prediction of a request (ground truth).

Body (JSON, at most ``MAX_BODY_BYTES``)::

    {"request_id": "<a predict response's request_id>",
     "class_id": 281            # or "label": "tabby" / "tabby, tabby cat" / "Egyptian_cat"
                                #     (the analytics' class label) / "n02123045"
     "filename": "cat.jpg"      # optional: which image, when the request had several
     "index": 0}                # optional, instead of filename: its position in "results"

Same authentication as predict: anonymous unless ``IMGCLASS_REQUIRE_AUTH``. A caller reaches
only their own requests (an admin any): a keyed user those sent with their key, an anonymous
caller anonymous ones; another caller's request is a 404 like an unknown id.
201 for new feedback, 200 when it replaced earlier feedback for that image.
"""

from __future__ import annotations

import json
import re

from flask import Blueprint, current_app, jsonify, request

from imgclass.app import services
from imgclass.errors import BadRequest, ServiceError
from imgclass.ops.auth import authenticate
from imgclass.ops.feedback import FeedbackRequest
from imgclass.warehouse.schema import ANONYMOUS_USER_ID

bp = Blueprint("feedback", __name__, url_prefix="/api/v1")

MAX_BODY_BYTES = 4096
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
FIELDS = ("request_id", "class_id", "label", "filename", "index")
MAX_LABEL = 200
MAX_FILENAME = 255


def _invalid(message: str) -> BadRequest:
    return BadRequest(message, code="invalid_parameter")


def _is_int(value) -> bool:
    # JSON has one number type: 281.0 is the integer 281 (as JSON Schema's "integer" says).
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, int) and not isinstance(value, bool)


def read_json_object(limit: int = MAX_BODY_BYTES) -> dict:
    """The request body as a JSON object, refusing anything else with a clear 4xx."""
    if not request.is_json:
        raise ServiceError(
            f"send a JSON body with Content-Type: application/json "
            f"(got {request.mimetype or 'no content type'!r})",
            code="unsupported_media_type",
            status=415,
        )
    if request.content_length is not None and request.content_length > limit:
        raise ServiceError(
            f"the JSON body is {request.content_length:,} bytes; at most {limit:,} are accepted",
            code="payload_too_large",
            status=413,
        )
    raw = request.stream.read(limit + 1)  # bounded even without a Content-Length
    if len(raw) > limit:
        raise ServiceError(
            f"the JSON body exceeds {limit:,} bytes", code="payload_too_large", status=413
        )
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        message = f"the body is not valid JSON: {str(exc)[:100]}"
        raise BadRequest(message, code="invalid_json") from exc
    if not isinstance(body, dict):
        raise BadRequest("the JSON body must be an object", code="invalid_json")
    return body


def parse_feedback(body: dict) -> FeedbackRequest:
    unknown = [key for key in body if key not in FIELDS]
    if unknown:
        names = ", ".join(repr(str(k)[:40]) for k in unknown[:5])
        raise _invalid(f"unknown field(s) {names}; accepted: {', '.join(FIELDS)}")
    request_id = body.get("request_id")
    if request_id is None:
        raise _invalid(
            "request_id is required: the request_id string of a predict response "
            "(1-64 letters, digits, '.', '_' or '-')"
        )
    if not isinstance(request_id, str):
        raise _invalid(
            "request_id must be a string: the request_id of a predict response "
            "(1-64 letters, digits, '.', '_' or '-')"
        )
    if not REQUEST_ID.match(request_id):
        raise _invalid(
            f"request_id {request_id[:80]!r} is malformed: a predict response's request_id "
            "is 1-64 letters, digits, '.', '_' or '-'"
        )
    class_id, label = body.get("class_id"), body.get("label")
    if (class_id is None) == (label is None):
        raise _invalid("send exactly one of class_id (an ImageNet index) and label")
    if class_id is not None and not _is_int(class_id):
        raise _invalid("class_id must be an integer ImageNet index (0-999)")
    class_id = None if class_id is None else int(class_id)
    if label is not None and (not isinstance(label, str) or not 0 < len(label) <= MAX_LABEL):
        raise _invalid(
            f"label must be a non-empty string of at most {MAX_LABEL} characters: "
            "an ImageNet name or a WordNet id"
        )
    filename, index = body.get("filename"), body.get("index")
    if filename is not None and index is not None:
        raise _invalid("send at most one of filename and index")
    if filename is not None and (
        not isinstance(filename, str) or not 0 < len(filename) <= MAX_FILENAME
    ):
        raise _invalid(f"filename must be a non-empty string of at most {MAX_FILENAME} characters")
    if index is not None and (not _is_int(index) or index < 0):
        raise _invalid("index must be a non-negative integer (0 = the first result)")
    index = None if index is None else int(index)
    return FeedbackRequest(request_id, class_id, label, filename, index)


def _class_json(cls) -> dict:
    return {"class_id": cls.class_id, "label": cls.class_name, "wnid": cls.wnid}


@bp.post("/feedback")
def feedback():
    """Confirm or correct a prediction.
    ---
    post:
      summary: Ground truth for a predicted image, by the predict response's request id
      description: >-
        Names the request by the `request_id` of its predict response, and the true class
        by `class_id` or `label` (an ImageNet name, a class label as the analytics write it
        such as `Egyptian_cat`, or a WordNet id). Only the caller's own requests are found:
        those sent with the same API key, or anonymous ones for an anonymous caller; an admin
        key reaches every request. Another caller's request is `404 unknown_request`, as an
        id nobody used.
      tags: [monitoring]
      security: [{}, {apiKey: []}]
      requestBody:
        required: true
        content:
          application/json:
            schema: FeedbackRequest
      responses:
        "201":
          description: stored
          content:
            application/json:
              schema: FeedbackResponse
        "200":
          description: stored, replacing an earlier feedback for the same image
          content:
            application/json:
              schema: FeedbackResponse
        "400":
          $ref: "#/components/responses/BadRequest"
        "401":
          $ref: "#/components/responses/Unauthorized"
        "404":
          $ref: "#/components/responses/NotFound"
        "409":
          $ref: "#/components/responses/Conflict"
        "413":
          $ref: "#/components/responses/PayloadTooLarge"
        "415":
          $ref: "#/components/responses/UnsupportedMediaType"
        "422":
          $ref: "#/components/responses/Unprocessable"
    """
    svc = services(current_app)
    account = authenticate(
        svc.users, request.headers.get("Authorization"), required=svc.settings.require_auth
    )
    req = parse_feedback(read_json_object())
    outcome = svc.feedback.submit(
        req,
        account.user_id if account else ANONYMOUS_USER_ID,
        is_admin=bool(account and account.is_admin),
    )
    body = {
        "request_id": outcome.request_id,
        "index": outcome.index,
        "filename": outcome.filename,
        "model": {"name": outcome.model_name, "version": outcome.model_version},
        "predicted": _class_json(outcome.predicted),
        "true_class": _class_json(outcome.true_class),
        "is_correct": outcome.is_correct,
        "replaced": outcome.replaced,
    }
    return jsonify(body), 200 if outcome.replaced else 201
