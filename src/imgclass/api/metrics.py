"""``GET /metrics`` (Prometheus text format) and the per-request HTTP metrics.

Values that describe the server's state rather than its traffic (readiness,
free disk, the loaded models, the newest backup) are refreshed at each scrape, so they are current
whenever Prometheus looks, even if nothing else has asked for them.
"""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, current_app, g, request

from imgclass.api import health
from imgclass.app import services
from imgclass.ops import metrics
from imgclass.warehouse import backup

bp = Blueprint("metrics", __name__)

UNMATCHED = "unmatched"  # 404s and 405s: never the raw path, which a client could vary at will


@bp.get("/metrics")
def scrape():
    """Prometheus metrics.
    ---
    get:
      summary: Prometheus metrics of the whole server (text exposition format)
      tags: [operations]
      responses:
        "200":
          description: every metric, merged over the server's workers
          content:
            text/plain:
              schema: {type: string}
    """
    svc = services(current_app)
    health.readyz()  # runs the readiness checks, which set imgclass_ready
    metrics.set_disk_usage(svc.settings.data_dir)
    # Also those made by the CLI, and on PostgreSQL those of any host (a backup job).
    last_backup = backup.last_backup_time(svc.settings, svc.engine)
    if last_backup is not None:
        metrics.set_last_backup(last_backup)
    chain = svc.predictor.models
    for role, model in (("primary", chain.primary), ("fallback", chain.fallback)):
        if model is not None:
            metrics.set_model_info(model.info.name, model.info.version, model.info.sha256, role)
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)


def register(app: Flask) -> None:
    """Serve ``/metrics`` and count every request by route and status."""
    metrics.configure(top_classes=services(app).settings.metrics_top_classes)
    app.register_blueprint(bp)

    @app.before_request
    def _start_timer():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(response):
        rule = request.url_rule
        started = g.get("metrics_started")
        metrics.observe_request(
            rule.rule if rule is not None else UNMATCHED,
            response.status_code,
            None if started is None else time.perf_counter() - started,
        )
        return response
