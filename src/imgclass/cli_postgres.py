"""``imgclass db migrate-sqlite-to-postgres``: move a SQLite warehouse into PostgreSQL.

The work is ``warehouse.transfer.copy_warehouse``; this module parses the URLs,
draws the progress bar and prints the verified row counts.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError


def _url(raw: str, backend: str, option: str) -> str:
    """``raw`` checked to be a ``backend`` URL; PostgreSQL's on the psycopg 3 driver."""
    from imgclass.warehouse.db import parse_url

    try:
        url = parse_url(raw)
    except ValueError as exc:
        raise click.BadParameter(f"{raw!r} is {exc}", param_hint=option) from None
    if url.get_backend_name() != backend:
        example = {
            "sqlite": "sqlite:///data/imgclass.db",
            "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/imgclass",
        }[backend]
        raise click.BadParameter(
            f"must be a {backend} URL such as {example}, got {url.get_backend_name()}",
            param_hint=option,
        )
    return url.render_as_string(hide_password=False)


@click.command("migrate-sqlite-to-postgres")
@click.option(
    "--from",
    "source",
    required=True,
    metavar="SQLITE_URL",
    help="the warehouse to copy, e.g. sqlite:///data/imgclass.db (only read)",
)
@click.option(
    "--to",
    "target",
    required=True,
    metavar="POSTGRES_URL",
    help="e.g. postgresql+psycopg://postgres@127.0.0.1:5432/imgclass (the database must exist)",
)
@click.option("--force", is_flag=True, help="replace the data the target already holds")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=5000,
    show_default=True,
    help="rows per insert batch",
)
def migrate_sqlite_to_postgres(source, target, force, batch_size) -> None:
    """Copy a SQLite warehouse into PostgreSQL, keeping every key, and verify the row counts.

    The target's schema is created with the same migrations; every table is copied in
    one transaction, so a failed copy leaves the target as it was. Stop the server that
    writes to the source first: events recorded after the copy started are not copied.
    """
    from imgclass.warehouse.db import make_engine
    from imgclass.warehouse.transfer import (
        TransferError,
        check_source,
        copy_warehouse,
        source_counts,
    )

    source = _url(source, "sqlite", "--from")
    target = _url(target, "postgresql", "--to")
    database = make_url(source).database
    if not database or database == ":memory:" or not Path(database).is_file():
        raise click.BadParameter(f"no SQLite database at {database!r}", param_hint="--from")
    shown_target = make_url(target).render_as_string(hide_password=True)

    source_engine = make_engine(source)
    target_engine = make_engine(target, pool_size=1, max_overflow=0)
    err = Console(stderr=True)
    started = time.perf_counter()
    try:
        check_source(source_engine)
        total = sum(source_counts(source_engine).values())
        with Progress(
            TextColumn("{task.description:<22}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("migrating schema", total=total)

            def advance(table: str, rows: int) -> None:
                bar.update(task, advance=rows, description=table)

            counts = copy_warehouse(
                source_engine, target_engine, force=force, batch_rows=batch_size, progress=advance
            )
    except TransferError as exc:
        raise click.ClickException(str(exc)) from exc
    except OperationalError as exc:
        raise click.ClickException(f"cannot use the database: {exc.orig}") from exc
    finally:
        source_engine.dispose()
        target_engine.dispose()

    table = Table("table", "source rows", "target rows", title="row counts (verified)")
    for count in counts:
        table.add_row(count.table, f"{count.source_rows:,}", f"{count.target_rows:,}")
    Console().print(table)
    rows = sum(c.target_rows for c in counts)
    click.echo(
        f"copied {rows:,} rows into {shown_target} in {time.perf_counter() - started:.1f}s; "
        f"serve from it with {serve_hint(target)}"
    )


PASSWORD_PLACEHOLDER = "PASSWORD"


def serve_hint(url: str) -> str:
    """``IMGCLASS_DATABASE_URL=…`` ready to paste; a password is replaced, and that said."""
    parsed = make_url(url)
    if not parsed.password:
        return f"IMGCLASS_DATABASE_URL={shlex.quote(url)}"
    # SQLAlchemy's *** cannot be pasted and looks like the password: name the gap instead.
    shown = parsed.set(password=PASSWORD_PLACEHOLDER).render_as_string(hide_password=False)
    return (
        f"IMGCLASS_DATABASE_URL={shlex.quote(shown)} "
        f"(the password is not shown: put it in place of {PASSWORD_PLACEHOLDER})"
    )
