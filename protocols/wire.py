"""Payload <-> Flower RecordDict, losslessly (the contract's wire format, shared by both sides).

A Payload is a flat ``dict[str, ndarray | int | float | str | bool | list[...]]``. On the wire it becomes one
``ArrayRecord`` named "arrays" (numpy arrays, dtype and shape kept, float64 stays float64) and one
``ConfigRecord`` named "config" (scalars, strings, homogeneous lists). Empty lists cannot carry their
element type in a ConfigRecord, so their keys are listed in ``config["__empty_lists__"]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

Payload = dict[str, Any]

ARRAYS = "arrays"
CONFIG = "config"
_EMPTY_LISTS = "__empty_lists__"


class PayloadError(ValueError):
    """A payload value that cannot travel (names the key and the type)."""


def _scalar_ok(value: Any) -> bool:
    return isinstance(value, (bool, int, float, str)) and not isinstance(value, np.generic)


def to_record(payload: Payload) -> RecordDict:
    """Encode a Payload; numpy scalars become Python scalars, everything else must already be wire-ready."""
    arrays: dict[str, Array] = {}
    config: dict[str, Any] = {}
    empty: list[str] = []
    for key, value in payload.items():
        if not isinstance(key, str) or not key:
            raise PayloadError(f"payload key {key!r}: keys must be non-empty strings")
        if key == _EMPTY_LISTS:
            raise PayloadError(f"payload key {key!r} is reserved by the wire format")
        if isinstance(value, np.ndarray):
            if value.dtype == object:
                raise PayloadError(f"payload key {key!r}: object arrays cannot travel; use a numeric dtype")
            arrays[key] = Array(np.ascontiguousarray(value))
        elif isinstance(value, np.generic):
            config[key] = value.item()
        elif isinstance(value, (list, tuple)):
            items = [v.item() if isinstance(v, np.generic) else v for v in value]
            if not items:
                empty.append(key)
                continue
            kinds = {type(v) for v in items}
            if len(kinds) != 1 or not _scalar_ok(items[0]):
                raise PayloadError(
                    f"payload key {key!r}: lists must hold one scalar type (str, int, float or bool), got "
                    f"{sorted(k.__name__ for k in kinds)}"
                )
            config[key] = list(items)
        elif _scalar_ok(value):
            config[key] = value
        else:
            raise PayloadError(
                f"payload key {key!r}: unsupported type {type(value).__name__}; expected ndarray, scalar, str or list"
            )
    if empty:
        config[_EMPTY_LISTS] = empty
    return RecordDict({ARRAYS: ArrayRecord(arrays), CONFIG: ConfigRecord(config)})


def from_record(record: RecordDict) -> Payload:
    """Decode what :func:`to_record` produced (missing records read as empty)."""
    payload: Payload = {}
    if ARRAYS in record.array_records:
        for key, array in record.array_records[ARRAYS].items():
            payload[key] = array.numpy()
    if CONFIG in record.config_records:
        for key, value in record.config_records[CONFIG].items():
            if key == _EMPTY_LISTS:
                for name in value:
                    payload[name] = []
            else:
                payload[key] = list(value) if isinstance(value, list) else value
    return payload


def payload_nbytes(payload: Payload) -> int:
    """Approximate wire size: array bytes plus UTF-8 / 8-byte scalars (for the audit log and the benchmark)."""
    total = 0
    for key, value in payload.items():
        total += len(key.encode())
        if isinstance(value, np.ndarray):
            total += value.nbytes
        elif isinstance(value, str):
            total += len(value.encode())
        elif isinstance(value, (list, tuple)):
            total += sum(len(v.encode()) if isinstance(v, str) else 8 for v in value)
        else:
            total += 8
    return total
