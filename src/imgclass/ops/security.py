"""Response hardening: security headers on every response, CORS closed unless configured,
and the client address taken from a trusted proxy's X-Forwarded-For.

The pages serve their scripts and styles as files, so the Content-Security-Policy allows no
inline script or style; images may come from ``data:``/``blob:`` URLs (the upload preview).
"""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from imgclass.config import Settings

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def install_security(app: Flask, settings: Settings) -> None:
    if settings.trusted_proxies:
        # Behind nginx or an Ingress the peer is the proxy: the client's address (recorded in
        # user_dim, and the per-IP rate-limit key) is the last hop each trusted proxy appended
        # to X-Forwarded-For. With 0 the header is ignored, so no client can forge it.
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)

    @app.after_request
    def _security_headers(response):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    if settings.cors_origins:
        from flask_cors import CORS

        CORS(
            app,
            resources={r"/api/*": {"origins": settings.cors_origins}},
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After", "X-Truncated"],
            max_age=600,
        )
