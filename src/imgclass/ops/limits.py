"""Rate limits per client IP and per API key (flask-limiter), shared through Redis when set.

Two buckets apply to every request outside the exempt operational endpoints: one per client
IP (``IMGCLASS_RATE_LIMIT_PER_IP``) and one per presented API key
(``IMGCLASS_RATE_LIMIT_PER_KEY``), so one key cannot escape its limit by spreading over
addresses and one address cannot by rotating keys. Over a limit the answer is 429
``too_many_requests`` with ``Retry-After``. With ``IMGCLASS_REDIS_URL`` the counters live in
Redis and hold across workers and replicas; otherwise each worker counts for itself.

Keys are bucketed by a hash of the presented bearer token, never the token itself, and
without a database lookup: an unknown key still spends its bucket before it is refused.
The token is the one authentication reads (``ops.auth.bearer_key``): ``bearer K``,
``BEARER K`` and ``Bearer  K`` are the same key, so they share one bucket.
"""

from __future__ import annotations

import hashlib

from flask import Flask, Response, request
from flask_limiter import Limiter

from imgclass.api.errors import UNAVAILABLE_RETRY_AFTER_S
from imgclass.config import Settings
from imgclass.errors import Unauthorized
from imgclass.ops.auth import bearer_key

# Probes and scrapes must never be throttled: a limited /readyz would take a healthy
# replica out of its load balancer.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
MIN_RETRY_AFTER_S = 1


def client_ip() -> str:
    return request.remote_addr or "unknown"


def presented_key() -> str:
    header = request.headers.get("Authorization", "")
    try:
        # Parsed as authentication parses it: hashing the raw header gave every spelling of
        # the scheme and its spacing a fresh bucket for the same key.
        token = bearer_key(header) or ""
    except Unauthorized:
        token = header  # refused with a 401 anyway; it still spends a bucket
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def install_rate_limits(app: Flask, settings: Settings) -> Limiter | None:
    """Attach the limiter to every blueprint registered so far; None when both limits are off."""
    per_ip, per_key = settings.rate_limit_per_ip, settings.rate_limit_per_key
    if not per_ip and not per_key:
        return None
    # Registered before the limiter's own hook, so it runs after it (Flask runs them last
    # registered first).
    app.after_request(_retry_after_only_where_it_means_something)
    limiter = Limiter(
        key_func=client_ip,
        app=app,
        application_limits=[per_ip] if per_ip else [],
        storage_uri=settings.redis_url or "memory://",
        # Redis down must not take the API down: count in memory meanwhile.
        in_memory_fallback_enabled=bool(settings.redis_url),
        swallow_errors=True,
        headers_enabled=True,
        key_prefix="imgclass",
        strategy="moving-window",
    )
    limiter.request_filter(lambda: request.path in EXEMPT_PATHS)
    if per_key:
        by_key = limiter.shared_limit(
            per_key,
            scope="api-key",
            key_func=presented_key,
            exempt_when=lambda: not request.headers.get("Authorization"),
            override_defaults=False,
        )
        for blueprint in app.blueprints.values():
            by_key(blueprint)
    return limiter


def _retry_after_only_where_it_means_something(response: Response) -> Response:
    """Keep ``Retry-After`` on 429 and 503 only, with the 503's own short value, and at
    least 1 second on a 429.

    With its headers on, flask-limiter writes ``Retry-After`` (seconds until its window
    resets) on every response of a limited route: a 200 or a 500 told the client to wait,
    and a 503's "retry in 5 s" was stretched to the end of the rate-limit window. It also
    truncates those seconds, so with less than one left (always the case for a per-second
    limit's last fraction) a 429 said ``Retry-After: 0``, "retry at once".
    """
    if response.status_code == 503:
        response.headers["Retry-After"] = UNAVAILABLE_RETRY_AFTER_S
    elif response.status_code == 429:
        seconds = response.headers.get("Retry-After", "")
        if not seconds.isdigit() or int(seconds) < MIN_RETRY_AFTER_S:
            response.headers["Retry-After"] = str(MIN_RETRY_AFTER_S)
    else:
        response.headers.pop("Retry-After", None)
    return response
