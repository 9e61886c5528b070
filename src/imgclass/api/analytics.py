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
from imgclass.warehouse.cube import Cube, csv_lines, result_table
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
    """Group, filter and measure the recorded requests (OLAP cube)
    ---
    get:
      summary: Group, filter and measure the recorded requests (OLAP cube) (admin)
      tags: [analytics]
      security: [{apiKey: []}]
      x-analytics-filters: true
      parameters:
        - group_by
        - measures
        - name: order
          in: query
          description: requested columns to sort by, `-` for descending (e.g. -requests,day)
          schema: {type: string, maxLength: 1024}
        - name: limit
          in: query
          schema: {type: integer, minimum: 1, maximum: 100000, default: 1000}
        - name: rollup
          in: query
          description: add subtotals per group_by prefix and a grand total
          schema: {type: string, enum: ["true", "false", "1", "0", "yes", "no"]}
        - name: pivot
          in: query
          description: one of the group_by dimensions, whose values become columns named DIM=value
          schema: {type: string, maxLength: 64}
        - name: format
          in: query
          schema: {type: string, enum: [json, csv], default: json}
      responses:
        "200":
          description: the answer
          headers:
            X-Truncated:
              description: "CSV: true when more rows matched than `limit` (JSON: `truncated`)"
              schema: {type: string, enum: ["true", "false"]}
          content:
            application/json:
              schema: CubeResponse
            text/csv:
              schema: {type: string}
        "400":
          $ref: "#/components/responses/BadRequest"
        "401":
          $ref: "#/components/responses/Unauthorized"
        "403":
          $ref: "#/components/responses/Forbidden"
    """
    params = query_params()
    fmt = params.pop("format", "json").strip().lower()
    if fmt not in FORMATS:
        raise BadRequest(f"format: expected json or csv, got {fmt[:20]!r}", code="bad_request")
    query = parse_cube(params)
    engine = services(current_app).analytics_engine
    if fmt == "json":
        return jsonify(Cube(engine).run(query).to_json())
    if query.pivot is None and not query.rollup:
        columns, rows, truncated = Cube(engine).stream(query)
    else:
        result = Cube(engine).run(query)
        (columns, rows), truncated = result_table(result), result.truncated
    return Response(
        csv_lines(columns, rows),
        mimetype="text/csv",
        headers={
            "Content-Disposition": 'inline; filename="cube.csv"',
            # CSV has no place for JSON's "truncated": without this a cut-off file
            # would look complete.
            "X-Truncated": "true" if truncated else "false",
        },
    )


@bp.get("/summary")
def summary():
    """Dashboard totals, today and yesterday, top classes, users, errors and models
    ---
    get:
      summary: Dashboard totals, today and yesterday, top classes, users, errors and models (admin)
      tags: [analytics]
      security: [{apiKey: []}]
      x-analytics-filters: true
      responses:
        "200":
          description: the answer
          content:
            application/json:
              schema: Summary
        "400":
          $ref: "#/components/responses/BadRequest"
        "401":
          $ref: "#/components/responses/Unauthorized"
        "403":
          $ref: "#/components/responses/Forbidden"
    """
    engine = services(current_app).analytics_engine
    return jsonify(analytics.summary(engine, query_params(), utc_now().date()))


@bp.get("/timeseries")
def timeseries():
    """Measures per time bucket, oldest first
    ---
    get:
      summary: Measures per time bucket, oldest first (admin)
      tags: [analytics]
      security: [{apiKey: []}]
      x-analytics-filters: true
      parameters:
        - name: grain
          in: query
          schema: {type: string, enum: [minute, hour, day, week, month], default: day}
        - measures
      responses:
        "200":
          description: the answer
          content:
            application/json:
              schema: Timeseries
        "400":
          $ref: "#/components/responses/BadRequest"
        "401":
          $ref: "#/components/responses/Unauthorized"
        "403":
          $ref: "#/components/responses/Forbidden"
    """
    return jsonify(analytics.timeseries(services(current_app).analytics_engine, query_params()))


@bp.get("/events")
def events():
    """The latest recorded events, newest first
    ---
    get:
      summary: The latest recorded events, newest first (admin)
      tags: [analytics]
      security: [{apiKey: []}]
      x-analytics-filters: true
      parameters:
        - name: limit
          in: query
          schema: {type: integer, minimum: 1, maximum: 500, default: 50}
      responses:
        "200":
          description: the answer
          content:
            application/json:
              schema: Events
        "400":
          $ref: "#/components/responses/BadRequest"
        "401":
          $ref: "#/components/responses/Unauthorized"
        "403":
          $ref: "#/components/responses/Forbidden"
    """
    return jsonify(analytics.latest_events(services(current_app).analytics_engine, query_params()))


@bp.get("/concepts")
def concepts():
    """A WordNet concept's path and children with their request counts
    ---
    get:
      summary: A WordNet concept's path and children with their request counts (admin)
      tags: [analytics]
      security: [{apiKey: []}]
      x-analytics-filters: true
      parameters:
        - name: parent
          in: query
          description: "a concept name or wnid (default: the top concepts)"
          schema: {type: string, maxLength: 200}
      responses:
        "200":
          description: the answer
          content:
            application/json:
              schema: Concepts
        "400":
          $ref: "#/components/responses/BadRequest"
        "401":
          $ref: "#/components/responses/Unauthorized"
        "403":
          $ref: "#/components/responses/Forbidden"
    """
    engine = services(current_app).analytics_engine
    return jsonify(analytics.concept_children(engine, query_params()))
