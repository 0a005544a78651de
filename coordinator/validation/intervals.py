"""Confidence intervals for binomial proportions."""

from __future__ import annotations

import math

from scipy import stats


def _check(x: int, n: int) -> None:
    if n <= 0 or x < 0 or x > n:
        raise ValueError(f"a proportion needs 0 <= successes <= trials and trials > 0, got {x} of {n}")


def wilson_ci(x: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval: (p̂ + z²/2n ± z√(p̂(1-p̂)/n + z²/4n²)) / (1 + z²/n)."""
    _check(x, n)
    z = stats.norm.ppf(0.5 + level / 2)
    p = x / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # exact ends at x = 0 and x = n (rounding left e.g. 1e-17 above 0, outside the interval's own estimate)
    low = 0.0 if x == 0 else max(0.0, min(p, float(centre - half)))
    high = 1.0 if x == n else min(1.0, max(p, float(centre + half)))
    return low, high


def clopper_pearson_ci(x: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact interval: Beta(a/2; x, n-x+1) and Beta(1-a/2; x+1, n-x) quantiles (0 and 1 at the ends)."""
    _check(x, n)
    a = 1 - level
    lo = 0.0 if x == 0 else float(stats.beta.ppf(a / 2, x, n - x + 1))
    hi = 1.0 if x == n else float(stats.beta.ppf(1 - a / 2, x + 1, n - x))
    return lo, hi


def proportion_ci(x: int, n: int, method: str = "wilson", level: float = 0.95) -> tuple[float, float]:
    """Dispatch to :func:`wilson_ci` or :func:`clopper_pearson_ci`."""
    if method == "wilson":
        return wilson_ci(x, n, level)
    if method in ("clopper-pearson", "clopper_pearson", "exact"):
        return clopper_pearson_ci(x, n, level)
    raise ValueError(f"unknown interval method {method!r}; expected 'wilson' or 'clopper-pearson'")
