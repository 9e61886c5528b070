"""Serve the app with gunicorn: workers sized to the CPUs, one inference thread each.

The database is migrated and the first admin created before the workers fork,
so they start with ready storage and never race each other on it.

The gunicorn master never imports the app (so never ONNX Runtime nor
prometheus_client): storage is prepared in a short-lived child process, and
each worker imports the app itself. ONNX Runtime's native state does not
survive fork: workers forked from a master that had loaded it aborted
(SIGABRT) or hung on exit until gunicorn killed them. And prometheus_client
must find its multiprocess directory set before it is first imported (see
ops/multiproc.py); an exited worker's live gauges are dropped in ``child_exit``.
"""

from __future__ import annotations

import logging
import multiprocessing

from gunicorn.app.base import BaseApplication

from imgclass.config import (
    LIMIT_REQUEST_FIELD_SIZE,
    LIMIT_REQUEST_FIELDS,
    LIMIT_REQUEST_LINE,
    Settings,
)
from imgclass.ops import multiproc
from imgclass.warehouse.db import make_engine

log = logging.getLogger(__name__)


class ImgclassServer(BaseApplication):
    def __init__(self, settings: Settings):
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        cpu = s.cpu_plan
        options = {
            "bind": f"{s.host}:{s.port}",
            "workers": cpu.workers,
            "threads": cpu.threads,
            "worker_class": "gthread",
            # With gthread workers this is a liveness limit, not a per-request one: the
            # worker's main loop reports every second while its threads serve, so the arbiter
            # kills a worker whose loop is stuck, not a slow request (the app bounds those:
            # inference timeout, database connect and pool timeouts; nginx's
            # proxy_read_timeout answers the client).
            "timeout": s.request_timeout_s,
            "limit_request_line": LIMIT_REQUEST_LINE,
            "limit_request_fields": LIMIT_REQUEST_FIELDS,
            "limit_request_field_size": LIMIT_REQUEST_FIELD_SIZE,
            "graceful_timeout": 30,
            "keepalive": 5,
            "loglevel": s.log_level.lower(),
            "proc_name": "imgclass",
            # gunicorn's control socket lives at one fixed path per user, so several
            # servers on a machine would clobber each other's; we do not use it.
            "control_socket_disable": True,
            "child_exit": _child_exit,
            "on_exit": _on_exit,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self):
        from imgclass.app import create_app

        # Each worker builds its own engine and model session (never shared across fork).
        worker_settings = self.settings.model_copy(
            update={"auto_migrate": False, "bootstrap_admin": False}
        )
        return create_app(worker_settings)


def _child_exit(_arbiter, worker) -> None:
    multiproc.worker_exited(worker.pid)


def _on_exit(_arbiter) -> None:
    multiproc.cleanup()


def _prepare_storage(settings: Settings) -> None:
    from imgclass.app import prepare_storage

    engine = make_engine(settings.effective_database_url, **settings.engine_options)
    try:
        prepare_storage(settings, engine)
    finally:
        engine.dispose()


def serve(settings: Settings) -> None:
    # In a child, so that this process (the master) never imports the app; see above.
    child = multiprocessing.get_context("fork").Process(
        target=_prepare_storage, args=(settings,), name="imgclass-prepare-storage"
    )
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"could not prepare the database (exit code {child.exitcode})")
    multiproc.enable(settings.effective_metrics_dir)
    cpu = settings.cpu_plan
    log.info(
        "sizing for %d CPUs: %d workers x %d threads, %d inference threads each",
        cpu.cpus,
        cpu.workers,
        cpu.threads,
        cpu.inference_threads,
    )
    if cpu.oversubscribed:
        # Allowed (the values were asked for), but each core then switches between
        # inferences: slower answers, no more throughput (docs/PERFORMANCE.md).
        log.warning(
            "%d workers x %d inference threads = %d inference threads on %d CPUs: "
            "oversubscribed (IMGCLASS_WORKERS and IMGCLASS_INFERENCE_THREADS)",
            cpu.workers,
            cpu.inference_threads,
            cpu.workers * cpu.inference_threads,
            cpu.cpus,
        )
    ImgclassServer(settings).run()
