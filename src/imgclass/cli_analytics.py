"""``imgclass stats`` (the analytics cube in a terminal) and ``imgclass demo seed``.

``stats`` takes the same language as ``GET /api/v1/analytics/cube`` (it goes through
the same ``cube_params.parse_cube``): ``--group-by``, ``--measures``, ``--from``,
``--to``, ``--filter DIM=VALUES`` (repeatable), ``--order``, ``--limit``, ``--rollup``,
``--pivot``; it prints an aligned table, or CSV / JSON.
"""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

ROLLED_UP = "(all)"  # the terminal table's mark of a rolled-up dimension (CSV: see _level)


def _engine():
    """The primary database, migrated (what ``demo seed`` writes to)."""
    from imgclass.cli import load_settings
    from imgclass.warehouse.db import make_engine, private_dir
    from imgclass.warehouse.migrate import upgrade

    settings = load_settings()
    private_dir(settings.data_dir)
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    return engine


def _analytics_engine():
    """Where analytics reads go: the read replica when one is configured, else the primary.

    Only a warehouse that exists: ``stats`` run in the wrong directory (or with a mistyped
    IMGCLASS_DATA_DIR) must say so, not create an empty one and report zero requests. An
    existing primary is brought to the current schema; a replica follows the primary's
    schema and refuses writes, so it is never migrated.
    """
    from sqlalchemy.exc import OperationalError

    from imgclass.cli import load_settings
    from imgclass.warehouse.db import make_engine, same_database
    from imgclass.warehouse.migrate import current_revision, upgrade

    settings = load_settings()
    url = settings.effective_analytics_database_url
    where = _describe(url)
    hint = (
        "set IMGCLASS_DATA_DIR (or IMGCLASS_DATABASE_URL / IMGCLASS_ANALYTICS_DATABASE_URL) "
        "to the warehouse; `imgclass demo seed` creates one to explore"
    )
    path = _sqlite_file(url)
    if path is not None and not path.is_file():
        raise click.ClickException(f"no warehouse at {where} ({hint})")
    engine = make_engine(url)
    try:
        revision = current_revision(engine)
    except OperationalError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise click.ClickException(f"cannot open the warehouse at {where}: {reason}") from exc
    if revision is None:
        engine.dispose()
        raise click.ClickException(f"no warehouse at {where}: it has no imgclass schema ({hint})")
    if same_database(url, settings.effective_database_url):
        upgrade(engine)
    return engine


def _sqlite_file(url: str):
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.query.get("uri"):
        return None  # a file: URI; the schema check below still applies
    return Path(parsed.database).expanduser().resolve()


def _describe(url: str) -> str:
    """A database for a message: a SQLite file's path, else the URL without its password."""
    from sqlalchemy.engine import make_url

    path = _sqlite_file(url)
    return str(path) if path is not None else make_url(url).render_as_string(hide_password=True)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) >= 1 else f"{value:.4f}"
    return str(value)


@click.command()
@click.option("--group-by", "group_by", help="dimensions, e.g. day,class (see README: Analytics)")
@click.option("--measures", help="measures, e.g. requests,avg_time_ms,p95_time_ms")
@click.option("--from", "time_from", help="ISO date or datetime (UTC), inclusive")
@click.option("--to", "time_to", help="ISO date (inclusive) or datetime (exclusive)")
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="DIM=VALUES",
    help="e.g. user=alice,bob or concept=dog (repeatable; all must match)",
)
@click.option("--order", help="requested columns, - for descending, e.g. -requests")
@click.option("--limit", help="rows (default 1000, at most 100000)")
@click.option("--rollup", is_flag=True, help="add subtotals and totals")
@click.option("--pivot", help="one of the --group-by dimensions, turned into columns")
@click.option("--csv", "as_csv", is_flag=True, help="print CSV")
@click.option("--json", "as_json", is_flag=True, help="print JSON (the API's cube body)")
def stats(
    group_by, measures, time_from, time_to, filters, order, limit, rollup, pivot, as_csv, as_json
):
    """Query the analytics cube: group, filter and measure the recorded requests."""
    from imgclass.errors import BadRequest
    from imgclass.warehouse.cube import MEASURE_COLUMN, Cube, csv_lines, result_table
    from imgclass.warehouse.cube_params import parse_cube

    if as_csv and as_json:
        raise click.UsageError("choose one of --csv and --json")
    params = {
        name: value
        for name, value in {
            "group_by": group_by,
            "measures": measures,
            "from": time_from,
            "to": time_to,
            "order": order,
            "limit": limit,
            "pivot": pivot,
            "rollup": "true" if rollup else None,
        }.items()
        if value is not None
    }
    for item in filters:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise click.UsageError(f"--filter {item!r}: expected DIM=VALUES, e.g. user=alice")
        if name in params:
            raise click.UsageError(f"--filter {name}: given twice; use one comma-separated list")
        params[name] = value
    try:
        query = parse_cube(params)
        result = Cube(_analytics_engine()).run(query)
    except BadRequest as exc:
        raise click.UsageError(exc.message) from exc
    if result.truncated:
        # On stderr, so that a CSV or JSON piped to a file stays clean and a cut is seen.
        click.echo(
            f"imgclass stats: more rows matched than --limit {query.limit}; "
            "only the first are shown (raise --limit or filter)",
            err=True,
        )
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    if as_csv:
        for line in csv_lines(*result_table(result)):
            click.echo(line.rstrip("\r\n"))
        return
    # Text, not strings: rich would read "[…]" in a user agent or file name as markup.
    table = Table(show_footer=False)
    for name in result.columns:
        label = name in result.dimensions or name == MEASURE_COLUMN
        table.add_column(Text(name), justify="left" if label else "right")
    for row in result.rows:
        table.add_row(*(Text(_cell(row.get(c))) for c in result.columns))
    if result.totals is not None:
        table.add_section()  # subtotals and the total, below a rule
        for row in [*(result.subtotals or []), result.totals]:
            table.add_row(
                *(
                    Text(_cell(row.get(c))) if c in row else Text(ROLLED_UP, style="dim italic")
                    for c in result.columns
                )
            )
    console = Console()
    console.print(table)


@click.group()
def demo() -> None:
    """Synthetic data to explore the analytics with."""


@demo.command("seed")
@click.option("--events", type=click.IntRange(1, 10_000_000), default=10_000, show_default=True)
@click.option("--days", type=click.IntRange(1, 3650), default=30, show_default=True)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="same seed, same events (request ids are new each run)",
)
def demo_seed(events, days, seed) -> None:
    """Record realistic synthetic requests over the last DAYS days (see warehouse/demo.py)."""
    from imgclass.vision.labels import imagenet_labels
    from imgclass.warehouse.demo import seed_demo
    from imgclass.warehouse.recorder import ClassFacts, utc_now

    labels = imagenet_labels()
    classes = [ClassFacts(i, labels.names[i], labels.wnids[i]) for i in range(len(labels))]
    engine = _engine()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("recording events", total=events)
        result = seed_demo(
            engine,
            events=events,
            days=days,
            classes=classes,
            now=utc_now(),
            seed=seed,
            progress=lambda n: bar.advance(task, n),
        )
    click.echo(
        f"recorded {result.events:,} events from {result.first:%Y-%m-%d %H:%M} to "
        f"{result.last:%Y-%m-%d %H:%M} UTC, with {result.feedback:,} feedback rows"
    )
