"""Counts of one partition released together without differencing: which of a table's margins and cells may be
shown so that no cell with 1..k-1 patients can be computed from the others.

A released count is the sum of the table's cells over a subset (an indicator vector). The coordinator can compute
a small cell exactly iff its indicator lies in the linear span of the released indicators; when it does not, the
cell keeps at least one degree of freedom, and since every released count containing it is 0 or >= k, its
tightest upper bound is >= k (docs/privacy.md; tests/privacy/test_no_small_cell_by_differencing.py checks this
by linear programming). So counts are offered in a fixed order and one is shown only when, together with those
already shown, it pins no small cell.
"""

from __future__ import annotations

import numpy as np

SUPPRESSED = -1

#: the handshake's class × part table: cells (train, pos), (train, neg), (cal, pos), (cal, neg)
CLASS_PART_CELLS = ("n_train_pos", "n_train_neg", "n_cal_pos", "n_cal_neg")
CLASS_PART_SUBSETS: dict[str, tuple[int, int, int, int]] = {
    "n": (1, 1, 1, 1),
    "n_pos": (1, 0, 1, 0),
    "n_neg": (0, 1, 0, 1),
    "n_train": (1, 1, 0, 0),
    "n_cal": (0, 0, 1, 1),
    "n_train_pos": (1, 0, 0, 0),
    "n_train_neg": (0, 1, 0, 0),
    "n_cal_pos": (0, 0, 1, 0),
    "n_cal_neg": (0, 0, 0, 1),
}


def pins(released: list[np.ndarray], cell: int) -> bool:
    """Whether the cell's indicator lies in the span of the released indicators (it can then be computed)."""
    if not released:
        return False
    basis = np.array(released, dtype=np.float64)
    target = np.zeros(basis.shape[1])
    target[cell] = 1.0
    return np.linalg.matrix_rank(np.vstack([basis, target])) == np.linalg.matrix_rank(basis)


def protect_counts(counts: dict[str, int], subsets: dict[str, tuple[int, ...]], cells: tuple[str, ...],
                   k: int) -> tuple[dict[str, int], list[str]]:
    """Show each count of ``subsets`` (in that order) unless it is itself in 1..k-1 or, with those already
    shown, it would let a cell in 1..k-1 be computed; others become -1. Returns the counts and the hidden names."""
    small = [i for i, name in enumerate(cells) if 0 < counts[name] < k]
    shown: dict[str, int] = {}
    hidden: list[str] = []
    released: list[np.ndarray] = []
    for name, indicator in subsets.items():
        value = counts[name]
        vector = np.asarray(indicator, dtype=np.float64)
        if 0 < value < k or any(pins(released + [vector], i) for i in small):
            shown[name] = SUPPRESSED
            hidden.append(name)
            continue
        shown[name] = value
        released.append(vector)
    return shown, hidden
