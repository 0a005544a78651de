"""Whole-run release guard: no cell of 1..k-1 patients in the site's class × part table can be computed, or
pinned to a range inside 1..k-1, from everything the site has released in one run taken together.

Small-cell control (:mod:`site_client.evaluation.privacy`) checks each aggregate on its own, and the handshake
(:func:`site_client.privacy.partition.protect_counts`) checks its own counts. But other aggregates of the run
also carry class × part totals: a class histogram of the train part sums to the train part's positives, a
conformal histogram of the calibration part to its negatives, and ``n_pos − n_train_pos`` is then the
calibration part's positives, perhaps 3. This guard sees every reply before it leaves the site, all in one
ledger transaction per reply: decide (:func:`guard_release`) → the site's outgoing check → record
(:func:`record_release`), only if the reply passed that check and so actually leaves:

1. Every patient-count key of a reply (``n``, ``n_*``, ``bin_n_*``) has a registered *release kind* in
   :data:`TOTALS`: the class × part total it sums to (``n_cal_pos`` …), or None when it only splits a total
   that is registered elsewhere in the same aggregate by score (``confusion/n_tp``, ``coverage/n_pos_covered``:
   those splits are small-cell controlled on their own, and their differencing across models is the localisation
   bound of docs/privacy.md). A count of an unregistered kind is never sent: the reply fails with the site's
   generic internal error and the kind is named in the site's log. **A new release registers here** (one row).
2. The totals released so far are kept in the privacy ledger (``released_totals``, for every run of the protocol:
   a renewed approval runs the same cohort, so a second run must not add what the first withheld).
   Each aggregate of a reply (the keys under one prefix) is admitted only if, together with those, the system
   {x >= 0 : Σ_{cells in S} x = n_S for every released total S} bounds no small cell (true count in 1..k-1) to
   an interval inside [1, k-1] (tightest bounds by linear programming; an exactly computable cell is the special
   case lo = hi), and none of its own totals is in 1..k-1.
3. An aggregate that fails is *withheld*: replaced by ``{"suppressed": 1, "k": k}`` (a top-level count by -1),
   as small-cell control would; the coordinator already leaves suppressed aggregates out of pooled values.
   Aggregates are offered in a fixed order of value to the study (:data:`PART_PRIORITY`): those over all cases
   (the held-out evaluation) first, then the calibration part (conformal thresholds, recalibration), then the
   train part (apparent performance), so a small site loses its apparent performance before its validation.

Why this is enough for the whole study: the released set only grows, and each admission is checked against the
whole set, so after any reply the condition of 2. holds for everything released so far, in this run and in any
earlier run of the same protocol at this site. The ledger's lock is held from the decision to the record, so two
replies served at once (concurrent ClientApp processes) are never both admitted against the same older set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

from protocols.payload import Payload
from site_client.privacy.charge import release_kind, request_models
from site_client.privacy.ledger import Ledger
from site_client.privacy.partition import CLASS_PART_CELLS, CLASS_PART_SUBSETS, SUPPRESSED

_M = "<model>"
_POS = r"(?:n_pos|n_events|bin_n_pos)"
_NEG = r"(?:n_neg|n_nonevents|bin_n_neg)"
_SPLIT = r"(?:n_tp|n_fp|n_tn|n_fn)"
#: release kind (regular expression over :func:`release_kind`'s form) → class × part total it sums to
#: (a key of CLASS_PART_SUBSETS), or None for a within-aggregate split by score. First match wins.
TOTALS: list[tuple[str, str | None]] = [
    # handshake: the table's own margins and cells (protect_counts already hides what would pin a cell)
    *[(name, name) for name in CLASS_PART_SUBSETS],
    (r"fvol/n|schema/n|r1/[^/]+/n", "n"),  # feature-volume sums, ComBat round 1: all the site's cases
    # held-out evaluation on all cases, before and after recalibration, and conformal sets
    (rf"(?:before|after)/{_M}/(?:auc|calfit|calibration)/n", "n"),
    (rf"(?:before|after)/{_M}/(?:auc|calibration|confusion|histograms|reliability|paired|roc|relcurve)/{_POS}",
     "n_pos"),
    (rf"(?:before|after)/{_M}/(?:auc|calibration|confusion|histograms|reliability|paired|roc|relcurve)/{_NEG}",
     "n_neg"),
    (rf"(?:before|after)/{_M}/confusion/{_SPLIT}", None),
    (rf"(?:coverage|setsize)/{_M}/n", "n"),
    (rf"coverage/{_M}/n_pos", "n_pos"),
    (rf"coverage/{_M}/n_neg", "n_neg"),
    (rf"coverage/{_M}/n_(?:pos_|neg_)?(?:covered|missed)", None),
    (rf"setsize/{_M}/n_(?:both|empty|single_neg|single_pos)", None),
    # calibration part: recalibration warm start and Newton terms, conformal and calibration histograms
    (rf"(?:localfit/{_M}|terms/{_M}/<j>)/n", "n_cal"),
    (rf"calhist/{_M}/bin_n_pos|conformal/{_M}/pos/bin_n_scores", "n_cal_pos"),
    (rf"calhist/{_M}/bin_n_neg|conformal/{_M}/neg/bin_n_scores", "n_cal_neg"),
    # conformal_method dp_quantile: the class count, and the noisy grid counts (registered as the total they
    # estimate: the safe side, the guard treats them as exact)
    (rf"conformal/{_M}/pos/(?:n|bin_n_noisy)", "n_cal_pos"),
    (rf"conformal/{_M}/neg/(?:n|bin_n_noisy)", "n_cal_neg"),
    # train part: apparent performance
    (rf"apparent/{_M}/calibration/n", "n_train"),
    (rf"apparent/{_M}/(?:histograms|calibration)/{_POS}", "n_train_pos"),
    (rf"apparent/{_M}/(?:histograms|calibration)/{_NEG}", "n_train_neg"),
    # survival studies (protocols.survival_contract; events count as the positive class, every case trains):
    # Cox terms and Breslow baselines over the site's cases, held-out evaluation, and its splits by risk group
    (rf"(?:cox|base|surv)/{_M}/n", "n"),
    (rf"(?:cox|surv)/{_M}/n_events", "n_pos"),
    (rf"surv/{_M}/h/<j>/calibration/n|surv/{_M}/km/[^/]+/n", None),
]
_COMPILED = [(re.compile(rf"^(?:{pattern})$"), total) for pattern, total in TOTALS]

#: order in which a reply's aggregates are offered: totals over all cases, then the calibration part, then train
PART_PRIORITY = {"n": 0, "n_pos": 0, "n_neg": 0, "n_cal": 1, "n_cal_pos": 1, "n_cal_neg": 1,
                 "n_train": 2, "n_train_pos": 2, "n_train_neg": 2}


class UnregisteredRelease(RuntimeError):
    """A reply holds a patient count whose release kind is not in :data:`TOTALS` (never sent)."""


def is_count_key(name: str) -> bool:
    """The convention of every site aggregate: ``n``, ``n_*`` and ``bin_n_*`` are patient counts."""
    return name == "n" or name.startswith("n_") or name.startswith("bin_n_")


def registered_total(kind: str) -> str | None:
    """The class × part total a count of this release kind sums to (None: a split by score).
    Raises :class:`UnregisteredRelease` for a kind nobody registered."""
    for pattern, total in _COMPILED:
        if pattern.match(kind):
            return total
    raise UnregisteredRelease(f"release kind {kind!r} is not registered in site_client/privacy/release_guard.py "
                              "TOTALS: the count is not sent")


def cell_bounds(totals: list[str], counts: dict[str, int]) -> list[tuple[float, float]]:
    """[min, max] of each cell of CLASS_PART_CELLS over {x >= 0 : Σ_S x = counts[S] for S in totals}."""
    a_eq = np.array([CLASS_PART_SUBSETS[t] for t in totals], dtype=np.float64).reshape(len(totals), len(CLASS_PART_CELLS))
    b_eq = np.array([counts[t] for t in totals], dtype=np.float64)
    bounds = []
    for i in range(len(CLASS_PART_CELLS)):
        if not totals:
            bounds.append((0.0, np.inf))
            continue
        c = np.zeros(len(CLASS_PART_CELLS))
        c[i] = 1.0
        low = linprog(c, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
        high = linprog(-c, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
        if low.status != 0 or high.status not in (0, 3):  # the true counts are feasible: cannot happen
            raise RuntimeError(f"release guard: bounds not found ({low.message}; {high.message})")
        bounds.append((float(low.fun), np.inf if high.status == 3 else float(-high.fun)))
    return bounds


def exposes_small_cell(totals: list[str], counts: dict[str, int], k: int) -> bool:
    """Whether releasing ``totals`` (with the true ``counts``) pins a count in 1..k-1: a released total itself,
    or a cell whose tightest bounds lie inside [1, k-1]."""
    if any(0 < counts[t] < k for t in totals):
        return True
    small = [i for i, cell in enumerate(CLASS_PART_CELLS) if 0 < counts[cell] < k]
    if not small:
        return False
    bounds = cell_bounds(sorted(set(totals)), counts)
    return any(bounds[i][0] >= 1 - 1e-9 and bounds[i][1] <= k - 1 + 1e-9 for i in small)


def _aggregates(reply: Payload, kinds: dict[str, str]) -> dict[str, set[str]]:
    """Prefix of each aggregate (its keys' path without the last part) → the totals its counts register."""
    aggregates = {}
    for name in reply:
        last = name.rsplit("/", 1)[-1]
        if not is_count_key(last):
            continue
        value = reply[name]
        if np.ndim(value) == 0 and int(value) == SUPPRESSED:  # a handshake count already hidden
            continue
        total = registered_total(kinds[name])
        prefix = name.rsplit("/", 1)[0] if "/" in name else ""
        entry = aggregates.setdefault(prefix, set())
        if total is not None:
            entry.add(total)
    return aggregates


def _withhold(reply: Payload, prefix: str, k: int) -> None:
    if prefix == "":
        for name in list(reply):
            if "/" not in name and is_count_key(name):
                reply[name] = SUPPRESSED
        return
    for name in [n for n in reply if n.startswith(prefix + "/")]:
        del reply[name]
    reply[f"{prefix}/suppressed"] = 1
    reply[f"{prefix}/k"] = int(k)


@dataclass
class Release:
    """What one reply releases, decided by :func:`guard_release` and written to the ledger by
    :func:`record_release` only once the reply passed the site's outgoing check: a reply that check blocks
    never left, so it released nothing."""

    withheld: list[str]  # prefixes of the aggregates withheld (for the site's log and the run's ledger entry)
    admitted: list[str]  # class × part totals this reply releases for the first time under the protocol
    kinds: list[str]  # release kinds of the reply as it leaves (a withheld aggregate as its suppressed marker)


def guard_release(reply: Payload, payload: Payload, context, counts: dict[str, int], ledger: Ledger) -> Release:
    """Withhold, in place, every aggregate of ``reply`` that would let a small cell be pinned together with
    what the site released before under this protocol (rules in the module docstring). Reads ``ledger`` (the
    open transaction the reply is recorded in, see :func:`record_release`) and changes nothing in it.
    ``counts`` are the site's true class × part counts (:func:`site_client.study.handshake.class_counts`)."""
    k = int(context.protocol.privacy.min_cell_count)
    models = request_models(payload)
    kinds = {name: release_kind(name, models) for name in reply}
    aggregates = _aggregates(reply, kinds)
    order = sorted(aggregates, key=lambda p: (max((PART_PRIORITY[t] for t in aggregates[p]), default=-1), p))
    released = list(ledger.data["released_totals"])
    admitted: list[str] = []
    withheld = []
    for prefix in order:
        new = sorted(aggregates[prefix] - set(released))
        if not new:
            continue
        if exposes_small_cell(released + new, counts, k):
            _withhold(reply, prefix, k)
            withheld.append(prefix)
            continue
        released += new
        admitted += new
    leaving = {kinds.get(name) or release_kind(name, models) for name in reply}  # new keys: suppressed markers
    return Release(withheld, sorted(admitted), sorted(leaving))


def record_release(ledger: Ledger, release: Release, phase: str, run_id: int | None) -> None:
    """Record in ``ledger`` what a reply that passed the outgoing check released: its totals (the guard's memory
    for later replies and runs), its release kinds (the disclosure test enumerates them) and what was withheld."""
    ledger.data["released_totals"] = sorted(set(ledger.data["released_totals"]) | set(release.admitted))
    ledger.register_release(run_id, phase, release.kinds)
    if release.withheld:
        state = ledger.run(run_id)
        state.setdefault("withheld", [])
        state["withheld"] += [p for p in release.withheld if p not in state["withheld"]]
