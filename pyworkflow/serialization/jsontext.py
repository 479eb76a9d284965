"""Compact JSON text for plain JSON values, fast: orjson, falling back to the stdlib.

Only for values that are already plain JSON (str keys, no tags to apply): event data, encoded
arguments and results. The fallback covers what orjson refuses (integers beyond 64 bits). Output
is compact (``,`` and ``:`` separators), UTF-8, and the same for equal inputs.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_LONG_NUMBER = re.compile(r"\d{19}")
_STDLIB = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)


def dump_text(value: Any) -> str:
    """JSON text of a plain JSON value."""
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        return _STDLIB.encode(value)


def load_text(text: str | bytes) -> Any:
    """The plain JSON value of ``text`` (no tag decoding)."""
    value = orjson.loads(text)
    if isinstance(value, float | list | dict) and _LONG_NUMBER.search(
        text if isinstance(text, str) else text.decode()
    ):
        return json.loads(text)  # orjson reads integers beyond 64 bits as floats
    return value


__all__ = ["dump_text", "load_text"]
