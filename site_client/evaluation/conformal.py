"""Site halves of class-conditional (Mondrian) split conformal prediction, binary case.

Nonconformity score of a case with true class y: s = 1 - p̂_y, i.e. s = p for a negative (p̂_0 = 1 - p) and
s = 1 - p for a positive. A class c is in the prediction set of a new case iff its score for c is <= q̂_c,
i.e. p̂_c >= 1 - q̂_c.
"""

from __future__ import annotations

import numpy as np

import os

from fedmath.conformal import conformity_scores, discrete_laplace_noise, dp_grid, prediction_sets  # noqa: F401  (one home: fedmath)
from site_client.evaluation._checks import as_labels, as_probabilities
from site_client.evaluation.binned import _edges, bin_index

Aggregate = dict[str, "np.ndarray | float | int"]


def conformal_histograms(p: object, y: object, edges: np.ndarray | int, site: str | None = None) -> Aggregate:
    """Both classes' calibration-score histograms in one aggregate (``bin_n_neg``, ``bin_n_pos``).

    Small-cell merging then coarsens both classes together; prefer one :func:`conformal_histogram` per class.
    """
    p = as_probabilities(p, "p", site)
    y = as_labels(y, p.size, "y", site)
    e = _edges(edges)
    b = bin_index(conformity_scores(p, y), e)
    nb = e.size - 1
    return {
        "edges": e,
        "bin_n_neg": np.bincount(b[y == 0], minlength=nb).astype(np.int64),
        "bin_n_pos": np.bincount(b[y == 1], minlength=nb).astype(np.int64),
    }


def _class_scores(p: object, y: object, label: int, site: str | None) -> np.ndarray:
    """The calibration scores s = 1 - p̂_y of the cases of class ``label`` (0 or 1), after the input checks."""
    p = as_probabilities(p, "p", site)
    y = as_labels(y, p.size, "y", site)
    if label not in (0, 1):
        raise ValueError(f"label must be 0 or 1, got {label!r}")
    return conformity_scores(p, y)[y == label]


def conformal_histogram(
    p: object, y: object, edges: np.ndarray | int, label: int, site: str | None = None
) -> Aggregate:
    """Histogram of the calibration scores s of the cases of class ``label`` (0 or 1): one-shot quantile.

    One aggregate per class, so small-cell merging coarsens each class's histogram on its own.
    Returns ``edges`` and ``bin_n_scores``.
    """
    s = _class_scores(p, y, label, site)
    e = _edges(edges)
    return {"edges": e, "bin_n_scores": np.bincount(bin_index(s, e), minlength=e.size - 1).astype(np.int64)}


def site_noise_generator() -> np.random.Generator:
    """A generator seeded from the operating system's CSPRNG (``os.urandom``, 256 bits), fresh per release.

    DP noise at a site comes only from here: nothing the coordinator sends can seed or replay it."""
    return np.random.Generator(np.random.PCG64(int.from_bytes(os.urandom(32), "little")))


def dp_conformal_histogram(
    p: object, y: object, label: int, bins: int, epsilon: float, rng: np.random.Generator | None = None,
    site: str | None = None,
) -> Aggregate:
    """ε-differentially private histogram of the calibration scores of class ``label`` on the fixed grid.

    Counts on :func:`fedmath.conformal.dp_grid` (``bins`` equal-width bins, ``[e_b, e_{b+1})``, last closed)
    plus independent discrete Laplace noise (t = exp(-ε/2) per bin: sensitivity 2 when one patient's score
    changes, see :func:`fedmath.conformal.discrete_laplace_ratio`). Returns ``n`` (the exact class count) and
    ``bin_n_noisy`` (integers, possibly negative). ``rng`` is for tests and benches; the study never passes one,
    so the noise comes from :func:`site_noise_generator`.
    """
    s = _class_scores(p, y, label, site)
    e = dp_grid(bins)
    counts = np.bincount(bin_index(s, e), minlength=e.size - 1).astype(np.int64)
    noise = discrete_laplace_noise(counts.size, epsilon, rng if rng is not None else site_noise_generator())
    return {"n": int(s.size), "bin_n_noisy": counts + noise}


def released_calibration_scores(
    p: object, y: object, label: int, validation: object, k: int, site: str | None = None,
) -> Aggregate:
    """What a training site releases about class ``label``'s calibration scores, by the approved protocol's
    ``validation.conformal_method`` (never by anything in the request), for a model that gets conformal
    thresholds (the caller asks :func:`protocols.models.conformal_applies` first: with ``dp_quantile`` only the
    radiomic models do):

    * ``histogram``: :func:`conformal_histogram` on ``histogram_bins`` bins, small-cell merged (k);
    * ``dp_quantile``: :func:`dp_conformal_histogram` with the protocol's ε and grid. A class with 1..k-1
      calibration cases is withheld (its count is a small cell); the noisy bins are not merged: the noise,
      not k, protects them.
    """
    from site_client.evaluation.privacy import suppress_small_cells

    v = validation
    if v.conformal_method == "histogram":
        return suppress_small_cells(conformal_histogram(p, y, v.histogram_bins, label, site), k)
    release = dp_conformal_histogram(p, y, label, v.conformal_dp_bins, v.conformal_epsilon, site=site)
    if 0 < int(release["n"]) < k:
        return {"suppressed": 1, "k": int(k)}
    return {"suppressed": 0, "k": int(k), **release}


def conformal_counts_at_most(
    p: object, y: object, t_neg: float, t_pos: float, site: str | None = None
) -> Aggregate:
    """#{s <= t} per class for the coordinator's exact bisection of the federated quantile.

    Not k-anonymous over many rounds: the bisection converges on one patient's score (documented).
    """
    p = as_probabilities(p, "p", site)
    y = as_labels(y, p.size, "y", site)
    s = conformity_scores(p, y)
    neg, pos = s[y == 0], s[y == 1]
    below_neg, below_pos = int(np.sum(neg <= t_neg)), int(np.sum(pos <= t_pos))
    return {
        "n_class_neg": int(neg.size),
        "n_class_pos": int(pos.size),
        "n_at_most_neg": below_neg,
        "n_above_neg": int(neg.size - below_neg),
        "n_at_most_pos": below_pos,
        "n_above_pos": int(pos.size - below_pos),
    }


def prediction_set_coverage(
    p: object, y: object, q_neg: float, q_pos: float, site: str | None = None, per_class: bool = True
) -> Aggregate:
    """Coverage counts at a held-out site given the coordinator's thresholds (overall and, optionally, per class)."""
    p = as_probabilities(p, "p", site)
    y = as_labels(y, p.size, "y", site)
    in_neg, in_pos = prediction_sets(p, q_neg, q_pos)
    cov = np.where(y == 1, in_pos, in_neg)
    out: Aggregate = {"n": int(p.size), "n_covered": int(cov.sum()), "n_missed": int((~cov).sum())}
    for name, cls in (("neg", 0), ("pos", 1)) if per_class else ():
        c = cov[y == cls]
        out[f"n_{name}"] = int(c.size)
        out[f"n_{name}_covered"] = int(c.sum())
        out[f"n_{name}_missed"] = int(c.size - c.sum())
    return out


def prediction_set_sizes(
    p: object, q_neg: float, q_pos: float, site: str | None = None, split_single: bool = True
) -> Aggregate:
    """Set-size counts at a site: empty, {negative} only, {positive} only (or ``n_single`` when not split),
    both classes. Labels are not needed."""
    p = as_probabilities(p, "p", site)
    in_neg, in_pos = prediction_sets(p, q_neg, q_pos)
    out: Aggregate = {"n": int(p.size), "n_empty": int(np.sum(~in_neg & ~in_pos))}
    if split_single:
        out["n_single_neg"] = int(np.sum(in_neg & ~in_pos))
        out["n_single_pos"] = int(np.sum(~in_neg & in_pos))
    else:
        out["n_single"] = int(np.sum(in_neg ^ in_pos))
    out["n_both"] = int(np.sum(in_neg & in_pos))
    return out


def censored_coverage(p: object, y: object, q_neg: float, q_pos: float, k: int, site: str | None = None) -> Aggregate:
    """Coverage when its covered/missed split has a side of 1..k-1 patients: ``n`` and which side is small,
    never that side's count (the "<k" of statistical disclosure control). The coordinator turns this into
    an interval: missed in 1..k-1 gives coverage in [(n-k+1)/n, (n-1)/n]. Suppressed when n < k.
    """
    full = prediction_set_coverage(p, y, q_neg, q_pos, site, per_class=False)
    n, missed, covered = int(full["n"]), int(full["n_missed"]), int(full["n_covered"])
    if n < k:
        return {"suppressed": 1, "k": int(k)}
    out: Aggregate = {"n": n, "censored": 1, "suppressed": 0, "k": int(k)}
    if 0 < missed < k:
        out["missed_below_k"] = 1
    elif 0 < covered < k:
        out["covered_below_k"] = 1
    else:  # no small side: the exact counts are safe (callers only get here after a suppression)
        out.update(n_covered=covered, n_missed=missed, censored=0)
    return out


def released_set_statistics(
    p: object, y: object, q_neg: float, q_pos: float, k: int, site: str | None = None
) -> tuple[Aggregate, Aggregate]:
    """(coverage, set sizes) after small-cell control, falling back to coarser aggregates when needed.

    Each is first tried in full (per-class coverage; single sets split by class); if that would be suppressed,
    only the coarser version is computed and released (overall coverage; single sets not split), and for
    coverage, last, the censored form (:func:`censored_coverage`). Only one version of each ever leaves the
    site, so they cannot be differenced.
    """
    from site_client.evaluation.privacy import suppress_small_cells

    cov = suppress_small_cells(prediction_set_coverage(p, y, q_neg, q_pos, site), k)
    if cov["suppressed"]:
        cov = suppress_small_cells(prediction_set_coverage(p, y, q_neg, q_pos, site, per_class=False), k)
    if cov["suppressed"]:
        cov = censored_coverage(p, y, q_neg, q_pos, k, site)
    sizes = suppress_small_cells(prediction_set_sizes(p, q_neg, q_pos, site), k)
    if sizes["suppressed"]:
        sizes = suppress_small_cells(prediction_set_sizes(p, q_neg, q_pos, site, split_single=False), k)
    return cov, sizes
