"""Site half of the federated stratified Cox model: this hospital's stratum of the partial likelihood.

Strata are sites, so the log partial likelihood is a sum over sites and each site's share depends only on its own
risk sets. At the coordinator's beta a site returns its gradient (p), information (p x p) and log partial
likelihood (scalar): sizes independent of n, nothing per patient. Ties (d_j events at time t_j, risk set R_j,
event set D_j, r_i = exp(x_i beta)):

* Breslow: l = sum_j [ sum_{D_j} x_i beta - d_j log S0_j ], S0_j = sum_{R_j} r_i;
* Efron (lifelines' and R's default): l = sum_j [ sum_{D_j} x_i beta - sum_{m=0}^{d_j-1} log(S0_j - m/d_j E0_j) ],
  E0_j = sum_{D_j} r_i; the gradient and information follow with S1, S2, E1, E2 the x- and xx'-weighted sums:
  g = sum_j [ sum_{D_j} x_i - sum_m A1/A0 ], I = sum_j sum_m [ A2/A0 - A1 A1'/A0^2 ], A_q = S_q - m/d_j E_q.

Within a stratum the partial likelihood is unchanged by shifting all of eta by a constant, so it is evaluated with
eta - max(eta) (no overflow). A beta so extreme that a whole risk set underflows gives log likelihood -inf (with zero
gradient and information): the coordinator's Newton then halves its step. Breslow's baseline cumulative hazard of the stratum, at a patient at ``centre``,
is H(t) = sum_{t_j <= t} d_j / sum_{R_j} exp((x_i - centre) beta) (the estimator lifelines uses for every ties rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedmath.survival import CoxFit, CoxTerms, newton_maximise


class SiteSurvivalError(ValueError):
    """Site data or a request that the survival site halves refuse; the message holds no patient value."""


@dataclass(frozen=True)
class SurvivalData:
    """One site's held-in (or held-out) cohort: features (n x p), follow-up time (n) and event 0/1 (n)."""

    features: np.ndarray
    time: np.ndarray
    event: np.ndarray

    @classmethod
    def checked(cls, features: object, time: object, event: object) -> "SurvivalData":
        x = np.asarray(features, dtype=float)
        if x.ndim == 1:
            x = x[:, None]
        t = np.asarray(time, dtype=float)
        e = np.asarray(event, dtype=float)
        if x.ndim != 2 or t.ndim != 1 or e.shape != t.shape or x.shape[0] != t.size or t.size == 0:
            raise SiteSurvivalError("features, time and event must describe the same non-empty set of patients")
        if not np.all(np.isfinite(x)):
            raise SiteSurvivalError("a feature value is missing or not finite")
        if not np.all(np.isfinite(t)) or np.any(t < 0):
            raise SiteSurvivalError("a follow-up time is missing, negative or not finite")
        if not np.all(np.isin(e, (0.0, 1.0))):
            raise SiteSurvivalError("an event indicator is not 0 or 1")
        return cls(x, t, e.astype(np.int64))

    @property
    def n_events(self) -> int:
        return int(self.event.sum())


def _checked_beta(beta: object, p: int) -> np.ndarray:
    b = np.asarray(beta, dtype=float)
    if b.shape != (p,) or not np.all(np.isfinite(b)):
        raise SiteSurvivalError(f"the coefficients must be {p} finite numbers (one per model feature)")
    return b


def _event_groups(data: SurvivalData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ascending order, distinct event times, and for each the index (in order) where its risk set starts."""
    order = np.argsort(data.time, kind="mergesort")
    times = data.time[order]
    event_times = np.unique(times[data.event[order] == 1])
    starts = np.searchsorted(times, event_times, side="left")
    return order, event_times, starts


def cox_terms(data: SurvivalData, beta: object, ties: str = "efron") -> CoxTerms:
    """Gradient, information and log partial likelihood of this site's stratum at ``beta``."""
    if ties not in ("efron", "breslow"):
        raise SiteSurvivalError(f"unknown ties method {ties!r}; expected efron or breslow")
    p = data.features.shape[1]
    b = _checked_beta(beta, p)
    order, event_times, starts = _event_groups(data)
    if event_times.size == 0:
        return CoxTerms(np.zeros(p), np.zeros((p, p)), 0.0)
    x = data.features[order]
    t = data.time[order]
    events = data.event[order] == 1
    eta = x @ b
    eta_shift = eta - eta.max()
    r = np.exp(eta_shift)
    rx = r[:, None] * x
    rxx = rx[:, :, None] * x[:, None, :]
    # risk-set sums: reverse cumulative sums over ascending times, read at each event time's first index
    s0 = np.cumsum(r[::-1])[::-1][starts]
    s1 = np.cumsum(rx[::-1], axis=0)[::-1][starts]
    s2 = np.cumsum(rxx[::-1], axis=0)[::-1][starts]
    group = np.searchsorted(event_times, t[events])
    d = np.bincount(group, minlength=event_times.size)
    e0 = np.bincount(group, weights=r[events], minlength=event_times.size)
    e1 = np.zeros_like(s1)
    np.add.at(e1, group, rx[events])
    e2 = np.zeros_like(s2)
    np.add.at(e2, group, rxx[events])
    # one row per event: its time group and its Efron fraction m/d_j (0 for Breslow)
    g = np.repeat(np.arange(event_times.size), d)
    m = np.arange(g.size) - np.repeat(np.cumsum(d) - d, d)
    phi = m / d[g] if ties == "efron" else np.zeros(g.size)
    a0 = s0[g] - phi * e0[g]
    if np.any(a0 <= 0):  # every risk score of a late risk set underflowed: the likelihood is 0 in double precision
        return CoxTerms(np.zeros(p), np.zeros((p, p)), -np.inf)
    a1 = s1[g] - phi[:, None] * e1[g]
    a2 = s2[g] - phi[:, None, None] * e2[g]
    z = a1 / a0[:, None]
    log_likelihood = float(eta_shift[events].sum() - np.log(a0).sum())
    gradient = x[events].sum(axis=0) - z.sum(axis=0)
    information = (a2 / a0[:, None, None]).sum(axis=0) - z.T @ z
    return CoxTerms(gradient, information, log_likelihood)


def breslow_cumulative_hazard(data: SurvivalData, beta: object, centre: object, grid: object) -> np.ndarray:
    """This stratum's Breslow H(g) at each grid time g for a patient at ``centre``."""
    p = data.features.shape[1]
    b = _checked_beta(beta, p)
    c = _checked_beta(centre, p)
    g = np.asarray(grid, dtype=float)
    if g.ndim != 1 or not np.all(np.isfinite(g)) or np.any(np.diff(g) <= 0):
        raise SiteSurvivalError("grid times must be finite and increasing")
    order, event_times, starts = _event_groups(data)
    r = np.exp((data.features[order] - c) @ b)
    s0 = np.cumsum(r[::-1])[::-1][starts]
    d = np.bincount(np.searchsorted(event_times, data.time[data.event == 1]), minlength=event_times.size)
    increments = np.cumsum(d / s0)
    upto = np.searchsorted(event_times, g, side="right")
    return np.where(upto > 0, increments[np.maximum(upto - 1, 0)], 0.0)


def fit_local_cox(data: SurvivalData, ties: str = "efron", ridge: float = 0.0) -> CoxFit:
    """Cox fit on this site alone (e.g. the calibration slope of a linear predictor at a held-out site)."""
    return newton_maximise(lambda beta: cox_terms(data, beta, ties), data.features.shape[1], ridge)


def feature_sums(data: SurvivalData) -> tuple[np.ndarray, int]:
    """(sum of each feature, n): the coordinator pools them into the model's centre (the training feature mean)."""
    return data.features.sum(axis=0), int(data.features.shape[0])

