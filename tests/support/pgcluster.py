"""Throwaway PostgreSQL servers for tests: one server, or a primary and its streaming replica.

Built from the PostgreSQL binaries on the machine (``/usr/lib/postgresql/*/bin``)
in a temporary directory, each on a free loopback port. The servers run as the
``postgres`` OS user (PostgreSQL refuses to run as root). ``single_server`` and
``primary_and_replica`` stop their servers and remove their files on exit, whatever
happened inside. A private server is one a test may stop and start at will (the
shared one on 127.0.0.1:5432 serves other tests in parallel).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

from tests.support.system import require_binary

OS_USER = "postgres"
REPLICATION_ROLE = "replicator"
READY_TIMEOUT_S = 60


def server_binaries() -> Path:
    """The newest installed PostgreSQL's bin directory (installs Debian's postgresql)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version)
    if not found:
        require_binary("pg_ctlcluster", "postgresql")
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version)
    return found[-1].parent


def _version(initdb: Path) -> float:
    try:
        return float(initdb.parent.parent.name)
    except ValueError:
        return 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_as_postgres(args: list[str]) -> str:
    """Run a PostgreSQL tool as the postgres OS user; its output, or an error with it."""
    command = args
    if os.geteuid() == 0:
        command = ["runuser", "-u", OS_USER, "--", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


class Server:
    """One PostgreSQL server: a data directory, a port, pg_ctl start/stop."""

    def __init__(self, bin_dir: Path, data_dir: Path, port: int):
        self.bin_dir, self.data_dir, self.port = bin_dir, data_dir, port
        self.log = data_dir.parent / f"{data_dir.name}.log"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=database, autocommit=True
        )

    def configure(self, settings: dict[str, str]) -> None:
        # Later lines win in postgresql.conf, so appending overrides what a copy inherited.
        lines = "".join(f"{key} = {value}\n" for key, value in settings.items())
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(lines)

    def start(self) -> None:
        try:
            self._pg_ctl("-l", str(self.log), "-w", "-t", str(READY_TIMEOUT_S), "start")
        except RuntimeError as exc:
            log = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{exc}\nserver log:\n{log}") from exc

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` ends every session (rolling back open transactions) and
        checkpoints; ``immediate`` kills the processes, like a crash (recovery at next start)."""
        if (self.data_dir / "postmaster.pid").exists():
            self._pg_ctl("-m", mode, "-w", "stop")

    @property
    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()

    def _pg_ctl(self, *args: str) -> None:
        run_as_postgres([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args])


def _private_root(cleanup: contextlib.ExitStack) -> Path:
    # Not under pytest's tmp_path: its parents are private to root, and the servers
    # run as postgres.
    root = Path(tempfile.mkdtemp(prefix="imgclass-pgcluster-"))
    cleanup.callback(shutil.rmtree, root, ignore_errors=True)
    owner = pwd.getpwnam(OS_USER)
    os.chown(root, owner.pw_uid, owner.pw_gid)
    return root


def _common_settings(root: Path) -> dict[str, str]:
    return {
        "listen_addresses": "'127.0.0.1'",
        "unix_socket_directories": f"'{root}'",
        "fsync": "off",  # a throwaway server: durability buys nothing here
        "shared_buffers": "'32MB'",
    }


def _initdb(bin_dir: Path, root: Path, name: str, settings: dict[str, str]) -> Server:
    server = Server(bin_dir, root / name, free_port())
    initdb = [str(bin_dir / "initdb"), "-D", str(server.data_dir), "-U", "postgres"]
    run_as_postgres([*initdb, "--auth=trust", "-E", "UTF8", "--no-sync"])
    server.configure({**_common_settings(root), "port": str(server.port), **settings})
    return server


@contextlib.contextmanager
def single_server(**settings: str) -> Iterator[Server]:
    """One running server of our own (``settings`` go to postgresql.conf)."""
    bin_dir = server_binaries()
    with contextlib.ExitStack() as cleanup:
        root = _private_root(cleanup)
        server = _initdb(bin_dir, root, "server", settings)
        cleanup.callback(server.stop)
        server.start()
        yield server


@contextlib.contextmanager
def primary_and_replica() -> Iterator[tuple[Server, Server]]:
    """A primary (wal_level=replica) and a hot-standby replica streaming from it."""
    bin_dir = server_binaries()
    with contextlib.ExitStack() as cleanup:
        root = _private_root(cleanup)
        primary = _initdb(
            bin_dir, root, "primary", {"wal_level": "replica", "max_wal_senders": "4"}
        )
        with (primary.data_dir / "pg_hba.conf").open("a") as hba:
            hba.write(f"host replication {REPLICATION_ROLE} 127.0.0.1/32 trust\n")
        cleanup.callback(primary.stop)
        primary.start()
        with primary.connect() as conn:
            conn.execute(f"CREATE ROLE {REPLICATION_ROLE} WITH REPLICATION LOGIN")

        replica = Server(bin_dir, root / "replica", free_port())
        # -R writes standby.signal and primary_conninfo: the copy starts as a streaming standby.
        source = ["-h", "127.0.0.1", "-p", str(primary.port), "-U", REPLICATION_ROLE]
        fast = ["-X", "stream", "--checkpoint=fast", "--no-sync"]
        run_as_postgres(
            [str(bin_dir / "pg_basebackup"), *source, "-D", str(replica.data_dir), "-R", *fast]
        )
        replica.configure({"port": str(replica.port), "hot_standby": "on"})
        cleanup.callback(replica.stop)
        replica.start()
        yield primary, replica


def wait_for_replay(primary: Server, replica: Server, timeout_s: float = 60) -> str:
    """Block until the replica has replayed everything the primary wrote so far."""
    with primary.connect() as conn:
        target = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    deadline = time.monotonic() + timeout_s
    with replica.connect() as conn:
        while True:
            done = conn.execute(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (str(target),)
            ).fetchone()[0]
            if done:
                return str(target)
            if time.monotonic() > deadline:
                raise TimeoutError(f"the replica did not replay up to {target} in {timeout_s}s")
            time.sleep(0.05)
