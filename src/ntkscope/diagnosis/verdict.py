"""The verdict of `ntkscope.diagnose`: is this network in the kernel regime?

NTK theory describes a network when three things hold (Jacot et al. 2018; Lee et al. 2019):
its kernel at initialization is nearly the same for every seed, the kernel barely moves
during training, and the trained network stays close to its linearization. Each is one
measured number with two thresholds:

=====================  ==========================================  ========  =========
criterion              measured as                                 kernel    feature
                                                                   regime    learning
=====================  ==========================================  ========  =========
kernel change          ‖Θ̂_T − Θ̂_0‖_F / ‖Θ̂_0‖_F on the probe set    < 0.1     > 0.5
linearization gap      RMSE(f_T, f_lin,T) / RMS(f_T − f_0), test      < 0.1     > 0.3
init dispersion        mean_s ‖Θ̂_s − Θ̂̄‖_F / ‖Θ̂̄‖_F over seeds       < 0.1     (none)
=====================  ==========================================  ========  =========

*kernel regime*: every criterion below its first threshold. *feature learning*: the kernel
change or the linearization gap above its second threshold (the network learned what its
initial kernel could not). *partly*: anything in between, including a lazy run whose
kernel still depends on the seed (then the infinite-width NTK does not describe it even
though training is lazy). *incomplete*: no measured criterion signals feature learning but
at least one could not be measured (NaN, e.g. the linearized network overflowed), so neither
*kernel regime* nor *partly* can be told apart; `describe` names the missing criteria.
*diverged*: training stopped on a NaN/inf or exploding loss, so no verdict on the regime is
possible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum


class Verdict(StrEnum):
    """The answer of `ntkscope.diagnose` (thresholds in the module docstring).

    KERNEL_REGIME: NTK theory describes this training run.
    PARTLY: some criteria hold, others do not.
    FEATURE_LEARNING: the kernel moved or the network left its linearization.
    INCOMPLETE: no criterion signals feature learning, but some could not be measured.
    DIVERGED: training diverged; no verdict on the regime.
    """

    KERNEL_REGIME = "kernel regime"
    PARTLY = "partly"
    FEATURE_LEARNING = "feature learning"
    INCOMPLETE = "incomplete"
    DIVERGED = "diverged"


@dataclass(frozen=True)
class Criterion:
    """One measured criterion and its thresholds.

    Attributes:
        name: what is measured.
        value: the measurement (NaN when it could not be measured).
        lazy_below: below this it agrees with NTK theory.
        rich_above: above this it signals feature learning (inf: never).
        meaning: one line saying what the number is.
        diverged: measured on a diverged run, which has no regime status.
    """

    name: str
    value: float
    lazy_below: float
    rich_above: float
    meaning: str
    diverged: bool = False

    @property
    def status(self) -> str:
        """ "kernel", "feature learning", "between", "not measured" or, on a diverged run,
        "n/a (diverged)"."""
        if self.diverged:
            return "n/a (diverged)"
        if math.isnan(self.value):
            return "not measured"
        if self.value < self.lazy_below:
            return "kernel"
        return "feature learning" if self.value > self.rich_above else "between"


def criteria(
    kernel_change: float, linear_gap: float, dispersion: float, *, diverged: bool = False
) -> list[Criterion]:
    """The three criteria of the module docstring with their thresholds (``diverged``: of a
    diverged run, so without regime statuses)."""
    measured = [
        Criterion(
            "kernel change",
            kernel_change,
            0.1,
            0.5,
            "‖Θ̂_T − Θ̂_0‖_F / ‖Θ̂_0‖_F on the probe set after training",
        ),
        Criterion(
            "linearization gap",
            linear_gap,
            0.1,
            0.3,
            "RMSE(f_T, f_lin,T) / RMS(f_T − f_0) on the test inputs",
        ),
        Criterion(
            "init dispersion",
            dispersion,
            0.1,
            math.inf,
            "mean over seeds of ‖Θ̂_s − mean Θ̂‖_F / ‖mean Θ̂‖_F at initialization",
        ),
    ]
    return [replace(c, diverged=diverged) for c in measured]


def decide(measured: list[Criterion], diverged: bool) -> Verdict:
    """The `Verdict` from the criteria (module docstring)."""
    if diverged:
        return Verdict.DIVERGED
    statuses = [c.status for c in measured]
    if "feature learning" in statuses:
        return Verdict.FEATURE_LEARNING
    if "not measured" in statuses:
        return Verdict.INCOMPLETE
    if all(s == "kernel" for s in statuses):
        return Verdict.KERNEL_REGIME
    return Verdict.PARTLY


def missing(measured: list[Criterion]) -> list[str]:
    """Names of the criteria that could not be measured."""
    return [c.name for c in measured if c.status == "not measured"]


def describe(verdict: Verdict, measured: list[Criterion]) -> str:
    """The verdict in words, naming the criteria it lacks, e.g. "incomplete (not measured:
    linearization gap)" or "feature learning (not measured: init dispersion)"."""
    absent = missing(measured)
    if verdict is Verdict.DIVERGED or not absent:
        return verdict.value
    return f"{verdict.value} (not measured: {', '.join(absent)})"
