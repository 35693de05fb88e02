"""Published claims and the rules that decide, from stored results, whether a study
reproduced them.

A study may define ``claims(results) -> list[Claim]`` next to its ``captions``: one `Claim`
per published claim it tests, with the source, the measured numbers with their 95%
intervals, and a `Finding` decided by a rule stated in words. The report puts every
study's claims in one findings table at the top.

The rules share three outcomes. *reproduced*: the 95% interval of the measured quantity lies
where the claim says. *not reproduced*: it lies on the other side. *inconclusive*: the
interval straddles the boundary, or there are too few runs (fewer than `MIN_RUNS`) for an
interval at all. Intervals over runs are Student-t intervals of the mean (runs at different
settings of the same study count as replicates of the claim); a difference between two
groups of runs uses Welch's interval.

A claim that an effect exists (a fall, a gain, a difference) states the smallest effect
that would bear it out, and `effect` also calls it *not reproduced* when the interval lies
below that size: whatever effect is left is too small to be the one claimed (an equivalence
bound, as in the two one-sided tests of Schuirmann 1987 and Lakens 2017). Without it an
effect near zero would stay inconclusive however many runs measured it; with it, enough
runs always decide, unless the true effect sits at the bound itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd
from scipy import stats

MIN_RUNS = 2
"""Fewest runs behind an interval; with fewer the verdict is inconclusive."""


class Finding(StrEnum):
    """The verdict on one claim.

    REPRODUCED: the measured interval lies where the claim says.
    NOT_REPRODUCED: it lies on the other side.
    INCONCLUSIVE: the interval straddles the boundary, or too few runs.
    """

    REPRODUCED = "reproduced"
    NOT_REPRODUCED = "not reproduced"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` runs with its 95% interval [low, high] (NaN when n < `MIN_RUNS`)."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        if not math.isfinite(self.low):
            return f"{self.mean:.3g} (n = {self.n}, no interval)"
        return f"{self.mean:.3g} [{self.low:.3g}, {self.high:.3g}] (n = {self.n})"


@dataclass(frozen=True)
class Claim:
    """One published claim and what the stored runs say about it.

    Attributes:
        claim: the claim in words.
        source: the paper it comes from.
        measured: the measured numbers with their 95% intervals.
        finding: the verdict.
        rule: how the verdict was decided, in words.
    """

    claim: str
    source: str
    measured: str
    finding: Finding
    rule: str


def _finite(values: Iterable[float]) -> np.ndarray:
    array = np.asarray(list(values), dtype=float)
    return array[np.isfinite(array)]


def estimate(values: Iterable[float]) -> Estimate:
    """Mean of the finite ``values`` with a 95% Student-t interval."""
    x = _finite(values)
    if len(x) == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    if len(x) < MIN_RUNS:
        return Estimate(float(x.mean()), math.nan, math.nan, len(x))
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return Estimate(float(x.mean()), float(x.mean() - half), float(x.mean() + half), len(x))


def difference(first: Iterable[float], second: Iterable[float]) -> Estimate:
    """mean(first) − mean(second) with Welch's 95% interval; n is the smaller group's size."""
    a, b = _finite(first), _finite(second)
    n = min(len(a), len(b))
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(a.mean() - b.mean())
    if n < MIN_RUNS:
        return Estimate(mean, math.nan, math.nan, n)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return Estimate(mean, mean, mean, n)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.975, dof) * math.sqrt(va + vb)
    return Estimate(mean, mean - half, mean + half, n)


def above(value: Estimate, bound: float) -> Finding:
    """REPRODUCED if the interval lies above ``bound``, NOT_REPRODUCED if below."""
    if value.n < MIN_RUNS or not math.isfinite(value.low):
        return Finding.INCONCLUSIVE
    if value.low > bound:
        return Finding.REPRODUCED
    return Finding.NOT_REPRODUCED if value.high < bound else Finding.INCONCLUSIVE


def effect(value: Estimate, smallest: float) -> Finding:
    """REPRODUCED if the interval of a claimed effect lies above 0, NOT_REPRODUCED if it lies
    below ``smallest`` > 0, the smallest effect that would bear the claim out (module
    docstring), else INCONCLUSIVE. An interval in (0, ``smallest``) is an effect in the
    claimed direction, small but real: REPRODUCED."""
    if value.n < MIN_RUNS or not math.isfinite(value.low) or not smallest > 0:
        return Finding.INCONCLUSIVE
    if value.low > 0:
        return Finding.REPRODUCED
    return Finding.NOT_REPRODUCED if value.high < smallest else Finding.INCONCLUSIVE


def minus(first: Estimate, second: Estimate) -> Estimate:
    """first − second of two independent estimates, the half-widths of their intervals added
    in quadrature (normal approximation; an asymmetric interval counts by its mean
    half-width); n is the smaller n."""
    n = min(first.n, second.n)
    mean = first.mean - second.mean
    half = math.hypot(first.high - first.low, second.high - second.low) / 2
    return Estimate(mean, mean - half, mean + half, n)


def below(value: Estimate, bound: float) -> Finding:
    """REPRODUCED if the interval lies below ``bound``, NOT_REPRODUCED if above."""
    flipped = Estimate(-value.mean, -value.high, -value.low, value.n)
    return above(flipped, -bound)


def within(value: Estimate, low: float, high: float) -> Finding:
    """REPRODUCED if the interval lies inside [low, high], NOT_REPRODUCED if outside it."""
    if value.n < MIN_RUNS or not math.isfinite(value.low):
        return Finding.INCONCLUSIVE
    if low <= value.low and value.high <= high:
        return Finding.REPRODUCED
    outside = value.high < low or value.low > high
    return Finding.NOT_REPRODUCED if outside else Finding.INCONCLUSIVE


def all_of(findings: Sequence[Finding]) -> Finding:
    """REPRODUCED if every part is, NOT_REPRODUCED if any part is not, else INCONCLUSIVE."""
    if findings and all(f is Finding.REPRODUCED for f in findings):
        return Finding.REPRODUCED
    if Finding.NOT_REPRODUCED in findings:
        return Finding.NOT_REPRODUCED
    return Finding.INCONCLUSIVE


def extreme_widths(runs: pd.DataFrame, values: pd.Series) -> tuple[pd.Series, pd.Series, str]:
    """``values`` of the runs at the narrowest and at the widest width, and "width a → b"."""
    widths = runs["config.width"]
    narrow, wide = widths.min(), widths.max()
    return values[widths == narrow], values[widths == wide], f"width {narrow:g} → {wide:g}"


CLOSES = 0.25
"""The smallest share of a gap that must close from the narrowest to the widest width for a
claim that the gap closes as width grows (`closes_with_width`): a quarter."""


def closes_with_width(runs: pd.DataFrame, gap: pd.Series) -> tuple[str, Finding, str]:
    """Whether a non-negative ``gap`` (one value per run) closes from the narrowest to the
    widest width: the measured numbers, the finding of `effect` on the Welch interval of the
    fall with smallest effect `CLOSES` × the narrowest width's mean gap, and the rule."""
    narrow, wide, span = extreme_widths(runs, gap)
    start, fall = estimate(narrow), difference(narrow, wide)
    smallest = CLOSES * abs(start.mean)
    rule = (
        "reproduced if the Welch 95% interval of the fall from the narrowest to the widest "
        f"width lies above 0; not reproduced if it lies below {CLOSES:g} × the narrowest "
        f"width's mean ({smallest:.3g}): the gap closes by less than a quarter, if at all"
    )
    return f"{span}: {start} → {estimate(wide)}; fall {fall}", effect(fall, smallest), rule
