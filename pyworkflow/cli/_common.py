"""What every ``pyworkflow`` command shares: error answers, global settings, parameter types,
storage selection, and running a command's coroutine.

Errors are answered in one place, ``CliGroup.invoke`` (the root group's): every exception a
command lets out becomes one line on stderr and an exit code, never a traceback unless
``-v/--verbose`` (then the traceback goes to stderr first).

- 2 (usage): click's own usage errors, ``InputError``, and ``ValueError`` (malformed JSON, a bad
  duration, ...) -- whatever the user typed is wrong;
- 1 (runtime): a ``WorkflowError`` (unknown run, hook or schedule, a failed run, an unreachable
  server, ...), an ``OSError`` (a file, a connection), or anything unexpected.

Interactive prompts happen only when stdin is a terminal (``interactive()``); in a script a
missing argument is a usage error. This module never prints results (``_output`` does).
"""

from __future__ import annotations

import asyncio
import json
import os
import pkgutil
import sys
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click

from pyworkflow.api import get_runtime
from pyworkflow.cli._output import OUTPUTS
from pyworkflow.config import get_config, get_storage, runtime_name
from pyworkflow.core.registry import WorkflowDefinition, list_workflows
from pyworkflow.model.exceptions import WorkflowError
from pyworkflow.runtime.local import LocalRuntime
from pyworkflow.storage.base import StorageBackend
from pyworkflow.utils.duration import parse_duration

F = TypeVar("F", bound=Callable[..., Any])


class InputError(click.ClickException):
    """Bad input, answered in one line (``Error: ...``) with exit code 2, like a usage error."""

    exit_code = 2


# -- global settings ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CliSettings:
    """The root group's options that commands read (``settings()``)."""

    output: str = "table"
    verbose: int = 0
    runtime: str | None = None  # --runtime, when given (configured: it wins over the env)


def settings() -> CliSettings:
    ctx = click.get_current_context(silent=True)
    found = ctx.find_object(CliSettings) if ctx is not None else None
    return found if found is not None else CliSettings()


def output_option(func: F) -> F:
    """``--output/-o`` on a command: overrides the global ``--output`` for it."""
    return click.option(
        "--output",
        "-o",
        type=click.Choice(OUTPUTS),
        default=None,
        help="table for people, json for programs, plain: tab-separated lines"
        " (default: the global --output, table).",
    )(func)


def output_of(chosen: str | None, as_json: bool = False) -> str:
    """The output format of a command: its ``--json`` flag, its ``--output``, else the global."""
    if as_json:
        return "json"
    return chosen or settings().output


def interactive() -> bool:
    """Whether prompting is allowed: stdin is a terminal (never in scripts and pipelines)."""
    return sys.stdin.isatty()


# -- the error boundary -------------------------------------------------------------------------


# A group given no command shows its help: a "usage error" (click >= 8.2) that stays as it is.
_HELP: tuple[type[Exception], ...] = tuple(
    error for error in [getattr(click.exceptions, "NoArgsIsHelpError", None)] if error is not None
)


class CliGroup(click.Group):
    """The root group: maps what commands raise to one line and an exit code (module docstring)."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except _HELP:
            raise
        except click.UsageError as exc:
            raise InputError(_usage_line(exc)) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _HELP:
            raise
        except click.UsageError as exc:
            raise InputError(_usage_line(exc)) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place every error is answered
            if ctx.params.get("verbose"):
                click.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
            raise answer_for(exc) from None


def one_line(message: str) -> str:
    """A message of several lines (a non-determinism diff) joined into one."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


def _usage_line(exc: click.UsageError) -> str:
    hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    return exc.format_message() + hint


def answer_for(exc: Exception) -> click.ClickException:
    """The one-line answer (and exit code) for an exception a command let out."""
    message = one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, WorkflowError):
        return click.ClickException(message)
    if isinstance(exc, OSError):
        return click.ClickException(f"{type(exc).__name__}: {message}")
    if isinstance(exc, ValueError):
        return InputError(message)
    return click.ClickException(f"{type(exc).__name__}: {message} (run with -v for the traceback)")


# -- parameter types ----------------------------------------------------------------------------


class DurationType(click.ParamType):
    """``30s``, ``5m``, ``1h30m``, ... (``pyworkflow.utils.duration``)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class DateTimeType(click.ParamType):
    """An ISO 8601 date-time; without a zone it is UTC."""

    name = "datetime"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            moment = value
        else:
            try:
                moment = datetime.fromisoformat(str(value))
            except ValueError:
                self.fail(
                    f"{value!r} is not an ISO 8601 date-time (e.g. 2026-01-31T09:00:00, UTC,"
                    " or 2026-01-31T09:00:00+01:00)",
                    param,
                    ctx,
                )
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class JsonType(click.ParamType):
    """A JSON text that must decode to one of ``kinds`` (list, dict; none given: any value)."""

    def __init__(self, *kinds: type) -> None:
        self.kinds = kinds
        names = "-or-".join("list" if k is list else "object" for k in kinds)
        self.name = f"json-{names}" if names else "json"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if self.kinds and isinstance(value, self.kinds):
            return value
        try:
            decoded = parse_json(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if self.kinds and not isinstance(decoded, self.kinds):
            wanted = " or ".join(
                "a JSON list" if kind is list else "a JSON object" for kind in self.kinds
            )
            self.fail(f"{value!r} is not {wanted}", param, ctx)
        return decoded


def parse_json(text: str) -> Any:
    """Decode ``text``; ``ValueError`` naming it when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{shown(text)} is not JSON: {exc}") from None
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


def shown(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


DURATION = DurationType()
DATETIME = DateTimeType()


# -- storage and runtime selection --------------------------------------------------------------

STORAGE_TYPES = ("sqlite", "file", "memory", "postgres", "redis")
_PATH_TYPES = {"sqlite": "sqlite", "sqlite3": "sqlite", "file": "file"}


def storage_setting(storage: str | None, storage_path: str | None) -> Any:
    """What ``--storage`` and ``--storage-path`` ask for, as ``configure(storage=...)`` takes it
    (None: neither was given).

    ``--storage`` is a URL (``sqlite:///x.db``, ``postgresql://...``) or a type (``sqlite``,
    ``file``, ``memory``, ``postgres``, ``redis``); ``--storage-path`` is where a ``sqlite`` or
    ``file`` storage keeps its data. A path alone keeps the configured type when that is
    ``file`` or ``sqlite`` (the config file's, else ``PYWORKFLOW_STORAGE_TYPE``), else SQLite.
    """
    if storage is not None and "://" in storage:
        if storage_path is not None:
            raise InputError("give --storage URL or --storage TYPE --storage-path PATH, not both")
        return storage
    if storage is None and storage_path is None:
        return None
    kind = storage.lower() if storage is not None else _configured_path_type()
    if kind not in (*STORAGE_TYPES, "postgresql", "sqlite3"):
        raise InputError(
            f"unknown storage {storage!r}: give a URL (sqlite:///path.db, postgresql://...,"
            f" redis://..., file://dir, memory://) or a type ({', '.join(STORAGE_TYPES)})"
        )
    if storage_path is None:
        return {"type": kind}
    if kind not in _PATH_TYPES:
        raise InputError(f"--storage-path applies to sqlite and file storage, not {kind}")
    return {"type": kind, "path": storage_path}


def _configured_path_type() -> str:
    configured = get_config().storage
    if configured is not None:
        kind = _PATH_TYPES.get(str(configured.to_config().get("type", "")))
        if kind is not None:
            return kind
    return _PATH_TYPES.get(os.environ.get("PYWORKFLOW_STORAGE_TYPE", "").lower(), "sqlite")


def require_storage() -> None:
    """Inspecting never creates storage: a path that holds none is reported, not made.

    (A mistyped ``sqlite:///`` URL would otherwise leave an empty database behind and list
    nothing, as if the runs were gone.)
    """
    storage = get_storage()
    where = storage.local_path()
    if where is None or where.exists():
        return
    hint = f"; {storage.url_hint}" if storage.url_hint else ""
    raise click.ClickException(
        f"no {storage.kind} at {where.resolve()} (nothing has run with this storage yet{hint})"
    )


# -- running a command's coroutine --------------------------------------------------------------


def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` on a fresh event loop. Afterwards the local runtime's background services of
    that loop stop and the storage's connections close (the next call reconnects)."""

    async def whole() -> Any:
        try:
            return await coro
        finally:
            await _local_runtime().shutdown()
            storage = get_config().storage
            if storage is not None:
                await storage.close()

    return asyncio.run(whole())


def _local_runtime() -> LocalRuntime:
    runtime = get_runtime("local")
    assert isinstance(runtime, LocalRuntime)
    return runtime


def local_runtime() -> LocalRuntime | None:
    """The local runtime when it is the one chosen (``--runtime``, else configured), else None
    (never instantiating another runtime: Celery stays unimported)."""
    return _local_runtime() if (settings().runtime or runtime_name()) == "local" else None


async def advance_local_runs() -> None:
    """On the local runtime, runs this command started or woke are tasks of this event loop: let
    them go as far as they go now (they are durable; what waits resumes with whoever serves the
    storage)."""
    runtime = local_runtime()
    if runtime is not None:
        await runtime.drain(get_storage())


async def serve_local_timers(storage: StorageBackend) -> None:
    """While a command waits on a run, this process serves the storage's timers on the local
    runtime (as ``get_workflow_result`` does), so a sleeping run wakes on time."""
    runtime = local_runtime()
    if runtime is not None:
        await runtime.ensure_running(storage)


# -- workflows ----------------------------------------------------------------------------------


def unknown_workflow(name: str) -> str:
    known = ", ".join(sorted(list_workflows())) or "none"
    return (
        f"no workflow {name!r} (registered: {known}); import the module that defines it with"
        " --module or the config's module"
    )


def check_arguments(
    definition: WorkflowDefinition, args: list[Any], kwargs: dict[str, Any], param_hint: str
) -> None:
    """Arguments that do not fit the workflow's signature are a usage error naming the misfit."""
    try:
        definition.signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise click.BadParameter(
            f"they do not fit workflow {definition.name!r}: {exc}"
            f" (it takes {definition.name}{definition.signature})",
            param_hint=param_hint,
        ) from None


def timeout_option(help_text: str) -> Callable[[F], F]:
    """``--timeout SECONDS`` (more than 0; default: no limit)."""
    return click.option(
        "--timeout", type=click.FloatRange(0, min_open=True), default=None, help=help_text
    )


def find_workflow(name: str) -> WorkflowDefinition:
    definition = list_workflows().get(name)
    if definition is None:
        raise click.ClickException(unknown_workflow(name))
    return definition


def resolve(path: str) -> Any:
    """The object ``module:QualName`` names (None when it cannot be imported)."""
    try:
        return pkgutil.resolve_name(path)
    except (ImportError, AttributeError, ValueError):
        return None


__all__ = [
    "DATETIME",
    "DURATION",
    "CliGroup",
    "CliSettings",
    "DateTimeType",
    "DurationType",
    "InputError",
    "JsonType",
    "STORAGE_TYPES",
    "advance_local_runs",
    "answer_for",
    "check_arguments",
    "find_workflow",
    "interactive",
    "local_runtime",
    "one_line",
    "output_of",
    "output_option",
    "parse_json",
    "require_storage",
    "resolve",
    "run_async",
    "serve_local_timers",
    "settings",
    "storage_setting",
    "timeout_option",
    "unknown_workflow",
]
