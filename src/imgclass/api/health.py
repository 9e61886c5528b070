"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: it can serve)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from sqlalchemy.exc import SQLAlchemyError

from imgclass.app import services
from imgclass.ops import metrics
from imgclass.warehouse.health import check_writable

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """Liveness.
    ---
    get:
      summary: Liveness (the process answers)
      tags: [operations]
      responses:
        "200":
          description: alive
          content:
            application/json:
              schema: Health
    """
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Readiness.
    ---
    get:
      summary: Readiness (a model is loaded and the database takes writes)
      tags: [operations]
      responses:
        "200":
          description: ready; `checks` says if the fallback is serving
          content:
            application/json:
              schema: Readiness
        "503":
          description: not ready; `reasons` says why
          content:
            application/json:
              schema: Readiness
    """
    svc = services(current_app)
    checks, reasons = {}, []
    chain = svc.predictor.models
    # With no model loaded this tries again (once per cool-down): probes and scrapes
    # reach a server that no traffic does, so it heals even while taken out of rotation.
    if not chain.heal():
        checks["model"] = "not loaded"
        reasons.append(f"model: {chain.unavailable_reason}")
    elif chain.primary is None or chain.breaker_state != "closed":
        # Still serving, from the fallback: ready, but say so.
        checks["model"] = (
            f"fallback ({chain.primary_error or 'primary breaker ' + chain.breaker_state})"
        )
    else:
        checks["model"] = "ok"
    try:
        check_writable(svc.engine)
        checks["database"] = "ok"
    except SQLAlchemyError as exc:
        checks["database"] = "not writable"
        reasons.append(f"database: {type(exc.orig or exc).__name__}: {exc.orig or exc}"[:300])
    failing = {reason.split(":", 1)[0] for reason in reasons}  # each reason names its check
    for check in checks:  # the gauge an alert fires on
        metrics.set_ready(check, check not in failing)
    if reasons:
        return jsonify(status="unavailable", checks=checks, reasons=reasons), 503
    return jsonify(status="ready", checks=checks)
