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


def intervals_apart(first: tuple[float, float], second: tuple[float, float]) -> Finding:
    """REPRODUCED if interval ``first`` lies above ``second``, NOT_REPRODUCED if below,
    INCONCLUSIVE if they overlap (or one is not finite)."""
    if not all(math.isfinite(v) for v in (*first, *second)):
        return Finding.INCONCLUSIVE
    if first[0] > second[1]:
        return Finding.REPRODUCED
    return Finding.NOT_REPRODUCED if first[1] < second[0] else Finding.INCONCLUSIVE


def all_of(findings: Sequence[Finding]) -> Finding:
    """REPRODUCED if every part is, NOT_REPRODUCED if any part is not, else INCONCLUSIVE."""
    if findings and all(f is Finding.REPRODUCED for f in findings):
        return Finding.REPRODUCED
    if Finding.NOT_REPRODUCED in findings:
        return Finding.NOT_REPRODUCED
    return Finding.INCONCLUSIVE


def majority(findings: Sequence[Finding]) -> Finding:
    """The verdict over several settings: REPRODUCED or NOT_REPRODUCED when every decided
    setting agrees and they are at least half, else INCONCLUSIVE."""
    decided = [f for f in findings if f is not Finding.INCONCLUSIVE]
    if not decided or 2 * len(decided) < len(findings) or len(set(decided)) > 1:
        return Finding.INCONCLUSIVE
    return decided[0]


def extreme_widths(runs: pd.DataFrame, values: pd.Series) -> tuple[pd.Series, pd.Series, str]:
    """``values`` of the runs at the narrowest and at the widest width, and "width a → b"."""
    widths = runs["config.width"]
    narrow, wide = widths.min(), widths.max()
    return values[widths == narrow], values[widths == wide], f"width {narrow:g} → {wide:g}"
