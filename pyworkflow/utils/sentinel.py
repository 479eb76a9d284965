"""Redis Sentinel URLs: ``sentinel://`` parsed into the sentinels, the master's name, settings.

One form serves both the Redis storage and the Celery broker::

    sentinel://[[user]:password@]host[:port][,host[:port]...]/<master_name>[/<db>][?options]

- the hosts are the sentinels (port 26379 when left out), asked in turn where the master is;
- ``user``/``password`` authenticate to the master (and its replicas), not to the sentinels;
- ``<db>`` is the database number on the master (default 0);
- options: ``sentinel_password`` and ``sentinel_username`` (for sentinels started with
  ``requirepass``), ``password`` (the master's, instead of the part before ``@``) and
  ``socket_timeout`` (seconds to wait for a reply, as in ``redis://`` URLs).

Percent-escapes are decoded in names and passwords (write ``;``, ``/``, ``@``, ``?`` and ``#``
in a password as ``%3B``, ``%2F``, ``%40``, ``%3F`` and ``%23``). A malformed URL is one
``ConfigurationError`` naming it without its passwords. This module only parses: it must never
connect to anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

from pyworkflow.model.exceptions import ConfigurationError
from pyworkflow.utils.urls import shown_url

SCHEME = "sentinel"
DEFAULT_SENTINEL_PORT = 26379
FORM = "sentinel://[:password@]host:26379[,host:26380...]/<master_name>[/<db>]"
OPTIONS = ("password", "sentinel_password", "sentinel_username", "socket_timeout")


@dataclass(frozen=True, slots=True)
class SentinelURL:
    """What a ``sentinel://`` URL names (see the module docstring)."""

    sentinels: tuple[tuple[str, int], ...]  # (host, port), in the URL's order; at least one
    master_name: str
    db: int = 0
    username: str | None = None  # the master's
    password: str | None = None  # the master's
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    socket_timeout: float | None = None

    def addresses(self) -> list[str]:
        """``host:port`` of each sentinel (``[v6 address]:port``)."""
        return [address(host, port) for host, port in self.sentinels]


def is_sentinel_url(url: str) -> bool:
    return url[: len(SCHEME) + 3].lower() == f"{SCHEME}://"


def parse_sentinel_url(url: str) -> SentinelURL:
    """The sentinels, master name and settings of ``url``; ``ConfigurationError`` if malformed."""
    if not is_sentinel_url(url):
        raise _malformed(url, "it does not start with sentinel://")
    rest = url[len(SCHEME) + 3 :]
    rest, _, query = rest.partition("?")
    rest, _, fragment = rest.partition("#")
    if fragment:
        raise _malformed(url, "a '#' fragment means nothing here")
    if ";" in rest:  # kombu's form: sentinel://h1:26379;sentinel://h2:26379
        raise _malformed(url, "separate the sentinels with ',' in one URL")
    netloc, _, path = rest.partition("/")
    path = path.removesuffix("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = tuple(_sentinel(url, part) for part in hosts.split(","))
    names = [unquote(part) for part in path.split("/")] if path else []
    if not names or not names[0]:
        raise _malformed(url, "name the master after the sentinels: /<master_name>")
    if len(names) > 2 or (len(names) == 2 and not names[1].isdigit()):
        raise _malformed(url, "the path is /<master_name> or /<master_name>/<database number>")
    options = _options(url, query)
    if password is not None and "password" in options:
        raise _malformed(url, "give the master's password once, before '@' or as ?password=")
    return SentinelURL(
        sentinels=sentinels,
        master_name=names[0],
        db=int(names[1]) if len(names) == 2 else 0,
        username=username,
        password=options.get("password", password),
        sentinel_username=options.get("sentinel_username"),
        sentinel_password=options.get("sentinel_password"),
        socket_timeout=(
            _seconds(url, options["socket_timeout"]) if "socket_timeout" in options else None
        ),
    )


def _sentinel(url: str, part: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6 address]:port``."""
    if part.startswith("["):
        host, bracket, port = part[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            raise _malformed(url, f"bad sentinel address {part!r}")
        port = port[1:]
    else:
        host, _, port = part.partition(":")
    if not host:
        raise _malformed(url, "every sentinel needs a host: host1:26379,host2:26379")
    if not port:
        return host, DEFAULT_SENTINEL_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise _malformed(url, f"bad port in sentinel address {part!r}")
    return host, int(port)


def _options(url: str, query: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise _malformed(url, "bad query string") from None
    options = dict(pairs)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise _malformed(
            url, f"unknown option(s) {', '.join(unknown)} (known: {', '.join(OPTIONS)})"
        )
    return {name: value for name, value in options.items() if value != ""}


def _seconds(url: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise _malformed(url, f"socket_timeout must be a positive number of seconds, not {value!r}")
    return seconds


def address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _malformed(url: str, reason: str) -> ConfigurationError:
    return ConfigurationError(f"malformed Sentinel URL {shown_url(url)}: {reason} (form: {FORM})")


__all__ = [
    "DEFAULT_SENTINEL_PORT",
    "FORM",
    "SentinelURL",
    "address",
    "is_sentinel_url",
    "parse_sentinel_url",
]
