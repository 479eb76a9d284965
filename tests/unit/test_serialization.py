"""The tagged JSON codec: every tagged type round-trips with its type, errors name the value."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import Enum, IntEnum
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from pyworkflow.model.exceptions import (
    NonDeterminismError,
    RetryableError,
    SerializationError,
    WorkflowError,
)
from pyworkflow.serialization import (
    RemoteError,
    deserialize_args,
    deserialize_exception,
    dumps,
    error_type_name,
    loads,
    pickle_allowed,
    serialize_args,
    serialize_exception,
    set_allow_pickle,
)


class Color(Enum):
    RED = "red"
    BLUE = (0, 0, 255)


class Priority(IntEnum):
    LOW = 1
    HIGH = 2


class Address(BaseModel):
    street: str
    zip_code: str
    tags: list[str] = []


@dataclass
class Order:
    order_id: str
    address: Address
    placed_at: datetime
    lines: list[tuple[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class Point:
    x: int
    y: int


@dataclass
class WithComputed:
    base: int
    doubled: int = field(init=False)

    def __post_init__(self) -> None:
        self.doubled = self.base * 2


class PaymentDeclined(Exception):
    def __init__(self, card: str, amount: Decimal) -> None:
        super().__init__(card, amount)
        self.card = card
        self.amount = amount


class OutOfStock(Exception):
    """Its __init__ does not accept what ends up in args: rebuilt without running __init__."""

    def __init__(self, *, sku: str) -> None:
        super().__init__(f"{sku} is out of stock")
        self.sku = sku


class Slotted:
    """Neither a dataclass nor a model: only the pickle fallback can carry it."""

    __slots__ = ("name", "size")

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Slotted) and (self.name, self.size) == (other.name, other.size)

    def __hash__(self) -> int:
        return hash((self.name, self.size))


@pytest.fixture
def pickle_off() -> Iterator[None]:
    previous = pickle_allowed()
    set_allow_pickle(False)
    try:
        yield
    finally:
        set_allow_pickle(previous)


@pytest.fixture(autouse=True)
def _restore_pickle_flag() -> Iterator[None]:
    previous = pickle_allowed()
    yield
    set_allow_pickle(previous)


def roundtrip(value: Any) -> Any:
    return loads(dumps(value))


# --------------------------------------------------------------------------- plain JSON


@pytest.mark.parametrize(
    "value",
    ["text", "ünïcode ✓", 0, -7, 10**30, 1.5, -0.0, True, False, None, [], {}, [1, "a", None]],
)
def test_plain_json_values_encode_as_themselves(value: Any) -> None:
    text = dumps(value)
    assert json.loads(text) == value
    assert roundtrip(value) == value
    assert type(roundtrip(value)) is type(value)


def test_plain_dict_keeps_insertion_order_and_compact_unescaped_text() -> None:
    text = dumps({"b": 1, "a": "é"})
    assert text == '{"b":1,"a":"é"}'
    assert list(loads(text)) == ["b", "a"]


@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_non_finite_floats_round_trip_as_tagged_values(value: float) -> None:
    assert "Infinity" not in dumps(value)
    assert roundtrip(value) == value


def test_nan_round_trips() -> None:
    result = roundtrip(float("nan"))
    assert result != result


# --------------------------------------------------------------------------- tagged scalars


@pytest.mark.parametrize(
    "value",
    [
        datetime(2024, 3, 1, 12, 30, 45, 123456),
        datetime(2024, 3, 1, 12, 30, tzinfo=UTC),
        datetime(2024, 3, 1, 12, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        date(2024, 2, 29),
        time(23, 59, 59, 999999),
        time(8, 0, tzinfo=timezone(timedelta(hours=-3))),
        timedelta(0),
        timedelta(hours=1, minutes=30),
        timedelta(days=-1, microseconds=1),
        timedelta.max,
        timedelta.min,
        Decimal("1.10"),
        Decimal("-0.000000000000000000001"),
        UUID("12345678-1234-5678-1234-567812345678"),
        b"\x00\xffbinary",
        bytearray(b"abc"),
        Color.RED,
        Color.BLUE,
        Priority.HIGH,
    ],
    ids=repr,
)
def test_tagged_scalar_round_trips_with_its_type(value: Any) -> None:
    result = roundtrip(value)
    assert result == value
    assert type(result) is type(value)


def test_datetime_keeps_its_offset_and_zone() -> None:
    aware = datetime(2024, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert roundtrip(aware).utcoffset() == timedelta(hours=2)
    zoned = datetime(2024, 7, 1, 9, 0, tzinfo=ZoneInfo("Europe/Paris"))
    result = roundtrip(zoned)
    assert result == zoned
    assert result.tzinfo == ZoneInfo("Europe/Paris")
    assert roundtrip(datetime(2024, 1, 1)).tzinfo is None


def test_decimal_keeps_its_exact_digits() -> None:
    assert str(roundtrip(Decimal("1.10"))) == "1.10"


def test_timedelta_is_written_as_exact_total_seconds() -> None:
    assert json.loads(dumps(timedelta(hours=1, minutes=30)))["v"] == "5400"
    assert json.loads(dumps(timedelta(seconds=1, microseconds=1)))["v"] == "1.000001"


def test_enum_is_written_with_its_import_path() -> None:
    encoded = json.loads(dumps(Color.RED))
    assert encoded == {"__pw__": "enum", "cls": f"{__name__}:Color", "v": "red"}


# --------------------------------------------------------------------------- containers


def test_tuple_comes_back_a_tuple() -> None:
    assert roundtrip((1, "a", None)) == (1, "a", None)
    assert type(roundtrip((1, 2))) is tuple
    assert roundtrip(()) == ()


def test_sets_come_back_sets() -> None:
    assert roundtrip({1, 2, 3}) == {1, 2, 3}
    assert type(roundtrip({1})) is set
    assert type(roundtrip(frozenset({"a"}))) is frozenset
    assert roundtrip(set()) == set()


def test_set_of_tuples() -> None:
    value = {(1, "a"), (2, "b"), ()}
    result = roundtrip(value)
    assert result == value
    assert all(type(item) is tuple for item in result)


def test_nested_tuple_inside_dict_inside_list() -> None:
    value = [{"pair": (1, (2, 3)), "list": [4]}, ("top",)]
    result = roundtrip(value)
    assert result == value
    assert type(result[0]["pair"]) is tuple
    assert type(result[0]["pair"][1]) is tuple
    assert type(result[0]["list"]) is list


def test_dict_with_int_keys() -> None:
    value = {1: "one", 2: {3: "three"}}
    result = roundtrip(value)
    assert result == value
    assert list(result) == [1, 2]


def test_dict_with_mixed_and_hashable_keys() -> None:
    value = {(1, 2): "tuple", None: 0, "s": 1, Color.RED: 2, frozenset({1}): 3}
    assert roundtrip(value) == value


def test_user_dict_containing_the_tag_key_is_escaped() -> None:
    value = {"__pw__": "tuple", "v": [1, 2]}
    result = roundtrip(value)
    assert result == value
    assert type(result) is dict
    nested = [{"x": {"__pw__": "pickle", "v": "not base64"}}]
    assert roundtrip(nested) == nested


# --------------------------------------------------------------------------- models, dataclasses


def test_pydantic_model_round_trips() -> None:
    address = Address(street="1 Main St", zip_code="02139", tags=["home"])
    result = roundtrip(address)
    assert result == address
    assert type(result) is Address


def test_dataclass_with_model_and_datetime() -> None:
    order = Order(
        order_id="o-1",
        address=Address(street="1 Main St", zip_code="02139"),
        placed_at=datetime(2024, 3, 1, 12, 0, tzinfo=UTC),
        lines=[("sku-1", 2), ("sku-2", 1)],
    )
    result = roundtrip(order)
    assert result == order
    assert type(result) is Order
    assert type(result.address) is Address
    assert type(result.lines[0]) is tuple


def test_frozen_dataclass_and_init_false_fields() -> None:
    assert roundtrip(Point(1, 2)) == Point(1, 2)
    assert roundtrip({Point(1, 2)}) == {Point(1, 2)}
    assert roundtrip(WithComputed(4)).doubled == 8


def test_decoding_refuses_classes_outside_the_promised_base() -> None:
    forged = json.dumps({"__pw__": "dataclass", "cls": "os:system", "v": {}})
    with pytest.raises(SerializationError, match="not a dataclass"):
        loads(forged)
    forged = json.dumps({"__pw__": "model", "cls": "builtins:dict", "v": {}})
    with pytest.raises(SerializationError, match="not a pydantic model"):
        loads(forged)
    forged = json.dumps({"__pw__": "enum", "cls": "subprocess:Popen", "v": "ls"})
    with pytest.raises(SerializationError, match="not an Enum"):
        loads(forged)
    forged = json.dumps({"__pw__": "exception", "cls": "os:system", "args": ["ls"]})
    with pytest.raises(SerializationError, match="not an exception"):
        loads(forged)


def test_unknown_tag_and_bad_json_raise_serialization_error() -> None:
    with pytest.raises(SerializationError, match="unknown serialization tag"):
        loads('{"__pw__":"nope"}')
    with pytest.raises(SerializationError, match="cannot deserialize"):
        loads("{not json")


# --------------------------------------------------------------------------- exceptions


def test_custom_exception_keeps_type_args_and_attributes() -> None:
    error = PaymentDeclined("visa-4242", Decimal("19.99"))
    result = deserialize_exception(serialize_exception(error))
    assert type(result) is PaymentDeclined
    assert result.args == ("visa-4242", Decimal("19.99"))
    assert result.amount == Decimal("19.99")


def test_builtin_exception_keeps_type_and_args() -> None:
    result = deserialize_exception(serialize_exception(ValueError("bad", 3)))
    assert type(result) is ValueError
    assert result.args == ("bad", 3)
    key_error = deserialize_exception(serialize_exception(KeyError("k")))
    assert type(key_error) is KeyError
    assert str(key_error) == "'k'"


def test_retryable_error_keeps_retry_after() -> None:
    result = deserialize_exception(serialize_exception(RetryableError("x", retry_after="5s")))
    assert type(result) is RetryableError
    assert str(result) == "x"
    assert result.retry_after == "5s"
    assert result.args == ("x", "5s")


def test_non_determinism_error_keeps_its_fields() -> None:
    error = NonDeterminismError("mismatch", position=3, expected="step a", actual="sleep")
    result = deserialize_exception(serialize_exception(error))
    assert type(result) is NonDeterminismError
    assert (result.position, result.expected, result.actual) == (3, "step a", "sleep")


def test_exception_whose_init_rejects_its_args_is_rebuilt_without_init() -> None:
    result = deserialize_exception(serialize_exception(OutOfStock(sku="A1")))
    assert type(result) is OutOfStock
    assert str(result) == "A1 is out of stock"
    assert result.sku == "A1"


def test_exception_inside_a_value_round_trips() -> None:
    result = roundtrip({"error": ValueError("inner")})
    assert type(result["error"]) is ValueError
    assert result["error"].args == ("inner",)


def test_local_exception_class_decodes_to_remote_error() -> None:
    class LocalError(Exception):
        pass

    text = serialize_exception(LocalError("boom"))
    result = deserialize_exception(text)
    assert isinstance(result, RemoteError)
    assert isinstance(result, WorkflowError)
    assert result.message == "boom"
    assert result.type_name == error_type_name(LocalError("boom"))
    assert result.type_name.endswith(".<locals>.LocalError")
    assert "boom" in str(result)
    again = deserialize_exception(serialize_exception(result))
    assert isinstance(again, RemoteError)
    assert (again.type_name, again.message) == (result.type_name, result.message)


def test_exception_with_unserializable_args_keeps_type_name_and_message(pickle_off: None) -> None:
    with socket.socket() as sock:
        text = serialize_exception(ValueError("lost connection", sock))
    result = deserialize_exception(text)
    assert isinstance(result, RemoteError)
    assert result.type_name == "builtins:ValueError"
    assert "lost connection" in result.message


def test_error_type_name() -> None:
    assert error_type_name(ValueError()) == "builtins:ValueError"
    assert error_type_name(PaymentDeclined("c", Decimal(1))) == f"{__name__}:PaymentDeclined"


# --------------------------------------------------------------------------- pickle fallback


def test_arbitrary_object_falls_back_to_pickle_when_allowed() -> None:
    set_allow_pickle(True)  # opt-in (off by default)
    value = {"thing": Slotted("box", 3)}
    text = dumps(value)
    assert '"__pw__":"pickle"' in text
    assert roundtrip(value) == value


def test_pickle_off_refuses_unsupported_value_and_says_how_to_allow(pickle_off: None) -> None:
    with pytest.raises(SerializationError) as raised:
        dumps(Slotted("box", 3), what="result of step pack")
    message = str(raised.value)
    assert message.startswith("result of step pack of type Slotted: cannot be serialized")
    assert "configure(allow_pickle=True)" in message


def test_pickle_off_names_the_nested_location(pickle_off: None) -> None:
    with pytest.raises(SerializationError) as raised:
        dumps({"items": [1, 2, Slotted("box", 3)]}, what="result of step pack")
    assert "['items'][2] of type Slotted" in str(raised.value)


def test_pickle_off_refuses_to_decode_pickled_values() -> None:
    set_allow_pickle(True)
    text = dumps(Slotted("box", 3))
    set_allow_pickle(False)
    with pytest.raises(SerializationError, match="pickl"):
        loads(text)


def test_value_cloudpickle_cannot_handle_names_the_reason() -> None:
    with socket.socket() as sock, pytest.raises(SerializationError) as raised:
        dumps(sock, what="result of step connect")
    assert "of type socket: cannot be serialized" in str(raised.value)


def test_reference_cycle_raises_serialization_error() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(SerializationError, match="cycle"):
        dumps(cyclic)


# --------------------------------------------------------------------------- arguments


def test_serialize_args_round_trip() -> None:
    args = (1, (2, 3), {"k": {4}})
    kwargs = {"when": datetime(2024, 1, 1, tzinfo=UTC), "color": Color.RED}
    args_json, kwargs_json = serialize_args(args, kwargs)
    assert deserialize_args(args_json, kwargs_json) == (args, kwargs)
    assert deserialize_args(*serialize_args((), {})) == ((), {})


def test_serialize_args_escapes_a_tag_named_keyword() -> None:
    kwargs = {"__pw__": 1, "v": 2}
    assert deserialize_args(*serialize_args((), kwargs)) == ((), kwargs)


def test_serialize_args_names_the_positional_argument(pickle_off: None) -> None:
    with socket.socket() as sock, pytest.raises(SerializationError) as raised:
        serialize_args(("ok", sock), {})
    assert str(raised.value).startswith("argument 2 (positional) of type socket: cannot be")
    assert "configure(allow_pickle=True)" in str(raised.value)


def test_serialize_args_names_the_keyword_argument(pickle_off: None) -> None:
    with pytest.raises(SerializationError) as raised:
        serialize_args((), {"ok": 1, "conn": Slotted("db", 1)})
    assert str(raised.value).startswith("argument 'conn' of type Slotted: cannot be serialized")


# --------------------------------------------------------------------------- determinism


def test_equal_sets_give_identical_text() -> None:
    first = {"b", "a", "c", (1, 2), 10, -1}
    second = {-1, 10, (1, 2), "c", "a", "b"}
    assert dumps(first) == dumps(second)
    assert dumps(frozenset(range(100, 0, -1))) == dumps(frozenset(range(1, 101)))


def test_dumps_is_stable_across_a_round_trip() -> None:
    value = {"s": {3, 1, 2}, "t": (Decimal("1.5"), b"x"), 5: [Point(1, 2)]}
    assert dumps(loads(dumps(value))) == dumps(value)


# --------------------------------------------------------------------------- property


_hashable = st.integers() | st.text(max_size=8)
_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
)
_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(st.sampled_from(["__pw__", "v", "a"]) | st.text(max_size=6), children)
        | st.dictionaries(_hashable, children, max_size=4)
        | st.sets(_hashable, max_size=5)
        | st.frozensets(_hashable, max_size=5)
        | st.sets(st.tuples(_hashable, _hashable), max_size=3)
    ),
    max_leaves=25,
)


def _same(left: Any, right: Any) -> bool:
    """Equality that also checks container types (1 == 1.0 and [1] != (1,) are not enough)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, list | tuple):
        return len(left) == len(right) and all(map(_same, left, right))
    if isinstance(left, dict):
        return list(left) == list(right) and all(_same(left[k], right[k]) for k in left)
    return bool(left == right)


@given(_values)
def test_property_round_trip_of_nested_json_like_values(value: Any) -> None:
    text = dumps(value)
    result = loads(text)
    assert _same(result, value)
    assert dumps(result) == text
