"""URLs in messages: a password never reaches a log line or an error."""

from __future__ import annotations

import re


def redact_url(url: str) -> str:
    """``url`` with any password (``user:password@`` or ``password=...``) replaced by ``***``."""
    redacted = re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)
    return re.sub(r"(?i)(password=)[^\s&]*", r"\1***", redacted)


def shown_url(url: str) -> str:
    """``redact_url(url)`` quoted, as error messages show it."""
    return repr(redact_url(url))


__all__ = ["redact_url", "shown_url"]
