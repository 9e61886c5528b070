"""Take a backup in a short-lived child process, for callers that must stay small (the API).

A backup reads every page of the warehouse, checks the copy and compresses it: tens of
megabytes of native buffers (SQLite's page cache, zstd's window and tables). Freed
inside a long-lived gunicorn worker, glibc keeps much of that memory in the worker's
arenas, and the soak test saw worker RSS climb a few megabytes with every backup taken
through ``POST /api/v1/admin/backups`` (docs/RELIABILITY.md, "Soak"). In a child that
exits afterwards, all of it goes back to the system, and the compression's CPU time is
not spent under the worker's GIL.

The child is spawned (never forked: the worker has threads, connection pools and
ONNX Runtime sessions that a fork would copy half-way through their work). Errors come
back as the same typed ``BackupError`` the in-process call raises, so the API maps them
to the same statuses.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from imgclass.config import Settings
from imgclass.warehouse.backup import Backups, Manifest
from imgclass.warehouse.backup_errors import BackupError


def _create(settings: Settings, destination: str | None) -> dict:
    # Runs in the child: its own engine on the same database (Backups without one).
    return Backups(settings).create(destination).to_json()


def create_in_child(settings: Settings, destination: str | None = None) -> Manifest:
    """``Backups(settings).create(destination)``, run in a fresh process; the manifest."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as child:
        try:
            manifest = child.submit(_create, settings, destination).result()
        except BrokenProcessPool as exc:
            raise BackupError(f"the backup process died before it finished: {exc}") from exc
    return Manifest.model_validate(manifest)
