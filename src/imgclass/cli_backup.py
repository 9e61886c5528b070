"""``imgclass backup``: create, list, verify, restore and prune warehouse backups.

Each command calls ``warehouse.backup.Backups``, the same code the admin API uses. A
failure is one line on stderr and exit status 1.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

DEST_HELP = (
    "a directory or s3://BUCKET/PREFIX (default IMGCLASS_BACKUP_DESTINATION or <data dir>/backups)"
)


def _backups():
    from imgclass.cli import load_settings
    from imgclass.warehouse.backup import Backups

    return Backups(load_settings())


@contextmanager
def _clear_errors() -> Iterator[None]:
    from imgclass.warehouse.backup_errors import BackupError

    try:
        yield
    except BackupError as exc:
        raise click.ClickException(exc.message) from exc
    except OSError as exc:  # disk full, permissions …: still one line, not a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        raise click.ClickException(f"{where}{exc.strerror or exc}") from exc
    except sqlite3.Error as exc:
        raise click.ClickException(f"SQLite: {exc}") from exc


def _locate(backup: str | None, source: str | None) -> tuple[str | None, str | None]:
    """Accept a backup's name, or a path to one of its files (then its directory is the source)."""
    if backup and "/" in backup and source is None and not backup.startswith("s3://"):
        path = Path(backup)
        return path.name, str(path.parent)
    return backup, source


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@click.group()
def backup() -> None:
    """Back up the SQLite or PostgreSQL warehouse (server running); restore it (server stopped)."""


@backup.command("create")
@click.option("--to", "destination", metavar="DIR|s3://BUCKET/PREFIX", help=DEST_HELP)
def backup_create(destination) -> None:
    """Take a consistent, compressed backup with a checksum manifest."""
    with _clear_errors():
        manifest = _backups().create(destination)
    click.echo(
        f"created {manifest.name}: {manifest.events} events, "
        f"{_size(manifest.uncompressed.size)} -> {_size(manifest.compressed.size)} "
        f"({manifest.compression})"
    )


@backup.command("list")
@click.option("--from", "source", metavar="DIR|s3://BUCKET/PREFIX", help=DEST_HELP)
def backup_list(source) -> None:
    """List backups, newest first."""
    with _clear_errors():
        backups = _backups()
        store = backups.store(source)
        entries = backups.list(source)
    table = Table(
        "name", "created (UTC)", "size", "rows", "events", "verified", title=store.description
    )
    table.add_column("backend")  # sqlite or postgresql
    for entry in entries:
        m, v = entry.manifest, entry.verification
        if v is None:
            verified = "no"
        elif v.ok:
            verified = f"[green]ok[/] {v.verified_at:%Y-%m-%d %H:%M}"
        else:
            verified = f"[red]FAILED[/] {v.verified_at:%Y-%m-%d %H:%M}"
        table.add_row(
            m.name,
            f"{m.created_at:%Y-%m-%d %H:%M:%S}",
            _size(m.compressed.size),
            f"{sum(m.tables.values()):,}",
            f"{m.events:,}",
            verified,
            m.backend,
        )
    Console().print(table)
    if not entries:
        click.echo("no backups yet: `imgclass backup create` makes one", err=True)


@backup.command("verify")
@click.argument("backup_name", metavar="[BACKUP]", required=False)
@click.option("--from", "source", metavar="DIR|s3://BUCKET/PREFIX", help=DEST_HELP)
def backup_verify(backup_name, source) -> None:
    """Check a backup (the newest by default): checksums, integrity_check, row counts.

    A PostgreSQL backup: checksums, pg_restore reads it, and a trial restore into a scratch
    database has the recorded row counts (when the role may create databases).
    """
    name, source = _locate(backup_name, source)
    with _clear_errors():
        verified = _backups().verify(name, source)
    click.echo(f"{verified.name} ok: {verified.message}")


@backup.command("restore")
@click.argument("backup_name", metavar="BACKUP")
@click.option("--from", "source", metavar="DIR|s3://BUCKET/PREFIX", help=DEST_HELP)
@click.option("--force", is_flag=True, help="replace the existing database (stop the server first)")
def backup_restore(backup_name, source, force) -> None:
    """Verify BACKUP (a name from `list`, or `latest`) and make it the warehouse database."""
    name, source = _locate(backup_name, source)
    with _clear_errors():
        backups = _backups()
        manifest = backups.restore(name, source, force=force)
        target = backups.target
    checked = "integrity_check ok" if manifest.backend == "sqlite" else "row counts ok"
    click.echo(
        f"restored {manifest.name} to {target}: {checked}, "
        f"{manifest.events} events (schema revision {manifest.schema_revision})"
    )


@backup.command("prune")
@click.option("--from", "source", metavar="DIR|s3://BUCKET/PREFIX", help=DEST_HELP)
@click.option("--keep-last", type=click.IntRange(min=1), help="newest backups to keep")
@click.option("--keep-daily", type=click.IntRange(min=0), help="days to keep the newest of")
@click.option("--keep-weekly", type=click.IntRange(min=0), help="weeks to keep the newest of")
@click.option("--dry-run", is_flag=True, help="show what would be deleted, delete nothing")
def backup_prune(source, keep_last, keep_daily, keep_weekly, dry_run) -> None:
    """Delete the backups the retention policy does not keep."""
    with _clear_errors():
        backups = _backups()
        policy = backups.policy(keep_last=keep_last, keep_daily=keep_daily, keep_weekly=keep_weekly)
        result = backups.prune(source, policy, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    for name in result.deleted:
        click.echo(f"{verb} {name}")
    for name, reasons in sorted(result.kept.items(), reverse=True):
        click.echo(f"kept {name} ({', '.join(reasons)})")
    click.echo(
        f"{len(result.kept)} kept, {len(result.deleted)} {'to delete' if dry_run else 'deleted'} "
        f"(keep last {policy.keep_last}, daily {policy.keep_daily}, weekly {policy.keep_weekly})"
    )
