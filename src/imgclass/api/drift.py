"""``GET /api/v1/drift`` (admin): the latest drift report, per feature with its bins.

The background monitor keeps the report current; ``?fresh=true`` recomputes it
now (and updates the gauges), as does the first call before any background run.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from imgclass.app import services
from imgclass.errors import BadRequest
from imgclass.ops.auth import require_admin

bp = Blueprint("drift", __name__, url_prefix="/api/v1")

TRUE, FALSE = {"1", "true", "yes"}, {"0", "false", "no", ""}
PARAMETERS = ("fresh",)


@bp.get("/drift")
def drift():
    """The drift report.
    ---
    get:
      summary: Input and prediction drift of recent traffic (admin)
      description: "`fresh` is the only parameter: any other is refused (400), so that a
        misspelt one is not mistaken for the background report."
      tags: [monitoring]
      security: [{apiKey: []}]
      parameters:
        - name: fresh
          in: query
          description: recompute now instead of returning the background monitor's report
          schema: {type: string, enum: ["true", "false", "1", "0", "yes", "no", ""]}
      responses:
        "200":
          description: PSI per feature, with its bins and windows
          content:
            application/json:
              schema: DriftReport
        "400":
          $ref: "#/components/responses/BadRequest"
        "401":
          $ref: "#/components/responses/Unauthorized"
        "403":
          $ref: "#/components/responses/Forbidden"
    """
    svc = services(current_app)
    require_admin(svc.users, request.headers.get("Authorization"))
    for name in request.args:  # a misspelt ?frsh=true must not pass for the cached report
        if name not in PARAMETERS:
            raise BadRequest(
                f"{name[:40]}: unknown parameter; use {', '.join(PARAMETERS)}",
                code="invalid_parameter",
            )
    raw = request.args.get("fresh", "false").strip().lower()
    if raw not in TRUE | FALSE:
        raise BadRequest("fresh must be true or false", code="invalid_parameter")
    report = svc.drift.report(fresh=raw in TRUE)
    return jsonify(report.to_dict())
