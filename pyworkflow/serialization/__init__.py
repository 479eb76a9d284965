"""Serialization of recorded values: the tagged JSON codec (see ``codec``)."""

from pyworkflow.serialization.codec import (
    RemoteError,
    deserialize_args,
    deserialize_exception,
    dumps,
    error_fields,
    error_type_name,
    is_damaged,
    loads,
    pickle_allowed,
    serialize_args,
    serialize_exception,
    set_allow_pickle,
    set_value_limits,
    value_limits,
)

__all__ = [
    "RemoteError",
    "deserialize_args",
    "deserialize_exception",
    "dumps",
    "error_fields",
    "error_type_name",
    "is_damaged",
    "loads",
    "pickle_allowed",
    "serialize_args",
    "serialize_exception",
    "set_allow_pickle",
    "set_value_limits",
    "value_limits",
]
