"""prometheus_client's multiprocess mode under gunicorn: each server's directory and its upkeep.

Every gunicorn worker is a separate process with its own metric values. In
multiprocess mode prometheus_client keeps each process's values in small mmap
files (``<kind>_<pid>.db``) in one directory, and ``/metrics`` merges them all,
so any worker can answer a scrape with the totals of the whole server.

prometheus_client decides between per-process and multiprocess values once,
when it is first imported, from ``PROMETHEUS_MULTIPROC_DIR``. So :func:`enable`
must run before anything imports it (``imgclass.ops.metrics`` does, and the app
imports that), which is why this module does not import prometheus_client at
the top, and why ``server.serve`` calls it in the gunicorn master, which never
imports the app: the workers it forks import it, in multiprocess mode.

One directory belongs to one server. Several servers may share a data dir
(SQLite takes writers from several processes), and a server that merged or
emptied another's files would report its traffic, or lose its own. So the
master holds an exclusive ``flock`` on a lock file in its directory for as long
as it (or a worker it forked) lives: :func:`claim` refuses a directory whose
lock is held, and :func:`own_directory` gives each server a directory named
after its pid, after removing those whose lock nobody holds any more (their
servers died without cleaning up). The lock, not the pid, says whether a
directory is in use, so a pid reused by an unrelated process changes nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sys
from pathlib import Path

from imgclass.ops import class_labels

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"
# The files prometheus_client writes: counter_<pid>.db, gauge_livesum_<pid>.db, histogram_<pid>.db …
_METRIC_FILE = re.compile(r"^(counter|histogram|summary|gauge_[a-z]+)_\d+\.db$")
LOCK_FILE = "imgclass-server.lock"
# Other files of one server's run, shared by its processes: emptied and removed with it.
SERVER_FILES = (class_labels.FILE_NAME,)

_directory: Path | None = None  # where this process's metrics go (multiprocess mode)
_claimed: Path | None = None  # the directory this server holds the lock of
_lock_fd: int | None = None
_owner_pid: int | None = None


class DirectoryInUse(RuntimeError):
    """Another live server holds the metrics directory."""


def claim(directory: Path) -> Path:
    """Make ``directory`` this server's: create it and hold its lock until exit.

    Raises :class:`DirectoryInUse` when another live server holds it. The lock
    is inherited by the workers the server forks, so a directory stays in use
    while any process of its server lives.
    """
    global _claimed, _lock_fd, _owner_pid
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    for _attempt in range(20):
        fd = _open_locked(path)
        if fd is not None:
            break
    else:  # pragma: no cover - the lock file kept changing under us
        raise DirectoryInUse(f"could not lock the metrics directory {directory}")
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _claimed, _lock_fd, _owner_pid = directory, fd, os.getpid()
    return directory


def _open_locked(path: Path) -> int | None:
    """An fd holding the lock on ``path`` (created if absent); None to try again."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return _create_locked(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DirectoryInUse(
            f"the metrics directory {path.parent} is in use by another imgclass server "
            f"(pid {owner}); give each server its own IMGCLASS_METRICS_DIR, or leave it "
            "unset for one per server"
        ) from None
    if not _same_file(fd, path):  # removed (stale) or replaced since we opened it
        os.close(fd)
        return None
    return fd


def _create_locked(path: Path) -> int | None:
    # Locked before it gets its name, so nobody can find the file unlocked and take it
    # for a dead server's; link() fails if another server named its own file first.
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        os.link(temp, path)
    except FileExistsError:
        os.close(fd)
        return None
    finally:
        temp.unlink(missing_ok=True)
    return fd


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def own_directory(prefix: Path) -> Path:
    """Claim ``<prefix>-<pid>`` for this server, after removing dead servers' directories."""
    remove_stale(prefix)
    return claim(prefix.with_name(f"{prefix.name}-{os.getpid()}"))


def remove_stale(prefix: Path) -> list[Path]:
    """Remove the ``<prefix>-<pid>`` directories no live server holds; return them."""
    removed = []
    pattern = re.compile(re.escape(prefix.name) + r"-(\d+)$")
    try:
        entries = list(prefix.parent.iterdir())
    except FileNotFoundError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match and entry.is_dir() and _remove_if_dead(entry, int(match.group(1))):
            removed.append(entry)
    return removed


def _remove_if_dead(directory: Path, pid: int) -> bool:
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        # No lock file: a server between creating the directory and locking it, or one
        # that died right there. Only then does the pid in the name decide.
        if _pid_alive(pid):
            return False
        _empty(directory)
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False  # its server (or a worker it forked) still runs
    try:
        _empty(directory)  # while holding the lock, so no server can claim it meanwhile
    finally:
        os.close(fd)
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    return True


def _empty(directory: Path) -> None:
    """Remove a dead run's files from ``directory``, and the directory if that empties it."""
    _remove_files(directory)
    (directory / LOCK_FILE).unlink(missing_ok=True)
    for temp in directory.glob(f".{LOCK_FILE}.*"):  # a server that died while claiming
        temp.unlink(missing_ok=True)
    # Kept if something else lives there (or it is a mount point).
    with contextlib.suppress(OSError):
        directory.rmdir()


def enable(directory: Path) -> Path:
    """Use ``directory`` for this process and every process forked from it, emptied first.

    Files left by an earlier run are removed (their processes are gone, and a
    counter must start from zero with the server). Only prometheus_client's own
    files and ``SERVER_FILES`` are touched, so a directory shared with other
    things is safe. Call :func:`claim` or :func:`own_directory` first.
    """
    global _directory
    if "prometheus_client" in sys.modules and os.environ.get(ENV_VAR) != str(directory):
        # Its value class is already chosen: every worker would count on its own
        # and /metrics would show whichever worker answered.
        raise RuntimeError(
            "prometheus_client was imported before the metrics directory was set up; "
            "import the app only after imgclass.ops.multiproc.enable()"
        )
    directory.mkdir(parents=True, exist_ok=True)
    _remove_files(directory)
    # prometheus_client reads the directory from the environment, in this
    # process and in the forked workers; there is no other way to hand it over.
    os.environ[ENV_VAR] = str(directory)
    _directory = directory
    return directory


def cleanup() -> None:
    """Remove this server's files and lock, and the directory if that empties it.

    Called by the master at exit: nothing reads them after, and the default
    directory is in memory (/dev/shm). A no-op in any other process (a worker
    leaving through the same code path, say).
    """
    global _claimed, _lock_fd, _owner_pid
    if _claimed is None or _owner_pid != os.getpid():
        return
    _remove_files(_claimed)
    # The name goes first, the lock after: a server starting meanwhile either finds the
    # file locked (and refuses) or finds none and makes its own.
    (_claimed / LOCK_FILE).unlink(missing_ok=True)
    os.close(_lock_fd)
    with contextlib.suppress(OSError):
        _claimed.rmdir()
    _claimed, _lock_fd, _owner_pid = None, None, None


def _remove_files(directory: Path) -> None:
    """Remove a run's metric files and shared files (never the lock)."""
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return
    for entry in entries:
        if _METRIC_FILE.match(entry.name) or entry.name in SERVER_FILES:
            entry.unlink(missing_ok=True)


def directory() -> Path | None:
    """The multiprocess directory, or None when this process counts on its own."""
    return _directory


def server_file(name: str) -> Path | None:
    """A file (one of ``SERVER_FILES``) the server's processes share, None outside ``serve``."""
    if name not in SERVER_FILES:
        raise ValueError(f"{name!r} is not one of {SERVER_FILES}: it would outlive its server")
    return None if _directory is None else _directory / name


def worker_exited(pid: int) -> None:
    """Drop an exited worker's live gauges (in-flight images, readiness, …).

    Its counters and histograms stay: what it counted still happened. Called
    from gunicorn's ``child_exit`` hook in the master process.
    """
    if _directory is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(_directory))
