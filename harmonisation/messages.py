"""Wire format of federated ComBat and an in-process message log.

Every message between a site and the coordinator is a flat ``dict`` whose values are
``numpy.ndarray``, ``int``, ``float``, ``str`` or ``list[str]``.  Array sizes depend only on
the number of features p, the design width q and the number of batches, never on the
number of patients.  Categorical levels travel under keys ``"levels:<covariate>"``.

Sequence (site -> hub uploads marked ``^``, hub -> site broadcasts ``v``):

====  ==========================  =========================================================
step  kind                        content
====  ==========================  =========================================================
0 ^   ``schema``                  site, n, features, local batches + counts, levels,
                                  per-batch feature mean / var / constant flag
0 v   ``plan``                    global batches, levels (first dropped), feature order,
                                  excluded features, design columns, options
1 ^   ``round1``                  XᵀX (q x q), XᵀY (q x p), n; reference mode: a site holding
                                  reference-batch rows adds XᵀX, XᵀY of those rows
1 v   ``fit``                     B̂ (q x p), grand mean α̂ (p), cond(XᵀX), continuous
                                  covariates' mean / sd (for held-out range checks)
1 v   ``scale``                   pooled variance σ̂² (p), zero-variance flags (p): from the
                                  round-1 sums and the schemas' moments, no round of its own
2 ^   ``batch_moments``           only when a batch spans sites: per such batch (n, mean,
                                  M2) of the standardised data
2 v   ``eb``                      γ*, δ* for the spanning batches
--    local adjust                no upload
opt ^ ``diagnostics``             per-batch mean / var after harmonisation (reporting)
====  ==========================  =========================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

WireValue = Union[np.ndarray, int, float, str, list]
Message = dict[str, WireValue]

SITE_TO_HUB = "site->hub"
HUB_TO_SITE = "hub->site"


def check_wire(message: Message) -> None:
    """Raise ``TypeError`` unless ``message`` uses only the plain wire types."""
    if not isinstance(message, dict):
        raise TypeError(f"a message must be a dict, got {type(message).__name__}")
    for key, value in message.items():
        if not isinstance(key, str):
            raise TypeError(f"message key {key!r} is not a str")
        if isinstance(value, bool):
            raise TypeError(f"message field {key!r} is a bool; send it as int 0/1")
        if isinstance(value, np.ndarray):
            if value.dtype == object:
                raise TypeError(f"message field {key!r} is an object array")
            continue
        if isinstance(value, (int, float, str)):
            continue
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            continue
        raise TypeError(
            f"message field {key!r} has type {type(value).__name__}; "
            "expected ndarray, int, float, str or list[str]"
        )


def message_shapes(message: Message) -> dict[str, Any]:
    """Shape of each field: array shape, list length, or the scalar type name."""
    out: dict[str, Any] = {}
    for key, value in message.items():
        if isinstance(value, np.ndarray):
            out[key] = tuple(value.shape)
        elif isinstance(value, list):
            out[key] = ("list", len(value))
        else:
            out[key] = type(value).__name__
    return out


def message_nbytes(message: Message) -> int:
    """Approximate payload size in bytes (arrays by nbytes, strings by UTF-8 length)."""
    total = 0
    for value in message.values():
        if isinstance(value, np.ndarray):
            total += value.nbytes
        elif isinstance(value, list):
            total += sum(len(v.encode()) for v in value)
        elif isinstance(value, str):
            total += len(value.encode())
        else:
            total += 8
    return total


@dataclass
class LoggedMessage:
    direction: str
    kind: str
    site: str
    shapes: dict[str, Any]
    nbytes: int


@dataclass
class MessageLog:
    """Records every message of an in-process run (checked against the wire format)."""

    entries: list[LoggedMessage] = field(default_factory=list)

    def record(self, direction: str, site: str, message: Message) -> Message:
        check_wire(message)
        self.entries.append(
            LoggedMessage(direction, str(message.get("kind", "")), site,
                          message_shapes(message), message_nbytes(message))
        )
        return message

    def kinds(self, direction: str = SITE_TO_HUB, site: str | None = None) -> list[str]:
        return [e.kind for e in self.entries
                if e.direction == direction and (site is None or e.site == site)]

    def uploads(self, site: str | None = None) -> list[LoggedMessage]:
        return [e for e in self.entries
                if e.direction == SITE_TO_HUB and (site is None or e.site == site)]
