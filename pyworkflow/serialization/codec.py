"""The JSON codec for everything PyWorkflow records: step results, arguments, errors, payloads.

Plain JSON values (str, int, float, bool, None, lists, dicts with str keys) are written as
themselves. Every other supported value becomes a tagged object ``{"__pw__": "<tag>", ...}``:
datetimes, dates, times, timedeltas, decimals, UUIDs, enums, bytes, sets, tuples, dicts whose keys
are not all strings (or that contain the key ``"__pw__"``), pydantic models, dataclasses and
exceptions. Anything else is refused with a ``SerializationError`` naming the value, unless
pickling was allowed (``set_allow_pickle(True)``, ``configure(allow_pickle=True)``): then it is
pickled with cloudpickle. Pickling is off by default because unpickling runs code: whoever can
write to storage could run anything on every worker that reads it.

Decoding gives back the same types: a tuple comes back a tuple, a set a set, an exception its own
class when its module is already imported in this process (a ``RemoteError`` carrying the type
name and message otherwise): an error record never makes a process import a module it names
(importing runs the module's code). Models, dataclasses and enums are imported to be rebuilt as
their type. Output is deterministic: equal inputs give identical text (set items are sorted by
their encoded text; dict keys keep insertion order).

This module is a leaf: it must never import config, storage or the engine, and it must never
call an arbitrary callable named in the data it decodes -- only classes that are subclasses of the
base the tag promises (BaseModel, BaseException, Enum, a dataclass).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import importlib
import json
import math
import sys
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from operator import itemgetter
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import cloudpickle
from loguru import logger
from pydantic import BaseModel

from pyworkflow.model.exceptions import SerializationError, WorkflowError
from pyworkflow.serialization.jsontext import dump_text, load_text

TAG = "__pw__"
# Modules decoding may import: this library's (its exceptions' public home is a lazy module).
_OWN_PACKAGES = frozenset({"pyworkflow", "pyworkflow_testing"})

# Pickling is the fallback for values no tag covers, off unless ``configure(allow_pickle=True)``.
_allow_pickle = False

_JSON_TEXT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)
_PLAIN_TYPES = frozenset({str, int, bool, type(None)})
_MICROSECONDS = 1_000_000


class RemoteError(WorkflowError):
    """An exception whose class could not be rebuilt where it was decoded.

    ``type_name`` is the original class as ``module:QualName``; ``message`` is its ``str()``.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(type_name, message)
        self.type_name = type_name
        self.message = message

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}"


def set_allow_pickle(flag: bool) -> None:
    """Allow (or forbid) cloudpickle for values no tag covers, when encoding and decoding."""
    global _allow_pickle
    _allow_pickle = bool(flag)


def pickle_allowed() -> bool:
    """Whether values no tag covers are pickled (False by default)."""
    return _allow_pickle


# --------------------------------------------------------------------------- public API


def dumps(value: Any, *, what: str = "value") -> str:
    """Encode ``value`` as JSON text; ``what`` names it in errors ("result of step charge")."""
    text = dump_text(_encode_named(value, what))
    # (the hot path: one comparison; no character is more than 4 bytes of UTF-8)
    return text if len(text) <= _unchecked_up_to else _checked_size(text, what)


# Encoded values past these sizes (bytes of JSON) are warned about / refused (``set_value_limits``).
_warn_bytes = 512 * 1024
_max_bytes = 2 * 1024 * 1024
_unchecked_up_to = _warn_bytes // 4  # texts this long or shorter are within both limits


def set_value_limits(warn_bytes: int | None, max_bytes: int | None) -> None:
    """Warn when one encoded value is larger than ``warn_bytes``; refuse it with
    ``SerializationError`` when larger than ``max_bytes`` (None: no limit). A run records every
    value in its log and reads the whole log back to replay: large values belong in a blob store,
    with their key recorded."""
    global _warn_bytes, _max_bytes, _unchecked_up_to
    for name, value in (("warn_bytes", warn_bytes), ("max_bytes", max_bytes)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"{name} must be a positive number of bytes or None, got {value!r}")
    _warn_bytes = warn_bytes if warn_bytes is not None else 0
    _max_bytes = max_bytes if max_bytes is not None else 0
    _unchecked_up_to = min(limit for limit in (_warn_bytes, _max_bytes, 1 << 62) if limit) // 4


def value_limits() -> tuple[int | None, int | None]:
    return (_warn_bytes or None, _max_bytes or None)


def _checked_size(text: str, what: str) -> str:
    if len(text) <= _unchecked_up_to:
        return text
    size = len(text.encode())
    if _max_bytes and size > _max_bytes:
        raise SerializationError(
            f"{what} is {_human(size)} as JSON, over the {_human(_max_bytes)} limit of one"
            " recorded value: store it elsewhere (a file, a blob store) and pass its key, or raise"
            " the limit with configure(max_value_size=...)"
        )
    if _warn_bytes and size > _warn_bytes:
        logger.warning(
            "{} is {} as JSON (warning above {}): every recorded value is kept in the run's log"
            " and read back on replay",
            what,
            _human(size),
            _human(_warn_bytes),
        )
    return text


def _human(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB"
    return f"{size / 1024:.0f} KB" if size >= 1024 else f"{size} bytes"


def loads(text: str | bytes, *, what: str = "value") -> Any:
    """Decode JSON text written by ``dumps``."""
    try:
        if not isinstance(text, str):
            text = text.decode()
        if text == "null":
            return None
        if "{" not in text:
            return load_text(text)  # no objects, so no tags to decode
        return _DECODER.decode(text)
    except SerializationError:
        raise
    except Exception as exc:
        raise SerializationError(f"cannot deserialize {what}: {type(exc).__name__}: {exc}") from exc


def serialize_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str]:
    """Encode call arguments as (args JSON list, kwargs JSON object); errors name the argument."""
    encoded_args = [
        _encode_named(arg, f"argument {position} (positional)")
        for position, arg in enumerate(args, 1)
    ]
    if all(type(name) is str and name != TAG for name in kwargs):
        encoded_kwargs: Any = {
            name: _encode_named(arg, f"argument {name!r}") for name, arg in kwargs.items()
        }
    else:
        encoded_kwargs = _encode_named(kwargs, "keyword arguments")
    return (
        _checked_size(dump_text(encoded_args), "positional arguments"),
        _checked_size(dump_text(encoded_kwargs), "keyword arguments"),
    )


def deserialize_args(args_json: str, kwargs_json: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Decode what ``serialize_args`` wrote back into ``(args, kwargs)``."""
    args = loads(args_json, what="positional arguments")
    kwargs = loads(kwargs_json, what="keyword arguments")
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        raise SerializationError(
            "serialized arguments must be a JSON list and a JSON object, got "
            f"{type(args).__name__} and {type(kwargs).__name__}"
        )
    return tuple(args), kwargs


def serialize_exception(exc: BaseException) -> str:
    """Encode an exception with its type, args and attributes. Never fails for a real exception:
    parts that cannot be encoded are left out, and decoding then gives a ``RemoteError``."""
    return _JSON_TEXT.encode(_encode_exception(exc))


def deserialize_exception(text: str) -> BaseException:
    """Rebuild an exception written by ``serialize_exception`` (a ``RemoteError`` when its class
    cannot be imported or constructed here)."""
    try:
        value = loads(text, what="exception")
    except SerializationError:
        value = _remote_error_from_raw(text)
    if not isinstance(value, BaseException):
        raise SerializationError(f"expected a serialized exception, got {type(value).__name__}")
    return value


def error_fields(exc: BaseException) -> dict[str, str]:
    """What the log records of an error that ends a step or a run: ``error`` (its message, or
    its class name when the message is empty), ``error_type`` and ``exception`` (serialized)."""
    return {
        "error": _safe_str(exc) or type(exc).__name__,
        "error_type": error_type_name(exc),
        "exception": serialize_exception(exc),
    }


def error_type_name(exc: BaseException) -> str:
    """The exception's class as ``module:QualName``."""
    return _class_path(type(exc))


# --------------------------------------------------------------------------- encoding


class _Unencodable(Exception):  # noqa: N818 - internal signal, never escapes this module
    """Raised from deep inside ``_encode``; containers prepend their path segment on the way up.

    Invariant: ``current`` is the object whose position in its parent is the next segment.
    """

    def __init__(self, value: Any, reason: str) -> None:
        super().__init__(reason)
        self.value = value
        self.reason = reason
        self.current = value
        self.path: list[str] = []

    def inside(self, container: Any, segment: str) -> _Unencodable:
        self.path.insert(0, segment)
        self.current = container
        return self

    def describe(self, what: str, top: Any) -> str:
        head = f"{what} of type {_type_name(top)}: cannot be serialized: "
        if self.path:
            head += f"the value at {''.join(self.path)} of type {_type_name(self.value)} "
        return head + self.reason


def _encode_named(value: Any, what: str) -> Any:
    try:
        return _encode(value)
    except _Unencodable as exc:
        raise SerializationError(exc.describe(what, value)) from None
    except RecursionError:
        raise SerializationError(
            f"{what} of type {_type_name(value)}: cannot be serialized: "
            "it contains a reference cycle or is nested too deeply"
        ) from None


def _encode(value: Any) -> Any:
    """The JSON-ready form of ``value``: plain values as they are, others tagged."""
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return value
    encoder = _ENCODERS.get(kind)
    if encoder is not None:
        return encoder(value)
    return _encode_other(value)


def _encode_float(value: float) -> Any:
    if math.isfinite(value):
        return value
    return {TAG: "float", "v": repr(value)}


def _encode_list(value: list[Any]) -> list[Any]:
    try:
        return [_encode(item) for item in value]
    except _Unencodable as exc:
        raise exc.inside(value, _index_segment(value, exc.current)) from None


def _encode_tuple(value: tuple[Any, ...]) -> dict[str, Any]:
    try:
        return {TAG: "tuple", "v": [_encode(item) for item in value]}
    except _Unencodable as exc:
        raise exc.inside(value, _index_segment(value, exc.current)) from None


def _encode_dict(value: dict[Any, Any]) -> Any:
    for key in value:
        if type(key) is not str or key == TAG:
            return _encode_pairs(value)
    try:
        return {key: _encode(item) for key, item in value.items()}
    except _Unencodable as exc:
        raise exc.inside(value, _key_segment(value, exc.current)) from None


def _encode_pairs(value: dict[Any, Any]) -> dict[str, Any]:
    pairs = []
    for key, item in value.items():
        try:
            encoded_key = _encode(key)
        except _Unencodable as exc:
            raise exc.inside(value, f"<key {key!r}>") from None
        try:
            pairs.append([encoded_key, _encode(item)])
        except _Unencodable as exc:
            raise exc.inside(value, f"[{key!r}]") from None
    return {TAG: "dict", "v": pairs}


def _encode_set(value: set[Any] | frozenset[Any]) -> dict[str, Any]:
    try:
        items = [_encode(item) for item in value]
    except _Unencodable as exc:
        raise exc.inside(value, "<set item>") from None
    keyed = sorted(((_JSON_TEXT.encode(item), item) for item in items), key=itemgetter(0))
    tag = "set" if isinstance(value, set) else "frozenset"
    return {TAG: tag, "v": [item for _, item in keyed]}


def _encode_datetime(value: datetime) -> dict[str, Any]:
    encoded = {TAG: "datetime", "v": value.isoformat()}
    zone = value.tzinfo
    if isinstance(zone, ZoneInfo) and zone.key:
        encoded["tz"] = zone.key
    return encoded


def _encode_timedelta(value: timedelta) -> dict[str, Any]:
    # Exact: total microseconds as a decimal number of seconds, e.g. "5400" or "1.000001".
    micros = (value.days * 86_400 + value.seconds) * _MICROSECONDS + value.microseconds
    return {TAG: "timedelta", "v": str(Decimal(micros) / _MICROSECONDS)}


def _encode_other(value: Any) -> Any:
    if isinstance(value, Enum):
        return {TAG: "enum", "cls": _class_path(type(value)), "v": _encode(value.value)}
    if isinstance(value, BaseException):
        return _encode_exception(value)
    if isinstance(value, BaseModel):
        dumped = value.model_dump(mode="json")
        return {TAG: "model", "cls": _class_path(type(value)), "v": _encode(dumped)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _encode_dataclass(value)
    return _encode_pickle(value)


def _encode_dataclass(value: Any) -> dict[str, Any]:
    fields = {}
    for field in dataclasses.fields(value):
        if not field.init:
            continue  # computed by the class itself (__post_init__ or a default)
        try:
            fields[field.name] = _encode(getattr(value, field.name))
        except _Unencodable as exc:
            raise exc.inside(value, f".{field.name}") from None
    encoded = _encode_dict_of_encoded(fields)
    return {TAG: "dataclass", "cls": _class_path(type(value)), "v": encoded}


def _encode_pickle(value: Any) -> dict[str, Any]:
    if not _allow_pickle:
        raise _Unencodable(
            value,
            "is not a type PyWorkflow encodes as JSON, and pickling is disabled; "
            "configure(allow_pickle=True) would allow it",
        )
    try:
        data = cloudpickle.dumps(value)
    except Exception as exc:
        raise _Unencodable(
            value, f"could not be pickled either: {type(exc).__name__}: {exc}"
        ) from None
    return {TAG: "pickle", "v": base64.b64encode(data).decode("ascii")}


def _encode_exception(exc: BaseException) -> dict[str, Any]:
    encoded: dict[str, Any] = {TAG: "exception", "cls": error_type_name(exc)}
    encoded["message"] = _safe_str(exc)
    # Without "args" the exception decodes as RemoteError(type_name, message).
    with contextlib.suppress(_Unencodable, RecursionError):
        encoded["args"] = _encode_list(list(exc.args))
    state = {}
    for name, attribute in getattr(exc, "__dict__", {}).items():
        try:
            state[name] = _encode(attribute)
        except (_Unencodable, RecursionError):
            continue
    if state:
        encoded["state"] = _encode_dict_of_encoded(state)
    return encoded


def _encode_dict_of_encoded(encoded: dict[str, Any]) -> Any:
    """A str-keyed dict whose values are already encoded; escaped if a key is ``"__pw__"``."""
    if TAG in encoded:
        return {TAG: "dict", "v": [[key, item] for key, item in encoded.items()]}
    return encoded


_ENCODERS: dict[type, Callable[[Any], Any]] = {
    float: _encode_float,
    list: _encode_list,
    tuple: _encode_tuple,
    dict: _encode_dict,
    set: _encode_set,
    frozenset: _encode_set,
    datetime: _encode_datetime,
    date: lambda value: {TAG: "date", "v": value.isoformat()},
    time: lambda value: {TAG: "time", "v": value.isoformat()},
    timedelta: _encode_timedelta,
    Decimal: lambda value: {TAG: "decimal", "v": str(value)},
    UUID: lambda value: {TAG: "uuid", "v": str(value)},
    bytes: lambda value: {TAG: "bytes", "v": base64.b64encode(value).decode("ascii")},
    bytearray: lambda value: {TAG: "bytearray", "v": base64.b64encode(value).decode("ascii")},
}


# --------------------------------------------------------------------------- decoding


def _decode_object(obj: dict[str, Any]) -> Any:
    """``json.loads`` object hook: called bottom-up, so a tagged object's parts are decoded."""
    tag = obj.get(TAG)
    if tag is None:
        return obj
    decoder = _DECODERS.get(tag) if isinstance(tag, str) else None
    if decoder is None:
        raise SerializationError(f"unknown serialization tag {tag!r}")
    return decoder(obj)


def _decode_datetime(obj: dict[str, Any]) -> datetime:
    value = datetime.fromisoformat(obj["v"])
    key = obj.get("tz")
    if key is not None and value.tzinfo is not None:
        # A zone unknown here keeps the fixed offset: the instant is the same.
        with contextlib.suppress(Exception):
            value = value.astimezone(ZoneInfo(key))
    return value


def _decode_timedelta(obj: dict[str, Any]) -> timedelta:
    return timedelta(microseconds=int(Decimal(obj["v"]) * _MICROSECONDS))


def _decode_enum(obj: dict[str, Any]) -> Enum:
    cls: type[Enum] = _import_class(obj["cls"], Enum, "an Enum")
    return cls(obj["v"])


def _decode_model(obj: dict[str, Any]) -> BaseModel:
    cls: type[BaseModel] = _import_class(obj["cls"], BaseModel, "a pydantic model")
    return cls.model_validate(obj["v"])


def _decode_dataclass(obj: dict[str, Any]) -> Any:
    cls: Callable[..., Any] = _import_class(obj["cls"], object, "a dataclass")
    if not dataclasses.is_dataclass(cls):
        raise SerializationError(f"{obj['cls']} is not a dataclass; refusing to call it")
    return cls(**obj["v"])


def _decode_exception(obj: dict[str, Any]) -> BaseException:
    type_name = obj["cls"]
    message = obj.get("message", "")
    args = obj.get("args")
    try:
        cls = _import_class(type_name, BaseException, "an exception")
    except _NotImportable:
        return RemoteError(type_name, message)
    if args is None:
        return RemoteError(type_name, message)
    rebuilt = _construct_exception(cls, tuple(args), obj.get("state") or {})
    return RemoteError(type_name, message) if rebuilt is None else rebuilt


def _construct_exception(
    cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]
) -> BaseException | None:
    """``cls(*args)`` plus the recorded attributes, the way pickle rebuilds exceptions; when the
    constructor refuses those args, an instance made without running ``__init__``."""
    try:
        exc = cls(*args)
    except Exception:
        try:
            exc = cls.__new__(cls, *args)
            exc.args = args
        except Exception:
            return None
    with contextlib.suppress(Exception):
        exc.__dict__.update(state)
    return exc


def _decode_pickle(obj: dict[str, Any]) -> Any:
    if not _allow_pickle:
        raise SerializationError(
            "the data holds a pickled value and pickling is disabled; "
            "configure(allow_pickle=True) would allow decoding it"
        )
    return cloudpickle.loads(base64.b64decode(obj["v"]))


_DECODERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "float": lambda obj: float(obj["v"]),
    "tuple": lambda obj: tuple(obj["v"]),
    "set": lambda obj: set(obj["v"]),
    "frozenset": lambda obj: frozenset(obj["v"]),
    "dict": lambda obj: dict(obj["v"]),
    "datetime": _decode_datetime,
    "date": lambda obj: date.fromisoformat(obj["v"]),
    "time": lambda obj: time.fromisoformat(obj["v"]),
    "timedelta": _decode_timedelta,
    "decimal": lambda obj: Decimal(obj["v"]),
    "uuid": lambda obj: UUID(obj["v"]),
    "bytes": lambda obj: base64.b64decode(obj["v"]),
    "bytearray": lambda obj: bytearray(base64.b64decode(obj["v"])),
    "enum": _decode_enum,
    "model": _decode_model,
    "dataclass": _decode_dataclass,
    "exception": _decode_exception,
    "pickle": _decode_pickle,
}


def _remote_error_from_raw(text: str) -> RemoteError:
    """Last resort for an exception whose parts cannot be decoded here: keep type and message."""
    try:
        raw = json.loads(text)
        return RemoteError(str(raw["cls"]), str(raw.get("message", "")))
    except Exception as exc:
        raise SerializationError(f"cannot deserialize exception: {exc}") from exc


# --------------------------------------------------------------------------- class paths


def is_damaged(error: BaseException) -> bool:
    """Whether a decoding ``error`` means the stored text itself is damaged (not JSON, not
    UTF-8, a field missing) rather than unreadable *here* (a class whose module this process
    has not imported, pickling off in this process, a model whose validation changed): damage
    is the same for every reader; the rest may pass once the code or configuration is fixed."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, json.JSONDecodeError | UnicodeDecodeError | binascii.Error | KeyError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class _NotImportable(SerializationError):
    """The class named by an import path does not exist here."""


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _import_class(path: str, base: type, description: str) -> Any:
    """The class at ``module:QualName``, accepted only if it is a subclass of ``base``. For an
    exception the module must be imported already (this library's own excepted): an error
    record never makes a process import (run) a module it names; one that is not here comes
    back as a ``RemoteError``. Models, dataclasses and enums are imported as needed (a step's
    result must come back as its type)."""
    module_name, _, qualname = path.partition(":")
    try:
        found: Any = sys.modules.get(module_name)
        if found is None and (
            base is not BaseException or module_name.split(".")[0] in _OWN_PACKAGES
        ):
            found = importlib.import_module(module_name)
        if found is None:
            raise ImportError(f"module {module_name!r} is not imported in this process")
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception as exc:
        raise _NotImportable(f"cannot import {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(found, type) or not issubclass(found, base):
        raise SerializationError(f"{path} is not {description}; refusing to call it")
    return found


# --------------------------------------------------------------------------- error messages


def _type_name(value: Any) -> str:
    return type(value).__qualname__


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__qualname__}>"


def _index_segment(container: list[Any] | tuple[Any, ...], child: Any) -> str:
    for index, item in enumerate(container):
        if item is child:
            return f"[{index}]"
    return "[?]"


def _key_segment(container: dict[Any, Any], child: Any) -> str:
    for key, item in container.items():
        if item is child:
            return f"[{key!r}]"
    return "[?]"


# One decoder for every call: ``json.loads(text, object_hook=...)`` would build a new one each time.
_DECODER = json.JSONDecoder(object_hook=_decode_object)
