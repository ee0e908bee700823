"""The statistics of the study: per-arm summaries, paired comparisons, Holm's correction, the
equivalence test, verdicts, the detectable difference and rank agreement.

Every arm of a comparison runs under the same seeds, and one seed fixes the initial weights,
the views, the negatives and the data order of a run, so two arms under one seed are a matched
pair: a comparison is the paired difference d_s = x_s - y_s over the seeds both arms have.

- Per arm: mean, sample standard deviation s, and the 95% Student-t interval of the mean,
  mean +- t(0.975, n - 1) s / sqrt(n).
- Per comparison: D = mean(d), its standard error se = sd(d) / sqrt(n), the 95% t-interval
  D +- t(0.975, n - 1) se, the two-sided p-value of the paired t-test, and the p-value of the
  equivalence test at margin M, two one-sided tests (TOST: H0 D <= -M and H0 D >= M, each
  rejected by a one-sided t-test; p = the larger of the two).
- A stage's planned comparisons form a family: Holm's step-down correction controls the
  family-wise error at alpha, for the difference tests and, separately, for the equivalence
  tests (p_(i) sorted ascending, adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))).
- The verdict: "X beats Y by D [lo, hi]" when the Holm-adjusted difference p < alpha;
  otherwise "X and Y are equivalent within +-M" when the Holm-adjusted TOST p < alpha;
  otherwise "inconclusive: X - Y = D [lo, hi]". A comparison with fewer than 2 pairs is
  inconclusive.
- The smallest difference a comparison could detect with 80% power at its measured spread:
  (t(1 - alpha / 2, n - 1) + t(0.8, n - 1)) sd(d) / sqrt(n).

Values are fractions (0.4123 = 41.23 %) as the probes return them; margins are in the same unit.
"""

import dataclasses
import math
from typing import List, Optional, Sequence

import numpy as np

CONFIDENCE = 0.95
POWER = 0.8


def _t():
    from scipy import stats

    return stats.t


@dataclasses.dataclass
class ArmSummary:
    """n, mean, sample sd and the 95% interval [low, high] of an arm's scores (NaN where
    undefined: sd and the interval need n >= 2)."""
    n: int
    mean: float
    sd: float
    low: float
    high: float

    @property
    def half(self):
        return (self.high - self.low) / 2


def summarize(values: Sequence[float], confidence=CONFIDENCE) -> ArmSummary:
    """The `ArmSummary` of the finite values given."""
    x = np.array([v for v in values if v is not None and math.isfinite(v)], np.float64)
    n = len(x)
    if n == 0:
        return ArmSummary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1:
        return ArmSummary(1, mean, math.nan, math.nan, math.nan)
    sd = float(x.std(ddof=1))
    half = float(_t().ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n))
    return ArmSummary(n, mean, sd, mean - half, mean + half)


@dataclasses.dataclass
class Comparison:
    """One planned comparison of arm `a` against arm `b` over their common seeds.

    `difference` is mean(a - b); `low`/`high` its 95% interval; `p` the two-sided paired
    t-test and `p_equivalent` the TOST p at `margin`, both raw; `p_holm` and
    `p_equivalent_holm` after Holm's correction over the comparison's family (set by `holm`).
    """
    a: str
    b: str
    seeds: List[int]
    difference: float
    sd: float
    low: float
    high: float
    p: float
    p_equivalent: float
    margin: float
    detectable: float
    p_holm: float = math.nan
    p_equivalent_holm: float = math.nan
    alpha: float = 0.05

    @property
    def n(self):
        return len(self.seeds)

    @property
    def kind(self):
        """"winner", "equivalent" or "inconclusive" (after `holm`)."""
        if self.n >= 2 and self.p_holm < self.alpha:
            return "winner"
        if self.n >= 2 and self.p_equivalent_holm < self.alpha:
            return "equivalent"
        return "inconclusive"

    @property
    def decided(self):
        return self.kind != "inconclusive"

    def verdict(self, scale=100.0, unit=" points"):
        """The verdict in words, values multiplied by `scale` (fractions -> points)."""
        d, lo, hi = (scale * v for v in (self.difference, self.low, self.high))
        if self.kind == "winner":
            win, lose = (self.a, self.b) if d > 0 else (self.b, self.a)
            d, lo, hi = (d, lo, hi) if d > 0 else (-d, -hi, -lo)
            return f"{win} beats {lose} by {d:.2f} [{lo:.2f}, {hi:.2f}]{unit}"
        if self.kind == "equivalent":
            return (f"{self.a} and {self.b} are equivalent within +-{scale * self.margin:g}"
                    f"{unit} (difference {d:+.2f} [{lo:.2f}, {hi:.2f}])")
        if self.n < 2:
            return f"inconclusive: {self.a} - {self.b}, {self.n} common seed(s), no interval"
        return f"inconclusive: {self.a} - {self.b} = {d:+.2f} [{lo:.2f}, {hi:.2f}]{unit}"


def detectable_difference(sd, n, alpha=0.05, power=POWER):
    """The true paired difference a two-sided test at `alpha` detects with `power`, given the
    sd of the paired differences and n pairs: (t(1 - alpha/2, n-1) + t(power, n-1)) sd / sqrt(n).
    NaN for n < 2."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    t = _t()
    return float((t.ppf(1 - alpha / 2, n - 1) + t.ppf(power, n - 1)) * sd / math.sqrt(n))


def compare(a_name, a_scores, b_name, b_scores, margin, alpha=0.05):
    """The paired `Comparison` of two arms given as {seed: score}; only the seeds both have
    count. Holm-adjusted p-values are set later, over the family (`holm`)."""
    seeds = sorted(set(a_scores) & set(b_scores))
    d = np.array([a_scores[s] - b_scores[s] for s in seeds], np.float64)
    n = len(d)
    if n == 0:
        return Comparison(a_name, b_name, [], math.nan, math.nan, math.nan, math.nan, 1.0, 1.0,
                          margin, math.nan, alpha=alpha)
    mean = float(d.mean())
    if n < 2:
        return Comparison(a_name, b_name, seeds, mean, math.nan, math.nan, math.nan, 1.0, 1.0,
                          margin, math.nan, alpha=alpha)
    t = _t()
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    df = n - 1
    half = float(t.ppf(1 - alpha / 2, df) * se)
    if se == 0:  # identical differences: the sign decides
        p = 0.0 if mean != 0 else 1.0
        p_eq = 0.0 if abs(mean) < margin else 1.0
    else:
        p = float(2 * t.sf(abs(mean) / se, df))
        p_lower = float(t.sf((mean + margin) / se, df))   # H0: D <= -M
        p_upper = float(t.cdf((mean - margin) / se, df))  # H0: D >= +M
        p_eq = max(p_lower, p_upper)
    return Comparison(a_name, b_name, seeds, mean, sd, mean - half, mean + half, p, p_eq,
                      margin, detectable_difference(sd, n, alpha), alpha=alpha)


def holm_adjust(p_values: Sequence[float]) -> List[float]:
    """Holm's step-down adjusted p-values, in the order given."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def holm(comparisons: List[Comparison]) -> List[Comparison]:
    """Sets p_holm and p_equivalent_holm over the family of `comparisons` (in place)."""
    for attr in ("p", "p_equivalent"):
        for c, value in zip(comparisons, holm_adjust([getattr(c, attr) for c in comparisons])):
            setattr(c, f"{attr}_holm", value)
    return comparisons


def pooled_sd(comparisons: List[Comparison]) -> Optional[float]:
    """The sd of paired differences pooled over comparisons (weights n - 1), or None."""
    num = sum((c.n - 1) * c.sd ** 2 for c in comparisons if c.n >= 2 and math.isfinite(c.sd))
    df = sum(c.n - 1 for c in comparisons if c.n >= 2 and math.isfinite(c.sd))
    return math.sqrt(num / df) if df else None


def least_significant_difference(sd_pair, df, alpha=0.05):
    """The smallest gap between two single-seed scores that a paired test at `alpha` would
    call significant, when the sd of a paired difference is `sd_pair` (estimated on df degrees
    of freedom): t(1 - alpha/2, df) sd_pair."""
    if not df or sd_pair is None:
        return math.nan
    return float(_t().ppf(1 - alpha / 2, df) * sd_pair)


def kendall_tau(x: Sequence[float], y: Sequence[float]):
    """Kendall's tau-b between two scorings of the same cells (NaN for fewer than 3 cells)."""
    if len(x) < 3:
        return math.nan
    from scipy import stats

    return float(stats.kendalltau(x, y).statistic)
