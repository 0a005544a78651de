"""Payload <-> Flower RecordDict, losslessly (the contract's wire format, shared by both sides).

A Payload is a flat ``dict[str, ndarray | int | float | str | bool | list[...]]``. On the wire it becomes one
``ArrayRecord`` named "arrays" holding a single byte buffer "packed" (every numpy array's bytes, concatenated)
and one ``ConfigRecord`` named "config" (scalars, strings, homogeneous lists, plus the buffer's layout:
``config["__array_layout__"]`` = JSON list of ``[key, dtype.str, shape]`` in buffer order; dtype and shape are
kept exactly, float64 stays float64). Empty lists cannot carry their element type in a ConfigRecord, so their
keys are listed in ``config["__empty_lists__"]``.

Why one buffer: Flower 1.4x stores and pushes every ``Array`` of a message as its own object (one request
through the SuperLink's state each). A calibration reply holds hundreds of small arrays; sent one by one
they stalled a 4-site study on loopback. One buffer makes every message a handful of objects.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

Payload = dict[str, Any]

ARRAYS = "arrays"
CONFIG = "config"
_EMPTY_LISTS = "__empty_lists__"
_LAYOUT = "__array_layout__"
_PACKED = "packed"
_RESERVED = (_EMPTY_LISTS, _LAYOUT)


class PayloadError(ValueError):
    """A payload value that cannot travel (names the key and the type)."""


def _scalar_ok(value: Any) -> bool:
    return isinstance(value, (bool, int, float, str)) and not isinstance(value, np.generic)


def to_record(payload: Payload) -> RecordDict:
    """Encode a Payload; numpy scalars become Python scalars, everything else must already be wire-ready."""
    arrays: dict[str, np.ndarray] = {}
    config: dict[str, Any] = {}
    empty: list[str] = []
    for key, value in payload.items():
        if not isinstance(key, str) or not key:
            raise PayloadError(f"payload key {key!r}: keys must be non-empty strings")
        if key in _RESERVED:
            raise PayloadError(f"payload key {key!r} is reserved by the wire format")
        if isinstance(value, np.ndarray):
            if value.dtype == object:
                raise PayloadError(f"payload key {key!r}: object arrays cannot travel; use a numeric dtype")
            arrays[key] = value  # tobytes() below writes C order; shape (0-d too) travels in the layout
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
    packed: dict[str, Array] = {}
    if arrays:
        config[_LAYOUT] = json.dumps([[key, a.dtype.str, list(a.shape)] for key, a in arrays.items()])
        buffer = b"".join(a.tobytes() for a in arrays.values())
        packed[_PACKED] = Array(np.frombuffer(buffer, dtype=np.uint8).copy())
    return RecordDict({ARRAYS: ArrayRecord(packed), CONFIG: ConfigRecord(config)})


def _unpack(buffer: np.ndarray, layout: str) -> Payload:
    """Split the packed byte buffer back into arrays, following the layout written by :func:`to_record`."""
    raw = np.ascontiguousarray(buffer).view(np.uint8).tobytes()
    arrays: Payload = {}
    offset = 0
    for key, dtype_str, shape in json.loads(layout):
        dtype = np.dtype(dtype_str)
        count = int(np.prod(shape, dtype=np.int64))
        end = offset + count * dtype.itemsize
        if end > len(raw):
            raise PayloadError(f"packed arrays: buffer too short for key {key!r} ({len(raw)} bytes, need {end})")
        arrays[key] = np.frombuffer(raw[offset:end], dtype=dtype).reshape(tuple(shape)).copy()
        offset = end
    if offset != len(raw):
        raise PayloadError(f"packed arrays: {len(raw) - offset} trailing bytes not described by the layout")
    return arrays


def from_record(record: RecordDict) -> Payload:
    """Decode what :func:`to_record` produced (missing records read as empty)."""
    payload: Payload = {}
    config = record.config_records[CONFIG] if CONFIG in record.config_records else {}
    if ARRAYS in record.array_records and _PACKED in record.array_records[ARRAYS]:
        if _LAYOUT not in config:
            raise PayloadError(f"packed arrays arrived without {_LAYOUT!r} in the config record")
        payload.update(_unpack(record.array_records[ARRAYS][_PACKED].numpy(), str(config[_LAYOUT])))
    if config:
        for key, value in config.items():
            if key == _LAYOUT:
                continue
            if key == _EMPTY_LISTS:
                for name in value:
                    payload[name] = []
            else:
                payload[key] = list(value) if isinstance(value, list) else value
    return payload
