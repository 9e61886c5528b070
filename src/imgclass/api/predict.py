"""``POST /api/v1/predict``: one or more images in, top-k ImageNet classes out.

Accepts multipart form data (field ``image``, repeatable) or a raw body with an
``image/*`` content type (``?filename=`` names it). Every request, successful
or not, becomes fact rows in the warehouse before the response is sent.
"""

from __future__ import annotations

import time
import unicodedata

from flask import Blueprint, current_app, g, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from imgclass.app import services
from imgclass.errors import BadRequest, ServiceError
from imgclass.ops import metrics
from imgclass.ops.auth import ANONYMOUS, authenticate
from imgclass.service import RequestContext, Upload
from imgclass.warehouse.recorder import Requester, utc_now
from imgclass.warehouse.schema import ANONYMOUS_USER_ID

bp = Blueprint("predict", __name__, url_prefix="/api/v1")

FIELD = "image"
MAX_TOP_K = 20
RAW_BODY_NAME = "upload"


@bp.post("/predict")
def predict():
    """Classify one or more images.
    ---
    post:
      summary: Classify images (top-k ImageNet classes)
      description: >-
        Multipart form data with one or more files in field `image`, or one image as the raw
        body with an `image/*` content type. Every request, successful or not, is recorded in
        the warehouse before the answer is sent; several files succeed or fail together.
        Anonymous requests are allowed unless the server requires a key.
      tags: [predict]
      security: [{}, {apiKey: []}]
      parameters:
        - name: top_k
          in: query
          description: how many classes per image
          schema: {type: integer, minimum: 1, maximum: 20, default: 5}
        - name: filename
          in: query
          description: >-
            the name recorded for a raw-body image (control characters dropped, cut to 255
            characters)
          schema: {type: string}
      requestBody:
        required: true
        content:
          multipart/form-data:
            schema: PredictForm
          image/*:
            schema: {type: string, format: binary, minLength: 1}
      responses:
        "200":
          description: one result per file, in order
          content:
            application/json:
              schema: PredictResponse
        "400":
          $ref: "#/components/responses/BadRequest"
        "401":
          $ref: "#/components/responses/Unauthorized"
        "413":
          $ref: "#/components/responses/PayloadTooLarge"
        "415":
          $ref: "#/components/responses/UnsupportedMediaType"
        "422":
          $ref: "#/components/responses/Unprocessable"
        "503":
          $ref: "#/components/responses/Unavailable"
    """
    svc = services(current_app)
    settings = svc.settings
    ctx = RequestContext(
        request_id=g.request_id,
        received_at=utc_now(),
        requester=_anonymous(),
        started=time.perf_counter(),
    )
    try:
        account = authenticate(
            svc.users, request.headers.get("Authorization"), required=settings.require_auth
        )
        if account is not None:
            ctx = RequestContext(
                ctx.request_id,
                ctx.received_at,
                _requester(account.user_id, account.username),
                ctx.started,
            )
        top_k = parse_top_k(request.args.get("top_k"), settings.default_top_k)
        uploads = read_uploads(settings.max_files_per_request)
    except RequestEntityTooLarge:
        svc.predictor.record_failure(ctx, 413, "payload_too_large")
        raise
    except ServiceError as exc:
        svc.predictor.record_failure(ctx, exc.status, exc.code)
        raise

    with metrics.images_in_flight(len(uploads)):
        results = svc.predictor.predict(ctx, uploads, top_k)
    # The request's model: whoever answered the images that were not cached.
    answered = next((r for r in results if not r.cached), results[0])
    return jsonify(
        request_id=ctx.request_id,
        model=_model_json(answered.model, answered.is_fallback),
        results=[
            {
                "filename": r.filename,
                "predictions": [
                    {"class_id": p.class_id, "label": p.label, "score": round(p.score, 6)}
                    for p in r.predictions
                ],
                "time_ms": round(r.time_ms, 3),
                "cached": r.cached,
                "model": _model_json(r.model, r.is_fallback),
            }
            for r in results
        ],
    )


def _model_json(info, is_fallback: bool) -> dict:
    return {"name": info.name, "version": info.version, "fallback": is_fallback}


def parse_top_k(raw: str | None, default: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_TOP_K:
        raise BadRequest(
            f"top_k must be an integer from 1 to {MAX_TOP_K}, got {raw[:20]!r}",
            code="invalid_parameter",
        )
    return value


def read_uploads(max_files: int) -> list[Upload]:
    """The uploaded images, in order; raises BadRequest when there are none or too many."""
    mimetype = request.mimetype or ""
    if mimetype == "multipart/form-data":
        files = request.files.getlist(FIELD)
        if not files:
            others = sorted(request.files.keys())
            hint = f" (found fields: {', '.join(map(repr, others[:5]))})" if others else ""
            raise BadRequest(f"no file in form field {FIELD!r}{hint}", code="no_image")
        if len(files) > max_files:
            raise BadRequest(
                f"{len(files)} files sent; at most {max_files} per request",
                code="too_many_files",
            )
        uploads = []
        for index, storage in enumerate(files):
            name = clean_filename(storage.filename) or f"{FIELD}-{index + 1}"
            uploads.append(Upload(name, storage.read()))
        return uploads
    if mimetype.startswith("image/"):
        name = clean_filename(request.args.get("filename")) or RAW_BODY_NAME
        data = request.get_data(cache=False)
        refuse_a_cut_body(len(data))
        return [Upload(name, data)]
    raise BadRequest(
        f"send the image as multipart/form-data in field {FIELD!r} or as a raw body with an "
        f"image/* content type (got {mimetype or 'no content type'!r})",
        code="no_image",
    )


def refuse_a_cut_body(n_read: int) -> None:
    """Raise RequestEntityTooLarge if a body sent without a Content-Length went on past the limit.

    A chunked body has no length to refuse up front; werkzeug reads it up to MAX_CONTENT_LENGTH
    and then stops, without an error, so a larger raw upload would be classified cut short
    (the multipart parser, reading on, does raise). Whether more was sent is read from the
    server's own input stream, past werkzeug's limited one.
    """
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    unsized = request.content_length is None and limit is not None
    if unsized and n_read >= limit and request.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()


def clean_filename(name: str | None) -> str:
    """The client's filename as data: control characters dropped, at most 255 characters.

    It is never used as a path; this only keeps it printable and storable.
    """
    if not name:
        return ""
    kept = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    return kept.strip()[:255]


def _anonymous() -> Requester:
    return _requester(ANONYMOUS_USER_ID, ANONYMOUS)


def _requester(user_id: int, username: str) -> Requester:
    return Requester(
        user_id=user_id,
        username=username,
        ip_address=services(current_app).ip_policy(request.remote_addr or "unknown"),
        user_agent=header_text(request.headers.get("User-Agent", ""))[:512],
    )


def header_text(value: str) -> str:
    """A header's text as the client sent it.

    WSGI hands headers over as latin-1 strings (PEP 3333) while clients send UTF-8, so
    "ü" arrives as "Ã¼": the latin-1 string's bytes are decoded as UTF-8, and a header
    whose bytes are not UTF-8 (real latin-1) is kept as it came.
    """
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value
