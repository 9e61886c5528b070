"""prometheus_client's multiprocess mode under gunicorn: the shared directory and its upkeep.

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
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"
# The files prometheus_client writes: counter_<pid>.db, gauge_livesum_<pid>.db, histogram_<pid>.db …
_METRIC_FILE = re.compile(r"^(counter|histogram|summary|gauge_[a-z]+)_\d+\.db$")

_directory: Path | None = None


def enable(directory: Path) -> Path:
    """Use ``directory`` for this process and every process forked from it, emptied first.

    Files left by an earlier run are removed (their processes are gone, and a
    counter must start from zero with the server). Only prometheus_client's own
    files are touched, so a directory shared with other things is safe.
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
    """Remove this server's metric files, and the directory if that empties it.

    Called by the master at exit: nothing reads them after, and the default
    directory is in memory (/dev/shm).
    """
    if _directory is None:
        return
    _remove_files(_directory)
    # Kept if something else lives there (or it is a mount point).
    with contextlib.suppress(OSError):
        _directory.rmdir()


def _remove_files(directory: Path) -> None:
    for entry in directory.iterdir():
        if _METRIC_FILE.match(entry.name):
            entry.unlink(missing_ok=True)


def directory() -> Path | None:
    """The multiprocess directory, or None when this process counts on its own."""
    return _directory


def worker_exited(pid: int) -> None:
    """Drop an exited worker's live gauges (in-flight images, readiness, …).

    Its counters and histograms stay: what it counted still happened. Called
    from gunicorn's ``child_exit`` hook in the master process.
    """
    if _directory is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(_directory))
