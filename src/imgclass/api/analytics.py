"""``/api/v1/analytics/*``: the cube, dashboard shortcuts and concept drill-down (admin only).

HTTP only: check the admin key, hand the query string to ``warehouse.cube_params`` /
``warehouse.analytics``, serialise the answer (JSON, or CSV streamed row by row).
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from imgclass.app import services
from imgclass.errors import BadRequest
from imgclass.ops.auth import require_admin
from imgclass.warehouse import analytics
from imgclass.warehouse.cube import Cube, csv_lines, result_rows
from imgclass.warehouse.cube_params import parse_cube
from imgclass.warehouse.recorder import utc_now

bp = Blueprint("analytics", __name__, url_prefix="/api/v1/analytics")

FORMATS = ("json", "csv")


@bp.before_request
def _admin_only():
    require_admin(services(current_app).users, request.headers.get("Authorization"))


def query_params() -> dict[str, str]:
    """The query string as name -> value; a repeated name is refused, not silently merged."""
    params = {}
    for name, values in request.args.lists():
        if len(values) > 1:
            raise BadRequest(
                f"{name[:40]}: given more than once; use one comma-separated list",
                code="bad_request",
            )
        params[name] = values[0]
    return params


@bp.get("/cube")
def cube():
    params = query_params()
    fmt = params.pop("format", "json").strip().lower()
    if fmt not in FORMATS:
        raise BadRequest(f"format: expected json or csv, got {fmt[:20]!r}", code="bad_request")
    query = parse_cube(params)
    engine = services(current_app).engine
    if fmt == "json":
        return jsonify(Cube(engine).run(query).to_json())
    if query.pivot is None and not query.rollup:
        columns, rows = Cube(engine).stream(query)
    else:
        result = Cube(engine).run(query)
        columns, rows = result.columns, result_rows(result)
    return Response(
        csv_lines(columns, rows),
        mimetype="text/csv",
        headers={"Content-Disposition": 'inline; filename="cube.csv"'},
    )


@bp.get("/summary")
def summary():
    engine = services(current_app).engine
    return jsonify(analytics.summary(engine, query_params(), utc_now().date()))


@bp.get("/timeseries")
def timeseries():
    return jsonify(analytics.timeseries(services(current_app).engine, query_params()))


@bp.get("/events")
def events():
    return jsonify(analytics.latest_events(services(current_app).engine, query_params()))


@bp.get("/concepts")
def concepts():
    return jsonify(analytics.concept_children(services(current_app).engine, query_params()))
