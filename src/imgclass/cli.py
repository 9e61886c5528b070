"""The ``imgclass`` command (click): serve, classify, model, db and users.

Every subcommand calls the same services the HTTP API uses.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
import numpy as np
from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from imgclass import cli_analytics
from imgclass.cli_backup import backup as backup_commands
from imgclass.cli_postgres import migrate_sqlite_to_postgres
from imgclass.config import Settings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
PROGRESS_THRESHOLD = 5  # show a progress bar from this many files on


def load_settings(**overrides) -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        raise click.ClickException(configuration_errors(exc)) from exc
    updates = {k: v for k, v in overrides.items() if v is not None}
    return settings.model_copy(update=updates) if updates else settings


def configuration_errors(exc: ValidationError) -> str:
    """One line per invalid setting, named by its variable, without the value (a secret?)."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        field = "_".join(map(str, error["loc"])).upper()
        name = f"IMGCLASS_{field}" if field else "IMGCLASS_*"
        problems.append(f"{name}: {error['msg'].removeprefix('Value error, ')}")
    return "invalid IMGCLASS_* configuration: " + "; ".join(problems)


@click.group()
@click.version_option(package_name="imgclass")
def main() -> None:
    """imgclass: image classification with a built-in analytics warehouse."""


main.add_command(backup_commands)


@main.command()
@click.option("--host", help="address to bind (default IMGCLASS_HOST or 127.0.0.1)")
@click.option("--port", type=int, help="port (default IMGCLASS_PORT or 8000)")
@click.option("--workers", type=click.IntRange(min=1), help="worker processes (default: CPUs)")
@click.option("--threads", type=click.IntRange(min=1), help="threads per worker (default 4)")
def serve(host, port, workers, threads) -> None:
    """Serve the HTTP API with gunicorn."""
    from imgclass.ops.logs import setup_logging
    from imgclass.server import serve as run_server

    settings = load_settings(host=host, port=port, workers=workers, threads=threads)
    setup_logging(settings.log_level, settings.log_format)
    run_server(settings)


def collect_files(paths: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(
                sorted(
                    p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                )
            )
        elif path.is_file():
            files.append(path)
        else:
            raise click.BadParameter(f"{raw}: no such file or directory", param_hint="FILE_OR_DIR")
    return files


@main.command()
@click.argument("paths", nargs=-1, required=True, metavar="FILE_OR_DIR...")
@click.option("--top-k", type=click.IntRange(1, 20), default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def classify(paths, top_k, as_json) -> None:
    """Classify local images (directories are searched recursively); no server needed."""
    from imgclass.app import load_classifier
    from imgclass.errors import ServiceError
    from imgclass.vision.images import load_image
    from imgclass.vision.preprocess import to_tensor

    settings = load_settings()
    files = collect_files(paths)
    if not files:
        raise click.ClickException("no image files found")
    classifier, error = load_classifier(settings)
    if classifier is None:
        raise click.ClickException(error or "model not available")
    prep = classifier.preprocessing
    results = []
    err_console = Console(stderr=True)
    with Progress(
        console=err_console, transient=True, disable=len(files) < PROGRESS_THRESHOLD
    ) as bar:
        task = bar.add_task("classifying", total=len(files))
        for path in files:
            started = time.perf_counter()
            try:
                image = load_image(
                    path.read_bytes(),
                    max_pixels=settings.max_image_pixels,
                    min_short_side=prep.resize_short,
                )
                preds = classifier.predict(to_tensor(image.image, prep)[np.newaxis], top_k)[0]
                entry = {
                    "file": str(path),
                    "predictions": [
                        {"class_id": p.class_id, "label": p.label, "score": round(p.score, 6)}
                        for p in preds
                    ],
                }
            except ServiceError as exc:
                entry = {"file": str(path), "error": {"code": exc.code, "message": exc.message}}
            except OSError as exc:
                entry = {"file": str(path), "error": {"code": "unreadable", "message": str(exc)}}
            entry["time_ms"] = round((time.perf_counter() - started) * 1000, 3)
            results.append(entry)
            bar.advance(task)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        table = Table("file", "class_id", "label", "score", "ms")
        for entry in results:
            if "error" in entry:
                table.add_row(entry["file"], "-", f"[red]{entry['error']['message']}", "-", "")
                continue
            for rank, p in enumerate(entry["predictions"]):
                table.add_row(
                    entry["file"] if rank == 0 else "",
                    str(p["class_id"]),
                    p["label"],
                    f"{p['score']:.3f}",
                    f"{entry['time_ms']:.1f}" if rank == 0 else "",
                )
        Console().print(table)
    if any("error" in entry for entry in results):
        sys.exit(1)


@main.group()
def model() -> None:
    """Prepare and inspect models."""


@model.command("export")
@click.option("--precision", type=click.Choice(["fp32", "int8"]), default="fp32", show_default=True)
@click.option("--force", is_flag=True, help="export even if the file exists")
def model_export(precision, force) -> None:
    """Convert the packaged PyTorch weights to ONNX under IMGCLASS_MODEL_DIR."""
    from imgclass.vision.classifier import model_path
    from imgclass.vision.export import MODEL_NAME, ExportUnavailable, export_onnx

    settings = load_settings()
    target = model_path(settings.model_dir, MODEL_NAME, precision)
    if target.exists() and not force:
        click.echo(f"{target} exists (use --force to export again)")
        return
    started = time.perf_counter()
    try:
        path = export_onnx(settings.model_dir, precision)
    except ExportUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"exported {path} in {time.perf_counter() - started:.1f}s")


@model.command("info")
def model_info() -> None:
    """Show the model this configuration serves."""
    from imgclass.app import load_classifier

    classifier, error = load_classifier(load_settings())
    if classifier is None:
        raise click.ClickException(error or "model not available")
    for key, value in vars(classifier.info).items():
        click.echo(f"{key:>10}: {value}")


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations (creates the database if needed)."""
    from imgclass.warehouse.db import make_engine, private_dir
    from imgclass.warehouse.migrate import current_revision, upgrade

    settings = load_settings()
    private_dir(settings.data_dir)
    engine = make_engine(settings.effective_database_url, **settings.engine_options)
    upgrade(engine)
    click.echo(f"database at revision {current_revision(engine)}")


@db.command("prune")
@click.option(
    "--older-than",
    required=True,
    help="a number of days (e.g. 90d or 90) or an ISO date; events before it are deleted",
)
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def db_prune(older_than, yes) -> None:
    """Delete old events (retention) and the dimension rows no event uses any more."""
    from imgclass.warehouse.db import make_engine
    from imgclass.warehouse.privacy import prune_events
    from imgclass.warehouse.recorder import utc_now

    cutoff = _parse_cutoff(older_than, utc_now())
    if not yes:
        click.confirm(f"delete every event before {cutoff:%Y-%m-%d %H:%M} UTC?", abort=True)
    settings = load_settings()
    engine = make_engine(settings.effective_database_url, **settings.engine_options)
    report = prune_events(engine, cutoff)
    click.echo(
        f"deleted {report.facts} events, {report.feedback} feedback rows, {report.users} "
        f"user rows, {report.images} image rows, {report.minutes} time rows"
    )


def _parse_cutoff(raw: str, now):
    """The cut-off of ``--older-than``: ``now`` less N days (N >= 1), or a past ISO date/time.

    Every refusal is a one-line usage error (exit 2): a cut-off of 0 days or in the future
    would delete events seconds old, and a number of days past ``datetime``'s range used to
    end in an OverflowError traceback.
    """
    import re
    from datetime import UTC, datetime, timedelta

    def bad(message: str) -> click.BadParameter:
        return click.BadParameter(message, param_hint="--older-than")

    text = raw.strip().lower()
    days = re.fullmatch(r"([+-]?\d+)d?", text)
    if days:
        n = int(days.group(1))
        if n < 1:
            raise bad(f"{raw!r}: give at least 1 day (0 or fewer would delete every event)")
        try:
            return now - timedelta(days=n)
        except OverflowError:
            raise bad(
                f"{raw!r}: {n:,} days is before the year 1; give a smaller number of days"
            ) from None
    try:
        cutoff = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise bad(
            f"{raw!r} is neither a number of days (90d) nor an ISO date (2026-01-31)"
        ) from None
    if cutoff.tzinfo is not None:  # the warehouse's times are naive UTC
        cutoff = cutoff.astimezone(UTC).replace(tzinfo=None)
    if cutoff > now:
        raise bad(
            f"{raw!r} is in the future (now is {now:%Y-%m-%d %H:%M} UTC): it would delete "
            "every event"
        )
    return cutoff


db.add_command(migrate_sqlite_to_postgres)


@main.group()
def users() -> None:
    """API users and their keys."""


def _user_store():
    from imgclass.warehouse.db import make_engine, private_dir
    from imgclass.warehouse.migrate import upgrade
    from imgclass.warehouse.users import UserStore

    settings = load_settings()
    private_dir(settings.data_dir)
    engine = make_engine(settings.effective_database_url, **settings.engine_options)
    upgrade(engine)
    return UserStore(engine)


@users.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="may use admin endpoints (analytics, backups)")
def users_add(name, admin) -> None:
    """Create a user and print its API key (shown only this once)."""
    from imgclass.warehouse.users import UserError

    try:
        account, key = _user_store().add(name, admin=admin)
    except UserError as exc:
        raise click.ClickException(str(exc)) from exc
    role = "admin" if account.is_admin else "user"
    click.echo(
        f"created {role} {account.username!r}; API key (store it now, it is not kept):", err=True
    )
    click.echo(key)


@users.command("list")
def users_list() -> None:
    """List users (keys are never shown)."""
    table = Table("user_id", "username", "admin", "created (UTC)", "status")
    for acc in _user_store().list():
        status = "active" if acc.active else f"revoked {acc.revoked_at:%Y-%m-%d %H:%M}"
        table.add_row(
            str(acc.user_id),
            acc.username,
            "yes" if acc.is_admin else "",
            f"{acc.created_at:%Y-%m-%d %H:%M}",
            status,
        )
    Console().print(table)


@users.command("revoke")
@click.argument("name")
def users_revoke(name) -> None:
    """Revoke a user's API key; their past requests stay in the warehouse."""
    from imgclass.warehouse.users import UserError

    try:
        account = _user_store().revoke(name)
    except UserError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"revoked {account.username!r}")


@users.command("forget")
@click.argument("name")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.option("--force", is_flag=True, help="forget them even if they are the last active admin")
def users_forget(name, yes, force) -> None:
    """Erase a user's personal data: address, user agent, name, filenames; their counts stay."""
    from imgclass.warehouse.privacy import forget_user
    from imgclass.warehouse.users import UserError

    settings = load_settings()
    store = _user_store()
    if not yes:
        click.confirm(f"forget {name!r} (cannot be undone)?", abort=True)
    token_path = settings.admin_token_path
    saved = token_path.read_text().strip() if token_path.is_file() else ""
    token_owner = store.authenticate(saved) if saved else None
    try:
        report = forget_user(store.engine, name, allow_last_admin=force)
    except UserError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"forgot {report.username!r}: {report.facts_kept} events kept as {report.pseudonym!r}, "
        f"{report.dimension_rows_removed} address/agent rows removed, "
        f"{report.filenames_blanked} filenames blanked, key revoked"
    )
    if token_owner is not None and token_owner.username == name:
        token_path.unlink()  # its key was just revoked; the next admin's key goes there
        click.echo(f"removed {token_path}: it held {name!r}'s key")
    if report.was_last_admin:
        if not settings.bootstrap_admin:
            after = "IMGCLASS_BOOTSTRAP_ADMIN is off, so no server will create one"
        elif settings.admin_key:
            after = "the next `imgclass serve` creates one with the key in IMGCLASS_ADMIN_KEY"
        else:
            after = f"the next `imgclass serve` creates one and writes its key to {token_path}"
        click.echo(
            f"there is no active admin now: {after}; `imgclass users add NAME --admin` makes "
            "one at once",
            err=True,
        )


main.add_command(cli_analytics.stats)
main.add_command(cli_analytics.demo)


if __name__ == "__main__":  # pragma: no cover
    main()
