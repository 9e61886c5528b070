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
Each server claims its own metrics directory before anything else, and removes
it on every way out of the master.
"""

from __future__ import annotations

import ipaddress
import logging
import multiprocessing

from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from imgclass.config import (
    LIMIT_REQUEST_FIELD_SIZE,
    LIMIT_REQUEST_FIELDS,
    LIMIT_REQUEST_LINE,
    Settings,
)
from imgclass.ops import allocator, multiproc
from imgclass.warehouse.db import make_engine

log = logging.getLogger(__name__)


class ServerLogger(glogging.Logger):
    """gunicorn's logger, writing through the root logger's handler (``ops/logs.py``).

    gunicorn gives its error log a stderr handler of its own in its text format, so with
    ``IMGCLASS_LOG_FORMAT=json`` its lines (booting workers, worker timeouts, crashes) were
    plain text in the middle of the JSON stream. Handing them to the root logger gives them
    the configured format, like every other line.
    """

    def setup(self, cfg) -> None:
        super().setup(cfg)
        self.error_log.handlers.clear()
        self.error_log.propagate = True


class ImgclassServer(BaseApplication):
    def __init__(self, settings: Settings):
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        cpu = s.cpu_plan
        options = {
            "bind": bind_address(s.host, s.port),
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
            "logger_class": ServerLogger,
            "proc_name": "imgclass",
            # gunicorn's control socket lives at one fixed path per user, so several
            # servers on a machine would clobber each other's; we do not use it.
            "control_socket_disable": True,
            "post_fork": _post_fork,
            "child_exit": _child_exit,
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


def _post_fork(_arbiter, _worker) -> None:
    # In each worker, before it loads the app: see ops/allocator.py.
    allocator.fix_mmap_threshold()


def bind_address(host: str, port: int) -> str:
    """gunicorn's ``bind`` for ``host``: an IPv6 address in brackets (``[::]:8000``).

    Built as ``f"{host}:{port}"``, ``--host ::`` gave ``:::8000``, which gunicorn cannot split
    into a host and a port ("'' is not a valid port number"): the server did not start.
    """
    try:
        if ipaddress.ip_address(host.strip("[]")).version == 6:
            return f"[{host.strip('[]')}]:{port}"
    except ValueError:
        pass  # a name (localhost, a container's hostname)
    return f"{host}:{port}"


def _child_exit(_arbiter, worker) -> None:
    multiproc.worker_exited(worker.pid)


def _prepare_storage(settings: Settings) -> None:
    from imgclass.app import prepare_storage

    engine = make_engine(settings.effective_database_url, **settings.engine_options)
    try:
        prepare_storage(settings, engine)
    finally:
        engine.dispose()


def serve(settings: Settings) -> None:
    # First, so that a second server on the same directory stops before touching anything.
    try:
        if settings.explicit_metrics_dir is not None:
            directory = multiproc.claim(settings.explicit_metrics_dir)
        else:
            directory = multiproc.own_directory(settings.default_metrics_prefix)
    except multiproc.DirectoryInUse as exc:
        raise SystemExit(f"imgclass serve: {exc}") from None
    try:
        # In a child, so that this process (the master) never imports the app; see above.
        child = multiprocessing.get_context("fork").Process(
            target=_prepare_storage, args=(settings,), name="imgclass-prepare-storage"
        )
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"could not prepare the database (exit code {child.exitcode})")
        multiproc.enable(directory)
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
    finally:
        # Every way out of the master: a normal stop, gunicorn's sys.exit when it cannot
        # bind its port, an error. Workers leave through here too (gunicorn raises
        # SystemExit in the forked child); cleanup() does nothing in them.
        multiproc.cleanup()
