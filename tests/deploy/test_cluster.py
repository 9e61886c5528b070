"""The local cluster for real: three replicas behind nginx, PostgreSQL, Redis, Prometheus.

Started by the same code as `make cluster` (scripts/cluster.py), on free ports with a
throwaway PostgreSQL database. Client threads post images through nginx, each request with
its own X-Request-ID; mid-load one replica is SIGKILLed (master and worker at once) and
later restarted. Then what a user and an operator would check:

- nginx kept answering: requests that could not reach the dead replica went to the others;
  only requests already inside it when it died may fail, as nginx's JSON 503;
- every 2xx has exactly one fact row (by request id), and a failed request at most one;
- no dimension row exists twice under its natural key (three processes raced to create them);
- Prometheus scraped every replica (``up`` is 1 for each) and saw each one serve requests.
"""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine, text

from scripts.cluster import Cluster, ClusterError, ClusterSpec, check_redis, http_status
from tests.support.postgres import temporary_database
from tests.support.servers import free_port
from tests.support.system import IN_CI, require_binary

pytestmark = pytest.mark.slow

PREDICT = "/api/v1/predict"
REDIS_URL = "redis://127.0.0.1:6379/0"
CLIENT_THREADS = 6
MAX_REQUESTS_PER_THREAD = 600  # a bound on the load whatever happens …
PAUSE_S = 0.05  # … and a pace: cache hits would otherwise use the cap up within seconds
PHASE_TIMEOUT_S = 40
DEAD_FOR_S = 8
# Natural keys of the dimensions: what get-or-create looks a row up by.
NATURAL_KEYS = {
    "user_dim": ("user_id", "ip_address", "user_agent"),
    "image_dim": ("image_id", "image_filename"),
    "class_dim": ("class_id",),
    "model_dim": ("model_name", "model_version", "sha256"),
    "time_dim": ("minute_start",),
}


def require_redis() -> None:
    try:
        check_redis(REDIS_URL)
    except ClusterError as exc:
        if IN_CI:
            pytest.fail(f"{exc} (CI must run this test)")
        pytest.skip(str(exc))


def distinct_free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return list(ports)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, model_dir):
    require_binary("nginx", "nginx")
    require_binary("prometheus", "prometheus")
    require_redis()
    with temporary_database() as database_url:
        *replica_ports, nginx_port, prometheus_port = distinct_free_ports(5)
        spec = ClusterSpec(
            run_dir=tmp_path_factory.mktemp("cluster"),
            replicas=3,
            nginx_port=nginx_port,
            replica_ports=replica_ports,
            prometheus_port=prometheus_port,
            database_url=database_url,
            redis_url=REDIS_URL,
            model_dir=model_dir,
            scrape_interval="1s",
            env={
                # All the load comes from one address; the limits have tests of their own.
                "IMGCLASS_RATE_LIMIT_PER_IP": "",
                "IMGCLASS_RATE_LIMIT_PER_KEY": "",
                "IMGCLASS_DRIFT_INTERVAL_S": "0",
            },
        )
        with Cluster(spec) as running:
            yield running
            for replica in running.replicas:
                assert "Traceback" not in replica.log.read_text(errors="replace"), replica.log


@pytest.fixture(scope="module")
def images(photos) -> list[bytes]:
    """Twelve different JPEGs: some requests share an image, so replicas race on image_dim."""
    out = []
    for name in ("chelsea", "coffee", "rocket"):
        photo = photos[name]
        for i in range(4):
            w, h = photo.size
            crop = photo.crop((i * 8, i * 6, w - i * 5, h - i * 7))
            buf = io.BytesIO()
            crop.convert("RGB").save(buf, "JPEG", quality=85)
            out.append(buf.getvalue())
    assert len(set(out)) == len(out)
    return out


@dataclass
class Outcome:
    request_id: str
    status: int | None  # None: no HTTP answer at all
    body: dict | None
    started: float
    ended: float
    error: str = ""


class Load:
    """Client threads posting through nginx until stopped (or their request cap)."""

    def __init__(self, base: str, images: list[bytes]):
        self.base, self.images = base, images
        self.outcomes: list[Outcome] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True)
            for n in range(CLIENT_THREADS)
        ]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=90)

    def count(self) -> int:
        with self.lock:
            return len(self.outcomes)

    def wait_for(self, more: int, what: str) -> None:
        target = self.count() + more
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while self.count() < target:
            if time.monotonic() > deadline or not self.running():
                pytest.fail(f"load stalled waiting for {what}")
            time.sleep(0.05)

    def _run(self, n: int) -> None:
        for i in range(MAX_REQUESTS_PER_THREAD):
            if self.stopping.is_set():
                return
            outcome = self._post(self.images[(n * 7 + i) % len(self.images)])
            with self.lock:
                self.outcomes.append(outcome)
            self.stopping.wait(PAUSE_S)

    def running(self) -> bool:
        return all(t.is_alive() for t in self.threads)

    def _post(self, image: bytes) -> Outcome:
        request_id = f"cluster-{uuid.uuid4().hex}"
        req = urllib.request.Request(
            f"{self.base}{PREDICT}?top_k=1",
            data=image,
            headers={"Content-Type": "image/jpeg", "X-Request-ID": request_id},
        )
        started = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except OSError as exc:
            return Outcome(request_id, None, None, started, time.monotonic(), repr(exc))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        return Outcome(request_id, status, body, started, time.monotonic())


def access_log(cluster: Cluster) -> list[dict]:
    lines = cluster.access_log.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def prometheus_query(cluster: Cluster, expr: str) -> list[dict]:
    url = f"{cluster.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def by_instance(results: list[dict]) -> dict[str, float]:
    return {r["metric"]["instance"]: float(r["value"][1]) for r in results}


@pytest.fixture(scope="module")
def run(cluster, images):
    """The load with a replica killed and restarted in the middle; what happened, in order."""
    victim = 0
    victim_address = cluster.replica_address(victim)
    with Load(cluster.url, images) as load:
        load.wait_for(30, "traffic before the kill")
        killed_at = time.monotonic()
        cluster.kill_replica(victim)
        dead_at = time.monotonic()  # from here on, a connect to the victim is refused
        load.wait_for(30, "traffic while a replica is down")
        # Down for longer than nginx's fail_timeout (5 s), so that nginx tries the dead replica
        # again with live requests: each must be refused and go to another replica.
        time.sleep(max(0.0, dead_at + DEAD_FOR_S - time.monotonic()))
        cluster.restart_replica(victim)
        restarted_at = time.monotonic()
        mark = len(access_log(cluster))
        # nginx leaves a failed replica alone for fail_timeout (5 s), then tries it again.
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while not any(e["upstream"] == victim_address for e in access_log(cluster)[mark:]):
            if time.monotonic() > deadline or not load.running():
                pytest.fail("the restarted replica never got a request")
            time.sleep(0.2)
        load.wait_for(10, "traffic after the restart")
    return {
        "outcomes": load.outcomes,
        "killed_at": killed_at,
        "dead_at": dead_at,
        "restarted_at": restarted_at,
        "victim": victim_address,
    }


def test_nginx_kept_serving_while_a_replica_was_killed(cluster, run):
    outcomes = run["outcomes"]
    ok = [o for o in outcomes if o.status == 200]
    failed = [o for o in outcomes if o.status != 200]
    # Only what was inside the victim when it died may fail: one request per client thread
    # at most. A connect to the dead replica is refused and retried on another one.
    assert len(failed) <= CLIENT_THREADS, [(o.status, o.body, o.error) for o in failed]
    for outcome in failed:
        assert outcome.started < run["dead_at"], outcome  # sent before the replica was gone
        assert outcome.status == 503, outcome
        assert outcome.body["error"]["code"] == "upstream_unavailable"
        assert outcome.body["error"]["request_id"] == outcome.request_id
    for outcome in ok:
        assert outcome.body["request_id"] == outcome.request_id
        assert outcome.body["results"][0]["predictions"]
    during = [o for o in ok if run["killed_at"] < o.started and o.ended < run["restarted_at"]]
    assert len(during) >= 20  # the survivors answered while the victim was down
    print(f"{len(outcomes)} requests: {len(ok)} x 200, {len(failed)} failed at the kill")

    answered = Counter(e["upstream"] for e in access_log(cluster) if e["uri"].startswith(PREDICT))
    for index in range(len(cluster.replicas)):
        assert answered[cluster.replica_address(index)] > 0, answered


def test_every_success_has_exactly_one_fact_row(cluster, run):
    outcomes = run["outcomes"]
    engine = create_engine(cluster.spec.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT request_id, status_code FROM api_event_fact "
                    "WHERE request_id LIKE 'cluster-%'"
                )
            ).all()
    finally:
        engine.dispose()
    counts = Counter(request_id for request_id, _ in rows)
    sent = {o.request_id for o in outcomes}
    assert set(counts) <= sent  # nothing recorded that no client sent
    for outcome in outcomes:
        if outcome.status == 200:
            assert counts[outcome.request_id] == 1, outcome
        else:  # died before or after its commit: never twice
            assert counts[outcome.request_id] <= 1, outcome
    statuses = dict(rows)
    assert all(statuses[o.request_id] == 200 for o in outcomes if o.status == 200)


def test_no_dimension_row_is_duplicated(cluster, run):
    engine = create_engine(cluster.spec.database_url)
    try:
        with engine.connect() as conn:
            for table, key in NATURAL_KEYS.items():
                columns = ", ".join(key)
                duplicates = conn.execute(
                    text(
                        f"SELECT {columns}, COUNT(*) FROM {table} "
                        f"GROUP BY {columns} HAVING COUNT(*) > 1"
                    )
                ).all()
                assert duplicates == [], (table, duplicates)
            images = conn.execute(
                text("SELECT COUNT(DISTINCT image_key) FROM api_event_fact")
            ).scalar()
            users = conn.execute(text("SELECT COUNT(*) FROM user_dim")).scalar()
    finally:
        engine.dispose()
    assert images == 12  # the twelve test images, each once, whichever replica saw it first
    assert users == 1  # one client address and user agent behind nginx


def test_prometheus_saw_every_replica(cluster, run):
    addresses = {cluster.replica_address(i) for i in range(len(cluster.replicas))}
    served = 'sum by (instance) (imgclass_http_requests_total{job="imgclass", status="200"})'
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    while True:
        up = by_instance(prometheus_query(cluster, 'up{job="imgclass"}'))
        requests = by_instance(prometheus_query(cluster, served))
        # The restarted replica counts from zero again: it must have served since then too.
        if up == dict.fromkeys(addresses, 1.0) and all(requests.get(a, 0) > 0 for a in addresses):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"Prometheus: up={up}, requests served={requests}")
        time.sleep(0.5)


def test_a_replica_that_dies_is_restarted_and_rejoins(cluster, run):
    # What the foreground `make cluster` does twice a second (Cluster.revive).
    assert cluster.revive() == []
    name = cluster.replicas[1].name
    cluster.kill_replica(1)
    assert cluster.revive() == [name]
    assert http_status(f"http://{cluster.replica_address(1)}/readyz") == 200
    assert cluster.revive() == []
