"""``create_app(settings)``: build the services once, register blueprints and error handlers.

Everything a request needs (engines, recorder, model chain, cache, user store) is built
here and kept in ``app.extensions["imgclass"]``; nothing on the request path
opens connections, loads models or reads configuration.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask
from sqlalchemy import Engine

from imgclass.config import Settings
from imgclass.errors import ModelUnavailable
from imgclass.ops import metrics
from imgclass.ops.cache import make_cache
from imgclass.ops.limits import install_rate_limits
from imgclass.ops.privacy import IpPolicy, load_or_create_key
from imgclass.ops.security import install_security
from imgclass.service import PredictionService
from imgclass.vision.classifier import OnnxClassifier, model_path
from imgclass.vision.fallback import ModelChain
from imgclass.warehouse.db import make_engine, private_dir, same_database
from imgclass.warehouse.migrate import upgrade
from imgclass.warehouse.recorder import Recorder
from imgclass.warehouse.users import UserError, UserStore

if TYPE_CHECKING:
    from imgclass.ops.accuracy import AccuracyGauges
    from imgclass.ops.drift import DriftMonitor
    from imgclass.ops.feedback import FeedbackService

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    engine: Engine  # the primary: every write
    # Analytics reads: IMGCLASS_ANALYTICS_DATABASE_URL (a read replica), else the same engine.
    analytics_engine: Engine
    users: UserStore
    predictor: PredictionService
    ip_policy: IpPolicy
    drift: DriftMonitor | None = None
    feedback: FeedbackService | None = None
    accuracy: AccuracyGauges | None = None


def services(app: Flask) -> Services:
    return app.extensions["imgclass"]


def load_classifier(
    settings: Settings, precision: str | None = None
) -> tuple[OnnxClassifier | None, str | None]:
    """The configured model (or another export of it), or None and the reason it failed."""
    precision = precision or settings.model_precision
    path = model_path(settings.model_dir, settings.model_name, precision)
    if not path.is_file():
        message = (
            f"model file {path} is missing; run "
            f"`imgclass model export --precision {precision}` (or `make install`)"
        )
        log.error("%s", message)
        return None, message
    try:
        return OnnxClassifier(path, threads=settings.effective_inference_threads), None
    except ModelUnavailable as exc:
        log.error("%s", exc.message)
        return None, exc.message


def build_model_chain(settings: Settings) -> ModelChain:
    """The primary model (with its inference timeout) and the fallback export, if any."""

    def load(precision: str) -> OnnxClassifier:
        classifier, error = load_classifier(settings, precision=precision)
        if classifier is None:
            raise ModelUnavailable(error)
        return classifier

    def load_primary() -> OnnxClassifier:
        classifier = load(settings.model_precision)
        classifier.timeout_s = settings.inference_timeout_s or None
        return classifier

    def load_fallback() -> OnnxClassifier:
        return load(settings.fallback_precision)

    has_fallback = settings.fallback_precision not in ("none", settings.model_precision)
    primary_name = f"{settings.model_name}-{settings.model_precision}"
    fallback_name = f"{settings.model_name}-{settings.fallback_precision}"
    chain = ModelChain(
        load_primary,
        load_fallback if has_fallback else None,
        failure_threshold=settings.breaker_failures,
        reset_after_s=settings.breaker_reset_s,
        primary_name=primary_name,
        on_breaker_change=metrics.set_breaker_state,
        on_fallback=lambda _name: metrics.fallback_activated(fallback_name),
    )
    metrics.set_breaker_state(primary_name, chain.breaker_state)  # changes come from the chain
    if has_fallback:  # configured, so its counter exists even before it loads
        metrics.fallback_available(fallback_name)
    return chain


def build_ip_policy(settings: Settings) -> IpPolicy:
    key = None
    if settings.ip_storage == "hashed":
        if settings.ip_hash_key:
            key = settings.ip_hash_key.encode()
        else:
            key = load_or_create_key(settings.ip_hash_key_path)
    return IpPolicy(settings.ip_storage, key)


def prepare_storage(settings: Settings, engine: Engine) -> None:
    """Migrate the schema and make sure an admin exists (first start)."""
    private_dir(settings.data_dir)
    if settings.auto_migrate:
        upgrade(engine)
    if settings.bootstrap_admin:
        bootstrap_admin(settings, UserStore(engine))


def bootstrap_admin(settings: Settings, users: UserStore) -> str | None:
    """Create an admin if there is none; save its key (mode 0600), and show it on a terminal.

    The key is printed only when stderr is a terminal: otherwise stderr is the log stream
    (a container's, a journal), which keeps it for anyone who may read logs, so the log
    says only where the key file is. With ``IMGCLASS_ADMIN_KEY`` the admin gets that key,
    which is neither printed nor saved: the operator already has it (replicas with
    throwaway disks, a secret store).
    """
    if users.has_active_admin():
        return None
    given = settings.admin_key.get_secret_value() if settings.admin_key else None
    for name in ("admin", "admin-" + os.urandom(3).hex()):
        try:
            _account, key = users.add(name, admin=True, key=given)
            break
        except UserError:
            if users.has_active_admin():  # another process won the race
                return None
    else:  # pragma: no cover - two random names both taken
        raise RuntimeError("could not create an admin user")
    if given:
        log.info("created admin user %r with the key from IMGCLASS_ADMIN_KEY", name)
        return None
    path = settings.admin_token_path
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    os.chmod(path, 0o600)
    if sys.stderr.isatty():
        print(
            f"Created admin user {name!r}. Its API key (shown once, also saved to {path}):\n{key}",
            file=sys.stderr,
            flush=True,
        )
    else:
        log.info("created admin user %r; its API key is in %s (mode 0600)", name, path)
    return key


def build_analytics_engine(settings: Settings, primary: Engine) -> Engine:
    """The engine for analytics reads: the replica's, or the primary's own (one pool)."""
    url = settings.effective_analytics_database_url
    if same_database(url, settings.effective_database_url):
        return primary
    return make_engine(
        url, statement_timeout_s=settings.db_statement_timeout_s, **settings.engine_options
    )


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings()
    app = Flask(__name__, static_folder=None)
    from imgclass.api.form_limits import MAX_FILES_CONFIG
    from imgclass.api.uploads import UploadRequest

    # Uploads parsed into memory (not TMPDIR), their file parts counted while the form is
    # parsed: too many is 400 too_many_files, not 413.
    app.request_class = UploadRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.config["MAX_FORM_PARTS"] = settings.max_files_per_request + 16
    app.config[MAX_FILES_CONFIG] = settings.max_files_per_request
    app.json.sort_keys = False

    engine = make_engine(
        settings.effective_database_url,
        statement_timeout_s=settings.db_statement_timeout_s,
        **settings.engine_options,
    )
    prepare_storage(settings, engine)
    app.extensions["imgclass"] = Services(
        settings=settings,
        engine=engine,
        analytics_engine=build_analytics_engine(settings, engine),
        users=UserStore(engine),
        predictor=PredictionService(
            models=build_model_chain(settings),
            recorder=Recorder(engine, cache_entries=settings.dimension_cache_entries),
            max_image_pixels=settings.max_image_pixels,
            cache=make_cache(
                max_entries=settings.cache_entries,
                ttl_s=settings.cache_ttl_s,
                redis_url=settings.redis_url,
            ),
        ),
        ip_policy=build_ip_policy(settings),
    )

    from imgclass.ops.accuracy import AccuracyGauges
    from imgclass.ops.drift import DriftMonitor
    from imgclass.ops.feedback import FeedbackService

    svc = app.extensions["imgclass"]
    # Drift and accuracy read the warehouse, like the analytics: from the replica if there is one.
    svc.accuracy = AccuracyGauges(svc.analytics_engine, settings)
    svc.drift = DriftMonitor(svc.analytics_engine, settings, also=[svc.accuracy.update])
    svc.feedback = FeedbackService(engine)

    from imgclass.api import analytics, backups, drift, errors, feedback, health, models, predict

    errors.register(app)
    from imgclass.api import metrics as http_metrics

    http_metrics.register(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(models.bp)
    app.register_blueprint(predict.bp)
    app.register_blueprint(drift.bp)
    app.register_blueprint(feedback.bp)
    app.register_blueprint(backups.bp)
    app.register_blueprint(analytics.bp)

    from imgclass.web import pages

    app.register_blueprint(pages.bp)

    from imgclass.api import openapi

    app.register_blueprint(openapi.bp)  # /api/v1/openapi.json and /api/docs

    from imgclass.api.body import BodyErrors

    app.wsgi_app = BodyErrors(app.wsgi_app)  # a badly framed body is a 400, not a 500
    # Last: they wrap every blueprint registered above.
    install_security(app, settings)
    install_rate_limits(app, settings)
    # Background drift and accuracy updates (per process; IMGCLASS_DRIFT_INTERVAL_S=0 turns
    # them off), once everything they publish through is set up (the class label set).
    svc.drift.start()
    return app
