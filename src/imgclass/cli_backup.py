"""``imgclass backup``: create, list, verify, restore and prune warehouse backups.

Each command calls ``warehouse.backup.Backups``, the same code the admin API uses. A
failure is one line on stderr and exit status 1.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.measure import Measurement
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
    except BackupError as exc:  # one line, whatever the message holds
        raise click.ClickException(" ".join(exc.message.split())) from exc
    except OSError as exc:  # disk full, permissions …: still one line, not a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        raise click.ClickException(f"{where}{exc.strerror or exc}") from exc
    except sqlite3.Error as exc:
        raise click.ClickException(f"SQLite: {exc}") from exc


def _locate(backup: str | None, source: str | None) -> tuple[str | None, str | None]:
    """Accept a backup's name, or a path to one of its files (then its directory is the source)."""
    if backup and "/" in backup and source is None and not backup.startswith("s3://"):
        path = Path(backup)
        return path.name, _existing(str(path.parent))
    return backup, _existing(source)


def _existing(source: str | None) -> str | None:
    """A directory given with --from must exist: a typo would read as "no backups"."""
    if source and "://" not in source and not Path(source).expanduser().exists():
        raise click.ClickException(f"{source}: no such directory")
    return source


def _newer_incomplete(store, name: str | None) -> None:
    """Say so when ``latest`` is not the newest data file (one whose manifest is missing)."""
    from imgclass.warehouse.backup import LATEST, backup_names, incomplete_backups

    if name not in (None, LATEST):
        return
    objects = store.names()
    complete, incomplete = backup_names(store, objects), incomplete_backups(store, objects)
    if incomplete and (not complete or incomplete[0] > complete[-1]):
        using = f"using {complete[-1]}, the newest complete one" if complete else "none is complete"
        click.echo(
            f"note: {incomplete[0]} has no manifest (still being written, or its manifest "
            f"was deleted): {using}",
            err=True,
        )


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
@click.option(
    "--prune",
    is_flag=True,
    help="then delete the backups there that the retention policy "
    "(IMGCLASS_BACKUP_KEEP_LAST/DAILY/WEEKLY) does not keep",
)
def backup_create(destination, prune) -> None:
    """Take a consistent, compressed backup with a checksum manifest."""
    with _clear_errors():
        backups = _backups()
        manifest = backups.create(destination)
    click.echo(
        f"created {manifest.name}: {manifest.events} events, "
        f"{_size(manifest.uncompressed.size)} -> {_size(manifest.compressed.size)} "
        f"({manifest.compression})"
    )
    if prune:
        # After the new backup is written, so the policy always counts it (a scheduled job
        # with one command keeps its destination bounded).
        with _clear_errors():
            policy = backups.policy()
            result = backups.prune(destination, policy)
        _echo_pruned(result, policy, dry_run=False)


@backup.command("list")
@click.option("--from", "source", metavar="DIR|s3://BUCKET/PREFIX", help=DEST_HELP)
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def backup_list(source, as_json) -> None:
    """List backups, newest first, and data files whose manifest is missing."""
    from imgclass.warehouse.backup import incomplete_backups, list_backups, name_time

    source = _existing(source)
    with _clear_errors():
        store = _backups().store(source)
        entries = list_backups(store)
        listed = {entry.manifest.name for entry in entries}
        incomplete = [n for n in incomplete_backups(store) if n not in listed]
    if as_json:
        listing = {
            "destination": store.description,
            "backups": [entry.to_json() for entry in entries],
            "incomplete": [
                {"name": name, "created_at": name_time(name).isoformat(), "manifest": None}
                for name in incomplete
            ],
        }
        click.echo(json.dumps(listing, indent=2))
        return
    table = listing_table(store.description, entries, incomplete, LIST_COLUMNS)
    console = Console()
    width = Measurement.get(console, console.options.update_width(10_000), table).maximum
    if not console.is_terminal:
        # A pipe has no width of its own: one line per backup (for grep), not rich's 80.
        console = Console(width=max(console.width, width))
    elif width > console.width:
        table = listing_table(store.description, entries, incomplete, NARROW_COLUMNS)
    console.print(table)
    if not table.row_count:
        click.echo("no backups yet: `imgclass backup create` makes one", err=True)


LIST_COLUMNS = ("created (UTC)", "size", "rows", "events", "verified", "backend")
# For a narrow terminal: the name holds the creation time, and --json has everything.
NARROW_COLUMNS = ("size", "events", "verified")


def listing_table(
    title: str, entries: list, incomplete: list[str], columns: tuple[str, ...]
) -> Table:
    """The backups and the incomplete ones, newest first; the names are never cut."""
    from imgclass.warehouse.backup import name_time

    rows = {}
    for entry in entries:
        m, v = entry.manifest, entry.verification
        if v is None:
            verified = "no"
        elif v.ok:
            verified = f"[green]ok[/] {v.verified_at:%Y-%m-%d %H:%M}"
        else:
            verified = f"[red]FAILED[/] {v.verified_at:%Y-%m-%d %H:%M}"
        rows[m.name] = {
            "created (UTC)": f"{m.created_at:%Y-%m-%d %H:%M:%S}",
            "size": _size(m.compressed.size),
            "rows": f"{sum(m.tables.values()):,}",
            "events": f"{m.events:,}",
            "verified": verified,
            "backend": m.backend,
        }
    for name in incomplete:
        created = f"{name_time(name):%Y-%m-%d %H:%M:%S}"
        rows[name] = {"created (UTC)": created, "verified": "[red]incomplete[/]: no manifest"}
    table = Table(title=title)
    # The name is what verify and restore need: never wrapped or cut; other columns give way.
    table.add_column("name", no_wrap=True, min_width=max(map(len, rows), default=4))
    for header in columns:
        table.add_column(header)
    for name in sorted(rows, reverse=True):  # names sort by creation time
        table.add_row(name, *(rows[name].get(header, "") for header in columns))
    return table


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
        backups = _backups()
        _newer_incomplete(backups.store(source), name)
        verified = backups.verify(name, source)
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
        _newer_incomplete(backups.store(source), name)
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
    source = _existing(source)
    with _clear_errors():
        backups = _backups()
        policy = backups.policy(keep_last=keep_last, keep_daily=keep_daily, keep_weekly=keep_weekly)
        result = backups.prune(source, policy, dry_run=dry_run)
    _echo_pruned(result, policy, dry_run=dry_run)


def _echo_pruned(result, policy, *, dry_run: bool) -> None:
    verb = "would delete" if dry_run else "deleted"
    for name in result.deleted:
        click.echo(f"{verb} {name}")
    for name, reasons in sorted(result.kept.items(), reverse=True):
        click.echo(f"kept {name} ({', '.join(reasons)})")
    click.echo(
        f"{len(result.kept)} kept, {len(result.deleted)} {'to delete' if dry_run else 'deleted'} "
        f"(keep last {policy.keep_last}, daily {policy.keep_daily}, weekly {policy.keep_weekly})"
    )
