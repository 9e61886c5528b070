"""The OpenAPI 3.1 description of every endpoint, generated from the code, and its docs page.

``GET /api/v1/openapi.json`` serves the spec; ``GET /api/docs`` shows it with Swagger UI,
whose files the app serves itself (``web/static/vendor/swagger-ui/``, copied from the npm
package by ``make install``).

How the spec is made (apispec with its Flask plugin):

* the paths and methods are the app's own URL rules, walked at the first request, so a new
  route appears by itself (and ``tests/api/test_openapi.py`` fails until it is described);
* each view's docstring carries its operation in YAML after a ``---`` line;
* the bodies' schemas come from ``api/schemas.py`` (and the pydantic models behind backups)
  through pydantic's JSON Schema, which OpenAPI 3.1 takes as it is;
* what holds for every operation is added here rather than repeated in each docstring: the
  ``X-Request-ID`` header on every answer, 429 where the rate limits apply, 500, and the
  analytics filters, whose names come from ``warehouse.cube_params``.
"""

from __future__ import annotations

import copy
from typing import Any

from apispec import APISpec, BasePlugin
from apispec_webframeworks.flask import FlaskPlugin
from flask import Blueprint, Flask, current_app, jsonify, render_template
from pydantic import TypeAdapter

from imgclass import __version__
from imgclass.api.schemas import SCHEMAS
from imgclass.app import services
from imgclass.config import (
    LIMIT_REQUEST_FIELD_SIZE,
    LIMIT_REQUEST_FIELDS,
    LIMIT_REQUEST_LINE,
    Settings,
)
from imgclass.ops.limits import EXEMPT_PATHS
from imgclass.warehouse.cube import CONCEPT_PREFIX, DIMENSIONS, MEASURES, TIME_GRAINS

bp = Blueprint("openapi", __name__)  # its template lives in web/templates

OPENAPI_VERSION = "3.1.0"
SPEC_PATH = "/api/v1/openapi.json"
DOCS_PATH = "/api/docs"
SWAGGER_UI = "vendor/swagger-ui"  # under web/static
# Endpoints the spec leaves out: static files and the page that shows the spec.
UNDOCUMENTED = frozenset({"static", "web.static", "openapi.docs"})
_EXTENSION_KEY = "imgclass.openapi"
TAGS = {
    "predict": "classify images",
    "models": "what is served",
    "monitoring": "drift and ground truth",
    "analytics": "the warehouse, grouped and filtered (admin)",
    "backups": "backups of the warehouse (admin)",
    "operations": "probes and metrics (never rate-limited)",
    "pages": "the HTML pages",
    "meta": "this document",
}

REQUEST_ID = {
    "description": "the request id (the client's X-Request-ID when well-formed); quote it",
    "required": True,
    "schema": {"type": "string"},
}
RETRY_AFTER = {
    "description": "seconds to wait before retrying",
    "required": True,
    "schema": {"type": "string"},
}

# name -> (status, description, extra headers)
ERROR_RESPONSES: dict[str, tuple[int, str, dict]] = {
    "BadRequest": (400, "the request is malformed; the message names the parameter", {}),
    "Unauthorized": (401, "`unauthorized`: a required key is missing, or a key is wrong", {}),
    "Forbidden": (403, "`forbidden`: the key is valid but not an admin's", {}),
    "NotFound": (404, "nothing matches the request", {}),
    "Conflict": (409, "the request is well-formed but the state does not allow it", {}),
    "PayloadTooLarge": (413, "`payload_too_large`: the body is over the limit", {}),
    "UnsupportedMediaType": (415, "`unsupported_media_type`: not a body type accepted here", {}),
    "Unprocessable": (422, "the body is well-formed but its content cannot be used", {}),
    "TooManyRequests": (
        429,
        "`too_many_requests`: over a rate limit (per address or per key)",
        {"Retry-After": RETRY_AFTER},
    ),
    "InternalError": (500, "`internal_error`: a fault of ours; quote the request id", {}),
    "Unavailable": (
        503,
        "the service cannot do it now (model or storage unavailable); nothing was acknowledged",
        {"Retry-After": RETRY_AFTER},
    ),
}

# Answered by gunicorn before a request reaches the app: a malformed head (400) and its
# limit_request_line and limit_request_field_size (414, 431). An HTML page, without the app's
# headers (no X-Request-ID): gunicorn has no setting or hook that would let the app shape
# these (its worker writes them), so they are documented here and pinned by
# tests/e2e/test_limits.py.
SERVER_RESPONSES: dict[str, tuple[int, str]] = {
    "MalformedRequest": (
        400,
        "the request's head is malformed: a Content-Length that is not a non-negative "
        "integer, both Content-Length and Transfer-Encoding, a NUL byte in a header",
    ),
    "UriTooLong": (414, f"the request line is over {LIMIT_REQUEST_LINE} bytes"),
    "HeadersTooLarge": (
        431,
        f"a request header is over {LIMIT_REQUEST_FIELD_SIZE} bytes, or there are over "
        f"{LIMIT_REQUEST_FIELDS} of them",
    ),
}

CUBE_NAMES = {
    "dimension": {
        "anyOf": [
            {"type": "string", "enum": list(DIMENSIONS)},
            {"type": "string", "pattern": f"^{CONCEPT_PREFIX}[0-9]{{1,2}}$"},
        ]
    },
    "measure": {"type": "string", "enum": list(MEASURES)},
}


def _list_parameter(name: str, item: str, description: str) -> dict:
    """A comma-separated list in the query string (``group_by=day,class``)."""
    return {
        "name": name,
        "in": "query",
        "description": description,
        "style": "form",
        "explode": False,
        "schema": {"type": "array", "items": CUBE_NAMES[item], "minItems": 1, "uniqueItems": True},
    }


def _filter_parameters() -> list[dict]:
    """One query parameter per filterable dimension, plus from/to (``cube_params``)."""
    hints = {
        **{
            grain: f"{grain} values, e.g. the cube's own output for that grain"
            for grain in TIME_GRAINS
        },
        "weekday": "ISO weekdays 1 (Monday) to 7",
        "hour_of_day": "hours 0 to 23",
        "status": "HTTP statuses or classes, e.g. 200,415 or 4xx",
        "cache_hit": "true or false",
        "fallback": "true or false",
        "class": "ImageNet class labels, e.g. tabby",
        "concept": "WordNet concepts (name or wnid), e.g. dog",
    }
    params = [
        {
            "name": name,
            "in": "query",
            "description": f"filter: {hints.get(name, name + ' values')}; comma-separated, "
            "any may match (a value with a comma in double quotes)",
            "schema": {"type": "string", "minLength": 1, "maxLength": 4096},
        }
        for name in (*DIMENSIONS, "concept")
    ]
    for name, side in (("from", "inclusive"), ("to", "exclusive; a date means its whole day")):
        params.append(
            {
                "name": name,
                "in": "query",
                "description": f"ISO date or datetime, UTC unless it has an offset ({side})",
                "schema": {"type": "string", "minLength": 1, "maxLength": 64},
            }
        )
    return params


class ImgclassPlugin(BasePlugin):
    """What every operation shares, added to each one (see the module docstring)."""

    def operation_helper(self, path=None, operations=None, **kwargs: Any) -> None:
        for operation in (operations or {}).values():
            if not isinstance(operation, dict):
                continue
            if operation.pop("x-analytics-filters", False):
                operation.setdefault("parameters", []).extend(_filter_parameters())
            responses = operation.setdefault("responses", {})
            if path not in EXEMPT_PATHS:
                responses.setdefault("429", "TooManyRequests")
            responses.setdefault("500", "InternalError")
            for name, (status, _) in SERVER_RESPONSES.items():
                responses.setdefault(str(status), name)
            for response in responses.values():
                if isinstance(response, dict) and "$ref" not in response:
                    response.setdefault("headers", {}).setdefault("X-Request-ID", REQUEST_ID)


def _add_schemas(spec: APISpec, settings: Settings) -> None:
    """Every body schema, from its Python type; nested models become their own components."""
    components: dict[str, dict] = {}
    for name, source in SCHEMAS.items():
        schema = TypeAdapter(source).json_schema(
            mode="serialization", ref_template="#/components/schemas/{model}"
        )
        components.update(schema.pop("$defs", {}))
        components[name] = schema
    # Limits that are settings, as this server has them.
    components["PredictForm"]["properties"]["image"]["maxItems"] = settings.max_files_per_request
    for name, schema in components.items():
        spec.components.schema(name, schema)


def build_spec(app: Flask) -> dict:
    """The OpenAPI document of ``app``'s routes, as a dict."""
    spec = APISpec(
        title="imgclass",
        version=__version__,
        openapi_version=OPENAPI_VERSION,
        plugins=[FlaskPlugin(), ImgclassPlugin()],
        info={
            "description": "Image classification over HTTP with a built-in analytics "
            'warehouse. Every error is `{"error": {"code", "message", "request_id"}}`, except '
            "what the HTTP server (gunicorn) refuses before the app sees it: a malformed "
            "request head (400), a request line or header block over its limits (414, 431), "
            "answered with gunicorn's own text/html page and no X-Request-ID."
        },
    )
    spec.components.security_scheme(
        "apiKey",
        {"type": "http", "scheme": "bearer", "description": "an API key (`imgclass users add`)"},
    )
    for tag, description in TAGS.items():
        spec.tag({"name": tag, "description": description})
    _add_schemas(spec, services(app).settings)
    server_says = {status: text for status, text in SERVER_RESPONSES.values()}
    for name, (status, description, headers) in ERROR_RESPONSES.items():
        content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        if status in server_says:  # the same status from gunicorn, before the app
            description += (
                f"; or, as text/html without X-Request-ID, from the HTTP server (gunicorn) "
                f"when {server_says[status]}"
            )
            content["text/html"] = {"schema": {"type": "string"}}
        spec.components.response(
            name,
            {
                "description": f"{status}: {description}",
                "headers": {"X-Request-ID": REQUEST_ID, **headers},
                "content": content,
            },
        )
    for name, (status, description) in SERVER_RESPONSES.items():
        spec.components.response(
            name,
            {
                "description": f"{status}: {description}; answered by the HTTP server (gunicorn)",
                "content": {"text/html": {"schema": {"type": "string"}}},
            },
        )
    spec.components.parameter(
        "group_by",
        "query",
        _list_parameter("group_by", "dimension", "dimensions to group by (at most 8)"),
    )
    spec.components.parameter(
        "measures",
        "query",
        _list_parameter("measures", "measure", "what to compute per group (default: requests)"),
    )
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        if rule.endpoint in UNDOCUMENTED:
            continue
        spec.path(view=app.view_functions[rule.endpoint], app=app)
    return spec.to_dict()


def spec_for(app: Flask) -> dict:
    """The spec of ``app``, built once (at the first request, when every route exists)."""
    cached = app.extensions.get(_EXTENSION_KEY)
    if cached is None:
        cached = app.extensions[_EXTENSION_KEY] = build_spec(app)
    return copy.deepcopy(cached)


@bp.get(SPEC_PATH)
def openapi_json():
    """The OpenAPI document you are reading.
    ---
    get:
      summary: This OpenAPI 3.1 document
      tags: [meta]
      responses:
        "200":
          description: the spec
          content:
            application/json:
              schema: {type: object}
    """
    return jsonify(spec_for(current_app))


@bp.get(DOCS_PATH)
def docs():
    # Rendered under the app's Content-Security-Policy: the page's only script is a file.
    from imgclass.web.pages import STATIC

    available = (STATIC / SWAGGER_UI / "swagger-ui-bundle.js").is_file()
    return render_template(
        "api_docs.html", spec_url=SPEC_PATH, swagger_ui=SWAGGER_UI if available else None
    )
