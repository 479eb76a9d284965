"""How every ``pyworkflow`` command prints: ``--output table|json|plain``, and progress.

``table`` is a ``rich`` table for people (colours only on a terminal; off one the table keeps its
natural width, so it is never cut at 80 columns); ``plain`` is one tab-separated record per line
with no decoration (``-`` for an empty field), for ``cut`` and ``grep``; ``json`` is one JSON
document on stdout (a list for list commands). Detail views (one record) print a two-column table,
``field<TAB>value`` lines, or the record's JSON object.

Progress (a spinner while waiting) goes to stderr and only when stderr is a terminal, so it never
mixes into what a script reads. This module prints; it never reads storage.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

T = TypeVar("T")

OUTPUTS = ("table", "json", "plain")

# Colours of status words in tables (runs, hooks, schedules).
STATUS_STYLES = {
    "active": "green",
    "paused": "yellow",
    "deleted": "dim",
    "completed": "green",
    "received": "green",
    "running": "cyan",
    "pending": "cyan",
    "suspended": "yellow",
    "interrupted": "yellow",
    "failed": "red",
    "blocked": "bold red",
    "expired": "dim",
    "disposed": "dim",
    "cancelled": "dim",
    "continued_as_new": "dim",
}


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a listing: its header, and how its cells look in a table."""

    header: str
    numeric: bool = False
    no_wrap: bool = False
    styled: bool = False  # the cell is a status word: coloured by STATUS_STYLES
    width: int | None = None  # fixed (listings printed in batches line up)
    min_width: int | None = None


# -- values -------------------------------------------------------------------------------------


def when(moment: datetime | None, exact: bool = False) -> str:
    """A time in UTC: ``2026-01-31T09:00:00Z`` (``exact``: full ISO 8601 with microseconds)."""
    if moment is None:
        return "-"
    utc = moment.astimezone(UTC)
    return utc.isoformat() if exact else utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_duration(value: timedelta) -> str:
    """``timedelta(minutes=90)`` -> ``1h30m``: the form ``--interval`` takes."""
    seconds = value.total_seconds()
    if seconds == 0:
        return "0s"
    parts = []
    whole = int(seconds)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    rest = whole + (seconds - int(seconds))
    if rest:
        parts.append(f"{round(rest, 6):g}s")
    return "".join(parts)


def cell(value: Any) -> str:
    """A field as one cell: ``-`` for nothing, ``yes``/``no``, lists comma-joined."""
    if value is None or value == "" or value == [] or value == ():
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, datetime):
        return when(value, exact=True)
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, dict):
        return compact_json(value)
    return str(value).replace("\t", " ").replace("\n", " ")


def compact_json(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"), ensure_ascii=False)


def json_text(value: Any) -> str:
    """A value as one line of JSON (what a user would type back)."""
    return json.dumps(value, default=str, ensure_ascii=False)


def shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- printing -----------------------------------------------------------------------------------


def echo_json(document: Any, *, lines: bool = False, err: bool = False) -> None:
    """One JSON document (``lines``: on one line, for JSON Lines streams)."""
    text = json.dumps(document, default=str, ensure_ascii=False, indent=None if lines else 2)
    click.echo(text, err=err)


def print_table(table: Table, *, err: bool = False) -> None:
    """Render with rich, then write through click (colours only on a terminal; output captured
    like any other). Off a terminal the table keeps its natural width instead of 80 columns."""
    tty = (sys.stderr if err else sys.stdout).isatty()
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        force_terminal=tty,
        width=None if tty else 1_000,
        highlight=False,
        markup=False,
        emoji=False,
    )
    console.print(table)
    click.echo("\n".join(line.rstrip() for line in buffer.getvalue().splitlines()), err=err)


def rows_table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], *, header: bool = True
) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, show_header=header)
    for column in columns:
        table.add_column(
            column.header,
            justify="right" if column.numeric else "left",
            no_wrap=column.no_wrap,
            width=column.width,
            min_width=column.min_width or column.width,
        )
    for row in rows:
        cells = [Text(value) for value in row]
        for index, column in enumerate(columns):
            if column.styled:
                cells[index].stylize(STATUS_STYLES.get(row[index], ""))
        table.add_row(*cells)
    return table


def emit_records(
    records: Sequence[T],
    columns: Sequence[Column],
    cells: Callable[[T, bool], list[str]],
    output: str,
    *,
    document: Callable[[T], Any],
    empty: str,
) -> None:
    """A listing: a table (``cells(record, False)``), plain lines (``cells(record, True)``: exact
    values) or a JSON list of ``document(record)``. An empty table says ``empty``."""
    if output == "json":
        echo_json([document(record) for record in records])
    elif output == "plain":
        for record in records:
            click.echo("\t".join(cells(record, True)))
    elif not records:
        click.echo(empty)
    else:
        print_table(rows_table(columns, [cells(record, False) for record in records]))


def emit_fields(fields: Sequence[tuple[str, str]], output: str, document: Any) -> None:
    """One record: a field/value table, ``field<TAB>value`` lines, or ``document`` as JSON."""
    if output == "json":
        echo_json(document)
    elif output == "plain":
        for name, value in fields:
            click.echo(f"{name}\t{value}")
    else:
        print_table(fields_table(fields))


def fields_table(fields: Sequence[tuple[str, str]]) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in fields:
        text = Text(value)
        if name == "status":
            text.stylize(STATUS_STYLES.get(value.split()[0] if value else "", ""))
        table.add_row(Text(name), text)
    return table


@contextlib.contextmanager
def progress(message: str) -> Iterator[None]:
    """A spinner with ``message`` on stderr while the block runs, when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield
        return
    with Console(stderr=True).status(message):
        yield


__all__ = [
    "OUTPUTS",
    "Column",
    "cell",
    "compact_json",
    "echo_json",
    "emit_fields",
    "emit_records",
    "fields_table",
    "format_duration",
    "json_text",
    "print_table",
    "progress",
    "rows_table",
    "shorten",
    "when",
]
