"""The flat message format shared by the coordinator and the sites (see docs/architecture.md).

``Payload = dict[str, ndarray | int | float | str | bool | list[str] | list[float] | list[int]]``. Nested
messages travel under ``"<prefix>/<key>"`` keys; :func:`nest` and :func:`unnest` convert. Numpy scalars are
turned into Python scalars so every transport (Flower records, JSON audit logs) sees only plain types.
"""

from __future__ import annotations

import re
from typing import Any, Union

import numpy as np

PayloadValue = Union[np.ndarray, int, float, str, bool, list]
Payload = dict[str, PayloadValue]

#: Site names become key segments: letters, digits, '.', '_' and '-' only, not starting with '_'.
SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def check_site_name(name: str) -> str:
    """Return ``name`` or raise: it is used inside message keys, so '/' and spaces are not allowed."""
    if not isinstance(name, str) or not SITE_NAME.match(name):
        raise ValueError(
            f"site name {name!r} is not allowed: use letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit)"
        )
    return name


def plain(value: Any) -> PayloadValue:
    """A payload value with numpy scalars converted to Python scalars (arrays are kept, made contiguous)."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return [str(v) for v in value.tolist()]
        return np.ascontiguousarray(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def nest(prefix: str, message: dict[str, Any]) -> Payload:
    """``{"<prefix>/<key>": value}`` for every key of ``message`` (values made plain)."""
    return {f"{prefix}/{key}": plain(value) for key, value in message.items()}


class ReceivedPayload(dict):
    """A payload as received (read-only), with its keys indexed once by every ``/``-prefix, so that
    :func:`unnest` and :func:`prefixes` cost O(keys under the prefix) instead of O(all keys). The coordinator
    reads each reply once per model and candidate: a 50-site calibration reply holds ~10⁴ keys for ~200
    models, and scanning all keys on every read made recalibration quadratic (minutes per round)."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(payload)
        under: dict[str, list[str]] = {}
        for key in self:
            parts = key.split("/")
            for i in range(1, len(parts)):
                under.setdefault("/".join(parts[:i]), []).append(key)
        self._under = under

    def keys_under(self, prefix: str) -> list[str]:
        """The keys that start with ``prefix + "/"``, in payload order."""
        return self._under.get(prefix, [])

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a received payload is read-only (copy it with dict(...) to change it)")

    __setitem__ = __delitem__ = pop = popitem = clear = update = setdefault = __ior__ = _read_only  # type: ignore[assignment]

    def __reduce__(self) -> Any:
        return (ReceivedPayload, (dict(self),))


def _keys_under(payload: dict[str, Any], prefix: str) -> Any:
    if isinstance(payload, ReceivedPayload):
        return payload.keys_under(prefix)
    start = prefix + "/"
    return (key for key in payload if key.startswith(start))


def unnest(payload: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Inverse of :func:`nest`: the keys under ``prefix/`` with the prefix removed."""
    cut = len(prefix) + 1
    return {key[cut:]: payload[key] for key in _keys_under(payload, prefix)}


def prefixes(payload: dict[str, Any], prefix: str, depth: int = 1) -> list[str]:
    """Distinct key segments directly below ``prefix/`` (e.g. the fold names under ``combat/``), sorted."""
    start = prefix + "/"
    seen = set()
    for key in _keys_under(payload, prefix):
        parts = key[len(start):].split("/")
        if len(parts) > depth:
            seen.add("/".join(parts[:depth]))
    return sorted(seen)


def payload_nbytes(payload: dict[str, Any]) -> int:
    """Approximate size: array bytes + UTF-8 string bytes + 8 per scalar / list element."""
    total = 0
    for key, value in payload.items():
        total += len(key.encode())
        if isinstance(value, np.ndarray):
            total += int(value.nbytes)
        elif isinstance(value, str):
            total += len(value.encode())
        elif isinstance(value, list):
            total += sum(len(v.encode()) if isinstance(v, str) else 8 for v in value)
        else:
            total += 8
    return total
