"""Serve the app with gunicorn: workers sized to the CPUs, one inference thread each.

The parent process migrates the database and creates the first admin before
forking, so workers start with ready storage and never race each other on it.
"""

from __future__ import annotations

import logging

from gunicorn.app.base import BaseApplication

from imgclass.app import create_app, prepare_storage
from imgclass.config import Settings
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
            "timeout": s.request_timeout_s,
            "graceful_timeout": 30,
            "keepalive": 5,
            "loglevel": s.log_level.lower(),
            "proc_name": "imgclass",
            # gunicorn's control socket lives at one fixed path per user, so several
            # servers on a machine would clobber each other's; we do not use it.
            "control_socket_disable": True,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self):
        # Each worker builds its own engine and model session (never shared across fork).
        worker_settings = self.settings.model_copy(
            update={"auto_migrate": False, "bootstrap_admin": False}
        )
        return create_app(worker_settings)


def serve(settings: Settings) -> None:
    engine = make_engine(settings.effective_database_url, **settings.engine_options)
    prepare_storage(settings, engine)
    engine.dispose()
    cpu = settings.cpu_plan
    log.info(
        "sizing for %d CPUs: %d workers x %d threads, %d inference threads each",
        cpu.cpus,
        cpu.workers,
        cpu.threads,
        cpu.inference_threads,
    )
    ImgclassServer(settings).run()
