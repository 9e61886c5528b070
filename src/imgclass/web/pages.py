"""The ``web`` blueprint: HTML pages and their static files, served by the app itself.

The pages hold no data: their scripts call the JSON API (``/api/v1/predict`` and
``/api/v1/analytics/*``) like any other client. Every script and style is a file, so
the pages run under a Content-Security-Policy without ``'unsafe-inline'``, set here on
every HTML response.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Blueprint, current_app, render_template

from imgclass.app import services

log = logging.getLogger(__name__)

bp = Blueprint(
    "web",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

STATIC = Path(__file__).parent / "static"
# Copied from the npm package by `make install`; not in git.
CHART_JS = "vendor/chart.umd.min.js"

# Same-origin only: the pages load nothing from elsewhere and run no inline code.
# blob: is the preview of the photo being uploaded (URL.createObjectURL).
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def chart_js_available() -> bool:
    return (STATIC / CHART_JS).is_file()


@bp.get("/")
def upload():
    """The upload page.
    ---
    get:
      summary: The upload page (HTML)
      tags: [pages]
      responses:
        "200":
          description: the page
          content:
            text/html:
              schema: {type: string}
    """
    settings = services(current_app).settings
    return render_template(
        "upload.html",
        page="upload",
        max_upload_bytes=settings.max_upload_bytes,
        max_upload_label=f"{settings.max_upload_bytes / 2**20:.3g} MB",
        top_k=5,
    )


_warned = False


@bp.get("/dashboard")
def dashboard():
    """The analytics dashboard.
    ---
    get:
      summary: The analytics dashboard (HTML; the page asks for an admin key)
      tags: [pages]
      responses:
        "200":
          description: the page
          content:
            text/html:
              schema: {type: string}
    """
    global _warned
    available = chart_js_available()
    if not available and not _warned:
        _warned = True  # once per process, not per page view
        log.warning(
            "the dashboard is served without charts: %s is missing (run `make install`)",
            STATIC / CHART_JS,
        )
    return render_template(
        "dashboard.html", page="dashboard", chart_js=CHART_JS if available else None
    )


@bp.after_request
def _harden(response):
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response
