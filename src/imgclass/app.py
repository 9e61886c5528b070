"""``create_app(settings)``: build the services once, register blueprints and error handlers.

Everything a request needs (engine, recorder, classifier, user store) is built
here and kept in ``app.extensions["imgclass"]``; nothing on the request path
opens connections, loads models or reads configuration.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

from flask import Flask
from sqlalchemy import Engine

from imgclass.config import Settings
from imgclass.errors import ModelUnavailable
from imgclass.service import PredictionService
from imgclass.vision.classifier import OnnxClassifier, model_path
from imgclass.warehouse.db import make_engine
from imgclass.warehouse.migrate import upgrade
from imgclass.warehouse.recorder import Recorder
from imgclass.warehouse.users import UserError, UserStore

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    engine: Engine
    users: UserStore
    predictor: PredictionService


def services(app: Flask) -> Services:
    return app.extensions["imgclass"]


def load_classifier(settings: Settings) -> tuple[OnnxClassifier | None, str | None]:
    """The configured model, or None and the reason it could not be loaded."""
    path = model_path(settings.model_dir, settings.model_name, settings.model_precision)
    if not path.is_file():
        message = (
            f"model file {path} is missing; run "
            f"`imgclass model export --precision {settings.model_precision}` (or `make install`)"
        )
        log.error("%s", message)
        return None, message
    try:
        return OnnxClassifier(path, threads=settings.inference_threads), None
    except ModelUnavailable as exc:
        log.error("%s", exc.message)
        return None, exc.message


def prepare_storage(settings: Settings, engine: Engine) -> None:
    """Migrate the schema and make sure an admin exists (first start)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.auto_migrate:
        upgrade(engine)
    if settings.bootstrap_admin:
        bootstrap_admin(settings, UserStore(engine))


def bootstrap_admin(settings: Settings, users: UserStore) -> str | None:
    """Create an admin if there is none; print its key once and save it (mode 0600)."""
    if users.has_active_admin():
        return None
    for name in ("admin", "admin-" + os.urandom(3).hex()):
        try:
            _account, key = users.add(name, admin=True)
            break
        except UserError:
            if users.has_active_admin():  # another process won the race
                return None
    else:  # pragma: no cover - two random names both taken
        raise RuntimeError("could not create an admin user")
    path = settings.admin_token_path
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    os.chmod(path, 0o600)
    print(
        f"Created admin user {name!r}. Its API key (shown once, also saved to {path}):\n{key}",
        file=sys.stderr,
        flush=True,
    )
    return key


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings()
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.config["MAX_FORM_PARTS"] = settings.max_files_per_request + 16
    app.json.sort_keys = False

    engine = make_engine(settings.effective_database_url)
    prepare_storage(settings, engine)
    classifier, error = load_classifier(settings)
    app.extensions["imgclass"] = Services(
        settings=settings,
        engine=engine,
        users=UserStore(engine),
        predictor=PredictionService(
            classifier=classifier,
            classifier_error=error,
            recorder=Recorder(engine),
            max_image_pixels=settings.max_image_pixels,
        ),
    )

    from imgclass.api import errors, health, models, predict

    errors.register(app)
    from imgclass.api import metrics as http_metrics

    http_metrics.register(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(models.bp)
    app.register_blueprint(predict.bp)
    return app
