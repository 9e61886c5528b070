"""deploy/nginx/nginx.conf with Debian's nginx, in front of real replicas of the built package.

Two replicas (the image's runtime: wheel, ENV, ENTRYPOINT/CMD) share one SQLite warehouse;
nginx balances them, keeps the request id, refuses oversized bodies in the app's JSON shape,
and, when a replica is killed, sends the requests it cannot reach to the other one.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from imgclass.config import Settings
from tests.conftest import CAT_CLASSES, REPO
from tests.deploy.conftest import Replica
from tests.support.nginx import (
    NGINX_DIR,
    check_config,
    free_port,
    running_nginx,
    write_run_dir,
)
from tests.support.system import require_binary

CLIENT_ADDRESS = "127.0.0.3"  # the client connects from here, so nginx's peer is not the app's


def curl(url: str, *args: str, data: bytes | None = None) -> tuple[int, dict, dict]:
    """(status, headers, JSON body) of one request, sent from CLIENT_ADDRESS."""
    out = subprocess.run(
        ["curl", "-s", "--interface", CLIENT_ADDRESS, "-D", "-", "--max-time", "60", *args, url],
        input=data,
        capture_output=True,
        check=True,
    ).stdout.decode()
    head, _, body = out.replace("\r\n", "\n").rpartition("\n\n")
    if head.startswith("HTTP/1.1 100"):
        head = head.split("\n\n", 1)[-1]
    lines = head.split("\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, json.loads(body)


def post_image(base: str, image: bytes, *args: str) -> tuple[int, dict, dict]:
    return curl(
        f"{base}/api/v1/predict?top_k=1",
        "-H",
        "Content-Type: image/jpeg",
        "--data-binary",
        "@-",
        *args,
        data=image,
    )


def facts(db: Path) -> list[tuple[str, int, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT f.request_id, f.status_code, u.ip_address FROM api_event_fact f "
            "JOIN user_dim u USING (user_key)"
        ).fetchall()


def access_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def logged(path: Path, request_id: str, since: int = 0, timeout_s: float = 5) -> list[dict]:
    """The access log's entries for ``request_id``, waiting for the first one: nginx writes
    the line in its log phase, after the client already has the answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        entries = [e for e in access_log(path)[since:] if e["request_id"] == request_id]
        if entries or time.monotonic() > deadline:
            return entries
        time.sleep(0.05)


def test_config_as_shipped_for_compose_is_valid():
    run_dir = write_run_dir(["127.0.0.1:1"], f"127.0.0.1:{free_port()}")
    try:
        # Compose's own upstream and listen files; only the service name is made resolvable.
        compose_upstreams = (NGINX_DIR / "upstream-servers.conf").read_text()
        (run_dir / "upstream-servers.conf").write_text(
            compose_upstreams.replace("server app:", "server 127.0.0.1:")
        )
        (run_dir / "listen.conf").write_text((NGINX_DIR / "listen.conf").read_text())
        result = check_config(run_dir)
        assert result.returncode == 0, result.stderr
        assert "syntax is ok" in result.stderr
    finally:
        subprocess.run(["rm", "-rf", str(run_dir)], check=False)


def test_nginx_t_rejects_a_broken_config():
    run_dir = write_run_dir(["127.0.0.1:1"], f"127.0.0.1:{free_port()}")
    try:
        conf = run_dir / "nginx.conf"
        conf.write_text(
            conf.read_text().replace("proxy_next_upstream error", "proxy_next_upstream oops")
        )
        assert check_config(run_dir).returncode != 0
    finally:
        subprocess.run(["rm", "-rf", str(run_dir)], check=False)


def test_no_replica_left_gives_a_json_503():
    port = free_port()
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    run_dir = write_run_dir(dead, f"127.0.0.1:{port}")
    with running_nginx(run_dir, "127.0.0.1", port):
        status, headers, body = curl(f"http://127.0.0.1:{port}/readyz")
    assert status == 503
    assert body["error"]["code"] == "upstream_unavailable"
    assert body["error"]["request_id"] == headers["x-request-id"]
    assert headers["retry-after"] == "5"


@pytest.fixture(scope="module")
def cluster(runtime_site, model_dir, tmp_path_factory):
    """Two replicas on one SQLite warehouse, nginx in front; yields what the tests need."""
    require_binary("nginx", "nginx")
    root = tmp_path_factory.mktemp("cluster")
    db = root / "warehouse.db"
    replicas = [
        Replica(
            runtime_site,
            model_dir,
            root / f"data-{i}",
            free_port(),
            IMGCLASS_DATABASE_URL=f"sqlite:///{db}",
            IMGCLASS_TRUSTED_PROXIES="1",
        )
        for i in range(2)
    ]
    try:
        for replica in replicas:  # one after the other: the first one migrates
            replica.start().wait_ready()
        port = free_port()
        run_dir = write_run_dir([f"127.0.0.1:{r.port}" for r in replicas], f"127.0.0.1:{port}")
        with running_nginx(run_dir, "127.0.0.1", port) as log:
            yield {"base": f"http://127.0.0.1:{port}", "replicas": replicas, "db": db, "log": log}
    finally:
        for replica in replicas:
            replica.stop()


def upstream_ports(log: Path, since: int = 0) -> Counter:
    return Counter(
        e["upstream"].rsplit(":", 1)[-1] for e in access_log(log)[since:] if e["upstream"]
    )


@pytest.mark.slow
def test_requests_are_balanced_and_recorded_once_with_the_client_address(cluster, cat_jpeg):
    base, db, log = cluster["base"], cluster["db"], cluster["log"]
    outcomes = []
    for i in range(8):
        rid = f"client-supplied-{i:04d}"
        status, headers, body = post_image(
            base, cat_jpeg, "-H", f"X-Request-ID: {rid}", "-H", "X-Forwarded-For: 203.0.113.9"
        )
        assert status == 200, body
        assert body["results"][0]["predictions"][0]["class_id"] in CAT_CLASSES
        assert body["request_id"] == headers["x-request-id"] == rid  # one id end to end
        outcomes.append(rid)
    assert set(upstream_ports(log)) == {str(r.port) for r in cluster["replicas"]}
    rows = [row for row in facts(db) if row[0] in outcomes]
    assert Counter(row[0] for row in rows) == Counter(outcomes)
    # The address nginx saw, not the proxy's, nor the one the client forged.
    assert {row[2] for row in rows} == {CLIENT_ADDRESS}


@pytest.mark.slow
def test_a_big_photo_is_buffered_and_passed_through(cluster, photos):
    import io

    buf = io.BytesIO()
    photos["chelsea"].resize((3000, 2000)).save(buf, "PNG")  # a few MB: spills to a temp file
    image = buf.getvalue()
    assert len(image) > 2_000_000
    status, _, body = curl(
        f"{cluster['base']}/api/v1/predict?top_k=1",
        "-H",
        "Content-Type: image/png",
        "--data-binary",
        "@-",
        data=image,
    )
    assert status == 200, body
    assert body["results"][0]["predictions"][0]["class_id"] in CAT_CLASSES


@pytest.mark.slow
def test_oversized_body_is_refused_by_nginx_in_the_apps_shape(cluster, tmp_path):
    limit = Settings.model_fields["max_upload_bytes"].default
    big = tmp_path / "big.jpg"
    with open(big, "wb") as fh:
        fh.truncate(limit + 1)
    before = len(access_log(cluster["log"]))
    status, headers, body = curl(
        f"{cluster['base']}/api/v1/predict",
        "-H",
        "Content-Type: image/jpeg",
        "--data-binary",
        f"@{big}",
    )
    assert status == 413
    assert body["error"]["code"] == "payload_too_large"
    # Word for word what the app says at the same limit.
    assert body["error"]["message"] == f"the request body exceeds the limit of {limit:,} bytes"
    assert body["error"]["request_id"] == headers["x-request-id"]
    # By request id: the previous request's line may be written after `before` was taken.
    (entry,) = logged(cluster["log"], headers["x-request-id"], before)
    assert entry["status"] == 413 and not entry["upstream"]


@pytest.mark.slow
def test_a_killed_replica_is_skipped_and_rejoins_after_restart(cluster, cat_jpeg):
    base, db, log = cluster["base"], cluster["db"], cluster["log"]
    victim, survivor = cluster["replicas"]
    victim.kill()  # SIGKILL to its whole process group: master and worker gone at once
    mark = len(access_log(log))
    ids = []
    for _ in range(10):
        status, _, body = post_image(base, cat_jpeg)
        assert status == 200, body  # connection refused: safely retried on the survivor
        ids.append(body["request_id"])
    answered = upstream_ports(log, mark)
    assert set(answered) == {str(survivor.port)}
    counts = Counter(row[0] for row in facts(db))
    assert all(counts[rid] == 1 for rid in ids)

    victim.start().wait_ready()
    # nginx leaves a failed replica alone for fail_timeout (5 s), then tries it again.
    mark = len(access_log(log))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and str(victim.port) not in upstream_ports(log, mark):
        status, _, body = post_image(base, cat_jpeg)
        assert status == 200, body
        time.sleep(0.5)
    assert str(victim.port) in upstream_ports(log, mark)


def test_nginx_conf_has_no_local_paths():
    # Reused as is by Compose and by a local cluster: nothing machine-specific inside.
    conf = (NGINX_DIR / "nginx.conf").read_text()
    assert str(REPO) not in conf
    assert "127.0.0.1" not in conf
