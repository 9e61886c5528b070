"""A real cluster on one machine: N replicas behind nginx, on PostgreSQL and Redis, with Prometheus.

    python -m scripts.cluster up [--replicas N]      # foreground; Ctrl-C stops everything
    python -m scripts.cluster up --detach            # in the background ...
    python -m scripts.cluster down                   # ... until this

(`make cluster` / `make cluster-down`.) What runs, each in its own process group:

- N ``imgclass serve`` processes on 127.0.0.1:8001…800N, one gunicorn worker each, sharing
  one PostgreSQL database (created if missing), Redis (result cache, rate-limit counters),
  one admin key and one IP-hash key;
- Debian's nginx on 127.0.0.1:8080 with deploy/nginx/nginx.conf as shipped, next to the two
  files it includes (the replicas, the listen address), written for this run;
- Prometheus on 127.0.0.1:9090 with deploy/prometheus/prometheus.yml and alerts.yml, its
  targets replaced by the replicas (no Alertmanager locally: alerts show in its UI).

Run state (configs, logs, keys, Prometheus' data, the pids of a detached run) lives in
``.cluster/`` (git-ignored). The tests start the same :class:`Cluster` on free ports.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
NGINX_DIR = REPO / "deploy" / "nginx"
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RUN_DIR = REPO / ".cluster"
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/imgclass_cluster"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
NGINX_SERVER_PARAMS = "max_fails=1 fail_timeout=5s"
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30


class ClusterError(RuntimeError):
    """The cluster could not start (a port taken, a binary missing, a replica that died)."""


# --- configuration files --------------------------------------------------------------------


def write_nginx_dir(
    run_dir: Path, upstreams: list[str], listen: str, server_params: str = NGINX_SERVER_PARAMS
) -> Path:
    """``run_dir`` with nginx.conf as shipped plus the replicas and the listen address it includes.

    Start it with ``nginx -p RUN_DIR/ -c RUN_DIR/nginx.conf -g 'daemon off;'``. The directory
    is made world-traversable: nginx started as root runs its workers as ``nobody``, and they
    write request bodies into temp directories under it.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o755)
    shutil.copy(NGINX_DIR / "nginx.conf", run_dir / "nginx.conf")
    lines = [f"server {address} {server_params};" for address in upstreams]
    (run_dir / "upstream-servers.conf").write_text("\n".join(lines) + "\n")
    (run_dir / "listen.conf").write_text(f"listen {listen};\n")
    return run_dir


def write_prometheus_config(
    out_dir: Path, targets: list[str], scrape_interval: str | None = None
) -> Path:
    """deploy/prometheus/prometheus.yml with ``targets`` as the imgclass job's, in ``out_dir``.

    The shipped alert rules are loaded from the repository; the Alertmanager section is
    dropped (none runs locally). ``scrape_interval`` shortens every interval (tests).
    """
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    config.pop("alerting", None)
    if scrape_interval:
        config["global"].update(
            scrape_interval=scrape_interval,
            scrape_timeout=scrape_interval,
            evaluation_interval=scrape_interval,
        )
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": targets}]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def ensure_database(url: str) -> bool:
    """Create the PostgreSQL database of ``url`` if it does not exist; True if it was created."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.get_backend_name().startswith("postgresql"):
        return False
    params = {
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 5432,
        "user": parsed.username or "postgres",
        "dbname": "postgres",
        "connect_timeout": 5,
    }
    if parsed.password:
        params["password"] = parsed.password
    try:
        with psycopg.connect(**params, autocommit=True) as admin:
            exists = admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (parsed.database,)
            ).fetchone()
            if exists:
                return False
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(parsed.database)))
            return True
    except psycopg.OperationalError as exc:
        raise ClusterError(
            f"PostgreSQL at {params['host']}:{params['port']} is not reachable ({exc}); "
            "start it with scripts/start-services.sh"
        ) from exc


def check_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except (redis.RedisError, OSError) as exc:
        raise ClusterError(
            f"Redis at {url} is not reachable ({exc}); start it with scripts/start-services.sh"
        ) from exc


def find_binary(name: str, package: str) -> str:
    found = shutil.which(name)
    if not found:
        raise ClusterError(f"{name} is not installed: apt-get install {package}")
    return found


def port_is_free(host: str, port: int) -> bool:
    """Nothing listens there (connections of a stopped run in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn and nginx bind
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def read_or_create_secret(path: Path, make) -> str:
    """A secret kept across runs in a 0600 file (the database keeps what it was given)."""
    if path.is_file():
        return path.read_text().strip()
    value = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def cluster_admin_name(run_dir: Path) -> str:
    """The admin that holds a run directory's key when the database had an admin before it."""
    digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:8]
    return f"cluster-{digest}"


def ensure_admin_key(database_url: str, key: str, run_dir: Path) -> str:
    """Make ``key`` an active admin key of the database; returns the admin's name.

    The replicas give ``IMGCLASS_ADMIN_KEY`` only to the first admin of an empty database.
    A database that already has one (the run directory's key file was deleted, or another
    checkout uses the same database) would leave the key printed for this run unknown, so it
    goes to an admin of this run directory's own, created the first time and given the new
    key when the key file was made again (its old key went with the file).
    """
    from imgclass.warehouse.db import make_engine
    from imgclass.warehouse.users import UserError, UserStore

    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        users = UserStore(engine)
        account = users.authenticate(key)
        if account is not None and account.is_admin:
            return account.username
        name = cluster_admin_name(run_dir)
        try:
            users.add(name, admin=True, key=key)
        except UserError:  # made by an earlier run of this directory
            users.rotate_key(name, key)
        return name
    finally:
        engine.dispose()


def http_status(url: str, timeout: float = 2) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def prometheus_page(base: str, page: str) -> str:
    """The address of a Prometheus UI page, as this server's version serves it.

    Prometheus 3 serves its pages at ``/<page>``. Debian's 2.x package ships only the
    classic UI, at ``/classic/<page>``, and answers 404 for ``/<page>``.
    """
    for url in (f"{base}/{page}", f"{base}/classic/{page}"):
        if http_status(url) == 200:
            return url
    return f"{base}/"  # redirects to whichever UI there is


# --- processes ------------------------------------------------------------------------------


@dataclass
class Service:
    """One process of the cluster, in its own process group, its output in a log file.

    Its own session: Ctrl-C in the terminal reaches only the supervisor, which then stops
    the services in order, and a kill reaches a server's master and workers together.
    """

    name: str
    args: list[str]
    log: Path
    env: dict[str, str] | None = None
    errors: Path | None = None  # stderr apart from stdout (nginx: its access log is stdout)
    proc: subprocess.Popen | None = None

    def start(self) -> Service:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out, open(self.errors or os.devnull, "ab") as err:
            self.proc = subprocess.Popen(
                self.args,
                env=self.env,
                stdout=out,
                stderr=err if self.errors else subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            text = (self.errors or self.log).read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """``sig`` to the whole process group (a server's master and its workers at once)."""
        if self.proc is None:
            return
        with _gone():
            os.killpg(self.proc.pid, sig)
        self.proc.wait(timeout=STOP_TIMEOUT_S)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM to the leader (gunicorn drains its workers), SIGKILL to the group on timeout."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout_s)
        # Anything left in the group (a worker that outlived its master) goes too.
        with _gone():
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(timeout=timeout_s)
        return self.proc.returncode


def _gone():
    """Signalling a process that is already gone (or reaped) is not an error here."""
    return contextlib.suppress(ProcessLookupError, PermissionError)


@dataclass
class ClusterSpec:
    """Where everything runs. The defaults are `make cluster`'s; tests pass free ports."""

    run_dir: Path = RUN_DIR
    replicas: int = 3
    host: str = "127.0.0.1"
    nginx_port: int = 8080
    replica_ports: list[int] = field(default_factory=list)  # default: 8001, 8002, …
    prometheus_port: int = 9090
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = DEFAULT_REDIS_URL  # None: per-worker cache and limits (benchmarks)
    model_dir: Path = REPO / "models"
    monitoring: bool = True  # start Prometheus
    scrape_interval: str | None = None  # default: the shipped prometheus.yml's
    env: dict[str, str] = field(default_factory=dict)  # more IMGCLASS_* for every replica

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ClusterError("at least one replica")
        if not self.replica_ports:
            self.replica_ports = [8001 + i for i in range(self.replicas)]
        if len(self.replica_ports) != self.replicas:
            raise ClusterError("one port per replica")


class Cluster:
    """Start, inspect and stop the cluster described by a :class:`ClusterSpec`."""

    def __init__(self, spec: ClusterSpec):
        self.spec = spec
        self.run_dir = spec.run_dir.resolve()
        self.logs = self.run_dir / "logs"
        self.admin_key = ""
        self.admin_user = ""
        self.prometheus_targets = ""  # the UI's targets page, once Prometheus runs
        self.replicas: list[Service] = []
        self.nginx: Service | None = None
        self.prometheus: Service | None = None

    # Addresses -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.spec.host}:{self.spec.nginx_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.spec.host}:{self.spec.prometheus_port}"

    def replica_address(self, index: int) -> str:
        return f"{self.spec.host}:{self.spec.replica_ports[index]}"

    @property
    def access_log(self) -> Path:
        return self.logs / "nginx-access.log"

    # Lifecycle -------------------------------------------------------------------------

    def start(self) -> Cluster:
        try:
            self._prepare()
            for index in range(self.spec.replicas):
                self.replicas.append(self._replica(index).start())
            # Together: the first to migrate holds an advisory lock, the others wait for it.
            for index in range(self.spec.replicas):
                self.wait_ready(index)
            # Migrated, and the first admin (if the database had none) holds the key.
            self.admin_user = ensure_admin_key(self.spec.database_url, self.admin_key, self.run_dir)
            self.nginx = self._nginx().start()
            self._wait(self.nginx, lambda: _connects(self.spec.host, self.spec.nginx_port))
            if self.spec.monitoring:
                self.prometheus = self._prometheus().start()
                self._wait(
                    self.prometheus, lambda: http_status(self.prometheus_url + "/-/ready") == 200
                )
                self.prometheus_targets = prometheus_page(self.prometheus_url, "targets")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Prometheus, then nginx (no new requests), then the replicas (they drain)."""
        for service in (self.prometheus, self.nginx):
            if service is not None:
                service.stop()
        for replica in self.replicas:
            replica.stop()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def kill_replica(self, index: int, sig: int = signal.SIGKILL) -> None:
        """``sig`` to a replica's process group; returns once its port refuses connections.

        Until the last worker holding the listening socket is gone the kernel still completes
        handshakes on it: a dying replica, not a dead one.
        """
        self.replicas[index].kill(sig)
        host, port = self.spec.host, self.spec.replica_ports[index]
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _connects(host, port):
            if time.monotonic() > deadline:
                raise ClusterError(f"replica {index + 1} still accepts connections on {port}")
            time.sleep(0.05)

    def restart_replica(self, index: int) -> None:
        self.replicas[index] = self._replica(index).start()
        self.wait_ready(index)

    def revive(self) -> list[str]:
        """Restart every replica whose process has exited; the names of those restarted.

        What a process manager (Compose's restart policy, a Deployment) does; the foreground
        `make cluster` calls it twice a second, so a replica that dies rejoins by itself.
        """
        revived = []
        for index, replica in enumerate(self.replicas):
            if not replica.running():
                self.restart_replica(index)
                revived.append(replica.name)
        return revived

    def wait_ready(self, index: int) -> None:
        url = f"http://{self.replica_address(index)}/readyz"
        self._wait(self.replicas[index], lambda: http_status(url) == 200)

    def pids(self) -> dict[str, int]:
        services = [*self.replicas, self.nginx, self.prometheus]
        return {s.name: s.pid for s in services if s is not None and s.pid}

    # Internals -------------------------------------------------------------------------

    def _prepare(self) -> None:
        spec = self.spec
        ports = [*spec.replica_ports, spec.nginx_port]
        if spec.monitoring:
            ports.append(spec.prometheus_port)
        taken = [port for port in ports if not port_is_free(spec.host, port)]
        if taken:
            raise ClusterError(f"port(s) already in use on {spec.host}: {taken}")
        if not any(spec.model_dir.glob("*-fp32.onnx")):
            raise ClusterError(f"no exported model in {spec.model_dir}: run `make install`")
        self.nginx_bin = find_binary("nginx", "nginx")
        if spec.monitoring:
            self.prometheus_bin = find_binary("prometheus", "prometheus")
        if spec.redis_url:
            check_redis(spec.redis_url)
        ensure_database(spec.database_url)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o755)
        self.logs.mkdir(exist_ok=True)
        # Kept across runs: the database remembers the admin that holds it (ensure_admin_key).
        self.admin_key = read_or_create_secret(
            self.run_dir / "admin-key", lambda: "imgc_" + secrets.token_urlsafe(32)
        )
        # One key for every replica, or each would hash the same client differently.
        self.ip_hash_key = read_or_create_secret(
            self.run_dir / "ip-hash-key", lambda: secrets.token_hex(32)
        )
        upstreams = [self.replica_address(i) for i in range(spec.replicas)]
        write_nginx_dir(self.run_dir / "nginx", upstreams, f"{spec.host}:{spec.nginx_port}")
        write_prometheus_config(self.run_dir / "prometheus", upstreams, spec.scrape_interval)

    def _replica(self, index: int) -> Service:
        from imgclass.config import available_cpus

        spec = self.spec
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("IMGCLASS_") and k != "PROMETHEUS_MULTIPROC_DIR"
        }
        env.update(
            IMGCLASS_HOST=spec.host,
            IMGCLASS_PORT=str(spec.replica_ports[index]),
            IMGCLASS_DATA_DIR=str(self.run_dir / f"replica-{index + 1}"),
            IMGCLASS_MODEL_DIR=str(spec.model_dir),
            IMGCLASS_DATABASE_URL=spec.database_url,
            IMGCLASS_ADMIN_KEY=self.admin_key,
            IMGCLASS_IP_HASH_KEY=self.ip_hash_key,
            IMGCLASS_TRUSTED_PROXIES="1",  # nginx: the client is its X-Forwarded-For
            IMGCLASS_WORKERS="1",
            # The machine's CPUs shared out between the replicas, as one worker per CPU
            # would within one server: more inference threads than cores only contend.
            IMGCLASS_INFERENCE_THREADS=str(max(1, available_cpus() // spec.replicas)),
        )
        if spec.redis_url:
            env["IMGCLASS_REDIS_URL"] = spec.redis_url
        env.update(spec.env)
        imgclass = str(Path(sys.executable).parent / "imgclass")
        return Service(
            f"replica-{index + 1}", [imgclass, "serve"], self.logs / f"replica-{index + 1}.log", env
        )

    def _nginx(self) -> Service:
        nginx_dir = self.run_dir / "nginx"
        args = [self.nginx_bin, "-p", f"{nginx_dir}/", "-c", str(nginx_dir / "nginx.conf")]
        check = subprocess.run([*args, "-t"], capture_output=True, text=True)
        if check.returncode != 0:
            raise ClusterError(f"nginx -t failed:\n{check.stderr}")
        # Access log (JSON lines) on stdout, errors on stderr: each into a file of its own.
        return Service(
            "nginx",
            [*args, "-g", "daemon off;"],
            self.access_log,
            errors=self.logs / "nginx-error.log",
        )

    def _prometheus(self) -> Service:
        directory = self.run_dir / "prometheus"
        args = [
            self.prometheus_bin,
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address={self.spec.host}:{self.spec.prometheus_port}",
        ]
        return Service("prometheus", args, self.logs / "prometheus.log")

    def _wait(self, service: Service, ready, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if not service.running():
                raise ClusterError(f"{service.name} exited:\n{service.tail()}")
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"{service.name} not ready after {timeout_s}s:\n{service.tail()}"
                )
            time.sleep(0.2)


def _connects(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


# --- command line ---------------------------------------------------------------------------


def _state_path(run_dir: Path) -> Path:
    return run_dir / "state.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _running_state(run_dir: Path) -> dict[str, int]:
    """The pids of a detached run that are still alive (empty if none)."""
    path = _state_path(run_dir)
    if not path.is_file():
        return {}
    pids = json.loads(path.read_text())["pids"]
    return {name: pid for name, pid in pids.items() if _alive(pid)}


def summary(cluster: Cluster) -> str:
    spec = cluster.spec
    replicas = ", ".join(f"http://{cluster.replica_address(i)}" for i in range(spec.replicas))
    if cluster.prometheus_targets:
        api = f"{cluster.prometheus_url}/api/v1/targets"
        prometheus = f"{cluster.prometheus_targets}  (API: {api})"
    else:
        prometheus = "not started"
    return "\n".join(
        [
            f"imgclass cluster: {spec.replicas} replica(s) behind nginx",
            f"  app (nginx)   {cluster.url}/",
            f"  replicas      {replicas}",
            f"  prometheus    {prometheus}",
            f"  database      {spec.database_url}",
            f"  redis         {spec.redis_url or 'none (per-worker cache and limits)'}",
            f"  admin key     {cluster.admin_key}  (user {cluster.admin_user})",
            f"  logs          {cluster.logs}/",
            f"  try           curl -F image=@samples/cat.jpg {cluster.url}/api/v1/predict",
        ]
    )


def cmd_up(args: argparse.Namespace) -> int:
    run_dir = args.run_dir.resolve()
    if _running_state(run_dir):
        print(f"a cluster is already running from {run_dir}: stop it with `make cluster-down`")
        return 1
    spec = ClusterSpec(
        run_dir=run_dir,
        replicas=args.replicas,
        nginx_port=args.port,
        replica_ports=[args.first_replica_port + i for i in range(args.replicas)],
        prometheus_port=args.prometheus_port,
        database_url=args.database_url,
        redis_url=args.redis_url,
    )
    cluster = Cluster(spec)
    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    print(f"starting {spec.replicas} replica(s), nginx and Prometheus …", flush=True)
    try:
        cluster.start()
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if args.detach:
        _state_path(run_dir).write_text(json.dumps({"pids": cluster.pids()}, indent=2))
        print(summary(cluster))
        print("running in the background: stop it with `make cluster-down`")
        return 0
    print(summary(cluster))
    print("Ctrl-C stops the cluster.", flush=True)
    reported: set[str] = set()
    try:
        while not stopping:
            for service in [*cluster.replicas, cluster.nginx, cluster.prometheus]:
                if service and not service.running() and service.name not in reported:
                    reported.add(service.name)
                    print(f"{service.name} exited ({service.proc.returncode}); see {service.log}")
            try:
                for name in cluster.revive():
                    reported.discard(name)
                    print(f"{name} restarted", flush=True)
            except ClusterError as exc:  # it died again while starting: try again later
                print(f"could not restart a replica: {exc}", flush=True)
                time.sleep(5)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
    print("\nstopping …", flush=True)
    cluster.stop()
    print("stopped.")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    run_dir = args.run_dir.resolve()
    running = _running_state(run_dir)
    if not running:
        print("no detached cluster is running")
        _state_path(run_dir).unlink(missing_ok=True)
        return 0
    # Same order as Cluster.stop: Prometheus, nginx, then the replicas drain.
    order = sorted(running, key=lambda n: (n != "prometheus", n != "nginx", n))
    for name in order:
        pid = running[name]
        with _gone():
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        with _gone():
            os.killpg(pid, signal.SIGKILL)  # its session's leftovers (gunicorn workers)
        print(f"stopped {name}")
    _state_path(run_dir).unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.cluster", description=__doc__)
    parser.add_argument(
        "--run-dir", type=Path, default=RUN_DIR, help="run state (default .cluster)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the cluster (foreground unless --detach)")
    up.add_argument("--replicas", type=int, default=3)
    up.add_argument("--port", type=int, default=8080, help="nginx's port")
    up.add_argument("--first-replica-port", type=int, default=8001)
    up.add_argument("--prometheus-port", type=int, default=9090)
    up.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    up.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    up.add_argument("--detach", action="store_true", help="start, then return")
    sub.add_parser("down", help="stop a cluster started with --detach")
    args = parser.parse_args(argv)
    if getattr(args, "replicas", 1) < 1:
        parser.error("--replicas must be at least 1")
    return cmd_up(args) if args.command == "up" else cmd_down(args)


if __name__ == "__main__":
    sys.exit(main())
