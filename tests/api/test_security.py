"""Access and abuse: rate limits (per IP, per key, shared through Redis), security headers,
CORS closed by default, and the client address behind a trusted proxy."""

from __future__ import annotations

import random

import pytest
from pydantic import SecretStr

from imgclass.app import create_app, services
from tests.api.test_predict import post_files
from tests.conftest import fact_rows
from tests.ops.test_cache import REDIS_URL, redis_available  # noqa: F401 (fixture)
from tests.support.s3 import closed_port


def random_ip() -> str:
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


@pytest.fixture
def make(settings):
    apps = []

    def build(**overrides):
        app = create_app(settings.model_copy(update=overrides))
        apps.append(app)
        return app.test_client()

    yield build
    for app in apps:
        services(app).engine.dispose()


def test_security_headers_on_every_response(client):
    for path in ("/healthz", "/api/v1/models", "/no-such-page"):
        headers = client.get(path).headers
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"


def test_cors_is_closed_by_default(client):
    origin = {"Origin": "https://evil.example"}
    assert "Access-Control-Allow-Origin" not in client.get("/api/v1/models", headers=origin).headers
    preflight = client.options(
        "/api/v1/predict", headers={**origin, "Access-Control-Request-Method": "POST"}
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers


def test_cors_allows_only_the_configured_origins(make):
    client = make(cors_origins=["https://dash.example"])
    ok = client.get("/api/v1/models", headers={"Origin": "https://dash.example"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://dash.example"
    other = client.get("/api/v1/models", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_per_ip_limit_answers_429_with_retry_after(make):
    client = make(rate_limit_per_ip="3/minute", rate_limit_per_key="")
    ip = {"REMOTE_ADDR": random_ip()}
    statuses = [client.get("/api/v1/models", environ_base=ip).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = client.get("/api/v1/models", environ_base=ip)
    error = limited.get_json()["error"]
    assert error["code"] == "too_many_requests" and error["request_id"]
    assert int(limited.headers["Retry-After"]) > 0
    # Another address has its own budget; probes are never limited.
    other = {"REMOTE_ADDR": random_ip()}
    assert client.get("/api/v1/models", environ_base=other).status_code == 200
    assert all(client.get("/readyz", environ_base=ip).status_code == 200 for _ in range(5))


def test_retry_after_on_a_429_is_at_least_one_second(make):
    # flask-limiter truncates the seconds left in its window: in the last fraction of a
    # per-second limit's window it said "Retry-After: 0" (about 1 in 40 refusals of a
    # flood, so a few hundred refusals all but surely meet one).
    client = make(rate_limit_per_ip="100/second", rate_limit_per_key="")
    ip = {"REMOTE_ADDR": random_ip()}
    refused = []
    while len(refused) < 600:
        response = client.get("/api/v1/models", environ_base=ip)
        if response.status_code == 429:
            refused.append(response.headers["Retry-After"])
    assert min(int(seconds) for seconds in refused) >= 1


def test_retry_after_only_on_429_and_503(make, admin_key):
    # flask-limiter writes Retry-After on every response of a limited route, and stretched
    # a 503's short hint to the end of its window.
    client = make(
        rate_limit_per_ip="100/minute",
        rate_limit_per_key="",
        backup_destination="s3://imgclass-backups/x",
        s3_endpoint_url=f"http://127.0.0.1:{closed_port()}",
        s3_access_key_id="key",
        s3_secret_access_key=SecretStr("secret"),
    )
    ok = client.get("/api/v1/models")
    assert ok.status_code == 200 and "X-RateLimit-Remaining" in ok.headers
    assert "Retry-After" not in ok.headers
    down = client.get("/api/v1/admin/backups", headers={"Authorization": f"Bearer {admin_key}"})
    assert down.status_code == 503 and down.headers["Retry-After"] == "5"


def test_per_key_limit_follows_the_key_across_addresses(make, admin_key):
    client = make(rate_limit_per_ip="", rate_limit_per_key="2/minute")
    auth = {"Authorization": f"Bearer {admin_key}"}
    statuses = [
        client.get("/api/v1/models", headers=auth, environ_base={"REMOTE_ADDR": random_ip()})
        for _ in range(3)
    ]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    # Anonymous callers are not charged to any key.
    assert client.get("/api/v1/models").status_code == 200


def test_per_key_limit_counts_every_spelling_of_the_header_as_one_key(make, admin_key):
    # Authentication accepts any case of the scheme and extra spaces; the bucket used to be
    # the raw header's hash, so each spelling got a fresh budget for the same key.
    client = make(rate_limit_per_ip="", rate_limit_per_key="5/minute")
    statuses = [
        client.get("/api/v1/models", headers={"Authorization": f"Bearer {admin_key}"}).status_code
        for _ in range(6)
    ]
    assert statuses == [200] * 5 + [429]
    for spelling in ("bearer {}", "BEARER {}", "Bearer  {}", "BeArEr {}", " Bearer {} "):
        auth = {"Authorization": spelling.format(admin_key)}
        assert client.get("/api/v1/models", headers=auth).status_code == 429, spelling


def test_a_limited_predict_is_refused_before_any_work(make, cat_jpeg):
    """A flood must not cost a decode, a model run or a warehouse write per request."""
    client = make(rate_limit_per_ip="1/minute", rate_limit_per_key="")
    ip = {"REMOTE_ADDR": random_ip()}
    assert post_files(client, [("a.jpg", cat_jpeg)], environ_base=ip).status_code == 200
    assert post_files(client, [("a.jpg", cat_jpeg)], environ_base=ip).status_code == 429
    assert len(fact_rows(client.application)) == 1


def test_redis_shares_the_counters_between_workers(redis_available, make):  # noqa: F811
    first = make(rate_limit_per_ip="3/minute", rate_limit_per_key="", redis_url=REDIS_URL)
    second = make(rate_limit_per_ip="3/minute", rate_limit_per_key="", redis_url=REDIS_URL)
    ip = {"REMOTE_ADDR": random_ip()}
    statuses = [
        (first if i % 2 else second).get("/api/v1/models", environ_base=ip).status_code
        for i in range(4)
    ]
    assert statuses == [200, 200, 200, 429]


def test_behind_a_trusted_proxy_the_client_address_is_recorded(make, cat_jpeg):
    client = make(trusted_proxies=1)
    post_files(
        client,
        [("a.jpg", cat_jpeg)],
        headers={"X-Forwarded-For": "203.0.113.7"},
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )
    untrusting = make(trusted_proxies=0)
    post_files(
        untrusting,
        [("a.jpg", cat_jpeg)],
        headers={"X-Forwarded-For": "203.0.113.7"},
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )
    # Both apps share the test's data dir: first the proxied request, then the direct one.
    ips = [row["ip_address"] for row in fact_rows(client.application)]
    assert ips == ["203.0.113.7", "10.0.0.2"]
