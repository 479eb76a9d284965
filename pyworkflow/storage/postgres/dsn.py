"""How the PostgreSQL backend's server and options are written down: the DSN and its query.

A DSN may carry PyWorkflow's own options as query parameters (``schema``, ``pgbouncer``,
``min_size``, ``max_size``: ``postgresql://host/db?schema=app&pgbouncer=true``); they are split
off here and never sent to the server, the rest of the DSN goes to asyncpg as written. The
server is named in messages through ``pyworkflow.utils.urls.shown_url``, password as ``***``.

This module must never do I/O, never put a password into the text it returns for a message, and
never import the engine or a runtime.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

from pyworkflow.model.exceptions import ConfigurationError
from pyworkflow.utils.urls import shown_url

_DSN_OPTIONS = ("schema", "pgbouncer", "min_size", "max_size")  # ours, never sent to the server


def parse_bool(name: str, value: str, where: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name} must be true or false, got {value!r} in {where}")


def parse_int(name: str, value: str, where: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {value!r} in {where}") from None


def split_dsn(dsn: str) -> tuple[str | None, dict[str, str]]:
    """The DSN without PyWorkflow's query parameters (None if nothing is left), and those."""
    where = shown_url(dsn)
    try:
        parts = urlsplit(dsn)
        if parts.scheme.lower() not in ("postgres", "postgresql"):
            raise ValueError("expected postgresql://")
        if "," not in parts.netloc:  # a list of hosts has a port each: asyncpg checks them
            parts.port  # noqa: B018 - parsing the port validates it
    except ValueError as exc:
        raise ConfigurationError(f"malformed PostgreSQL URL {where}: {exc}") from None
    # Split by hand: urlunsplit would turn postgresql:///db into postgresql:/db.
    base, _, query = dsn.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    ours = {name: value for name, value in pairs if name in _DSN_OPTIONS}
    rest = urlencode([(name, value) for name, value in pairs if name not in _DSN_OPTIONS])
    if not (parts.netloc or parts.path.strip("/") or rest):
        return None, ours
    return base + (f"?{rest}" if rest else ""), ours


def with_query(dsn: str, query: str) -> str:
    """``dsn`` with more query parameters."""
    if not query:
        return dsn
    return dsn + ("&" if "?" in dsn else "?") + query


def shown_server(
    dsn: str | None,
    *,
    host: str | None,
    port: int | None,
    user: str | None,
    password: str | None,
    database: str | None,
) -> str:
    """The server, for messages: the DSN and settings, with the password as ``***``."""
    if dsn is None:
        user_part = f"{user or ''}{':***' if password else ''}"
        host_part = f"{host or ''}{f':{port}' if port else ''}"
        at = f"{user_part}@" if user_part else ""
        return shown_url(f"postgresql://{at}{host_part}/{database or ''}")
    settings = {"host": host, "port": port, "user": user}
    extra = ", ".join(f"{k}={v!r}" for k, v in settings.items() if v is not None)
    return shown_url(dsn) + (f" ({extra})" if extra else "")


__all__ = ["parse_bool", "parse_int", "shown_server", "split_dsn", "with_query"]
