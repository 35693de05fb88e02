"""The findings table's rules: every study's claims on synthetic stores made to pass and to
fail, and the shared interval rules of `ntkscope.studies._claims`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ntkscope import studies
from ntkscope.studies import Finding, Results
from ntkscope.studies._claims import (
    Estimate,
    above,
    all_of,
    difference,
    effect,
    estimate,
    minus,
    within,
)

RNG = np.random.default_rng(0)
WIDTHS = [64, 1024]


def noisy(center: float, n: int, sd: float = 0.02) -> np.ndarray:
    """n replicates around ``center``; sd well below the synthetic effects (≥ 10 sd)."""
    return center + sd * RNG.standard_normal(n)


def _widths(narrow: float, wide: float, metric: str, seeds: int = 4, **fixed) -> pd.DataFrame:
    """Runs at the narrowest and widest width with ``metric`` around ``narrow``, ``wide``."""
    return pd.DataFrame(
        {"config.width": np.repeat(WIDTHS, seeds),
         f"metrics.{metric}": np.concatenate([noisy(narrow, seeds), noisy(wide, seeds)])}
        | {f"config.{k}": v for k, v in fixed.items()}
    )  # fmt: skip


def width_convergence(good: bool) -> pd.DataFrame:
    return pd.DataFrame({"metrics.slope": noisy(-0.5 if good else -1.0, 6)})


def init_fluctuations(good: bool) -> pd.DataFrame:
    rows = []
    for depth in (1, 2, 4):
        for width in (16, 64, 256):
            change = width ** (-0.5 if good else 0.5) * (1 + 0.01 * RNG.standard_normal())
            rows.append({"config.depth": depth, "config.width": width, "metrics.beta":
                         depth / width, "metrics.dispersion_ratio": noisy(1 if good else 5, 1)[0],
                         "metrics.kernel_change": change})  # fmt: skip
    return pd.DataFrame(rows)


def phase_diagram(good: bool) -> pd.DataFrame:
    rows = []
    for sigma_w2, chi in ((1.0, 0.5), (2.0, 1.0), (3.0, 1.5)):
        for depth in (1, 12):
            level = 0.5 if (chi > 1) == good and depth == 12 else 0.03
            row = {"config.sigma_w2": sigma_w2, "config.depth": depth, "metrics.chi_1": chi}
            row |= {f"metrics.dispersion_{a}": noisy(level, 1)[0] for a in (30, 60, 90, 120)}
            rows.append(row)
    return pd.DataFrame(rows)


def scaling_laws(good: bool) -> pd.DataFrame:
    network, kernel = (0.6, 0.25) if good else (0.25, 0.6)
    rows = []
    for task in ("a", "b"):
        row = {"hash": task, "config.task": task}
        for method, alpha in (("network", network), ("ntk", kernel), ("entk_init", kernel)):
            row |= {f"metrics.alpha_{method}": alpha, f"metrics.alpha_{method}_low": alpha - 0.05,
                    f"metrics.alpha_{method}_high": alpha + 0.05}  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def kernel_over_time(good: bool) -> pd.DataFrame:
    early = noisy(1.0, 4)
    final = early * (0.7 if good else 1.3)
    return pd.DataFrame(
        {"metrics.kernel_test_mse_early": early, "metrics.kernel_test_mse_final": final}
    )


def width_effect(good: bool) -> pd.DataFrame:
    return pd.DataFrame({"metrics.entk_gap_slope": noisy(-0.5 if good else 0.5, 4)})


def optimization(good: bool) -> pd.DataFrame:
    narrow, wide = (20.0, 1.1) if good else (1.1, 20.0)
    return _widths(narrow, wide, "shortfall")


def uncertainty(good: bool) -> pd.DataFrame:
    runs = _widths(0.3 if good else 0.05, 0.05 if good else 0.3, "ensemble_auroc_ood")
    return runs.assign(**{"metrics.infinite_gp_auroc_ood": 0.0})


def continual(good: bool) -> pd.DataFrame:
    early = _widths(0.4, 0.1 if good else 0.6, "forgetting", regime="early")
    converged = _widths(0.4, 0.38, "forgetting", regime="converged")
    return pd.concat([early, converged], ignore_index=True)


SYNTHETIC = [width_convergence, init_fluctuations, phase_diagram, scaling_laws,
             kernel_over_time, width_effect, optimization, uncertainty, continual]  # fmt: skip


def claims(make, good: bool) -> list:
    runs = make(good)
    if "hash" not in runs:
        runs = runs.assign(hash=[f"h{i}" for i in range(len(runs))])
    tables = {"losses": pd.DataFrame({"hash": runs.hash})}
    return studies.get(make.__name__).claims(Results(runs, tables, lambda h: {}))


def test_every_registered_study_has_synthetic_stores():
    assert {make.__name__ for make in SYNTHETIC} == set(studies.names())


@pytest.mark.parametrize("make", SYNTHETIC, ids=lambda make: make.__name__)
def test_a_store_made_to_pass_reproduces_and_one_made_to_fail_does_not(make):
    passing, failing = claims(make, good=True), claims(make, good=False)
    assert passing and len(passing) == len(failing)
    for claim in passing:
        assert claim.finding is Finding.REPRODUCED, claim
        assert claim.source and claim.rule and claim.measured, claim
    for claim in failing:
        assert claim.finding is Finding.NOT_REPRODUCED, claim


def test_one_run_is_inconclusive():
    """Too few runs for an interval: no verdict either way."""
    runs = width_convergence(good=True).head(1).assign(hash="h")
    [claim] = studies.get("width_convergence").claims(Results(runs, {}, lambda h: {}))
    assert claim.finding is Finding.INCONCLUSIVE and "no interval" in claim.measured


def test_estimate_is_the_student_t_interval():
    """Mean 2 and sd 1 over 4 values: half-width t_{0.975, 3} · 1/√4 = 3.182/2."""
    value = estimate([1.0, 1.0, 3.0, 3.0])
    sd = math.sqrt(4 / 3)
    assert value.mean == 2 and value.high - 2 == pytest.approx(3.182446 * sd / 2, rel=1e-6)


def test_interval_rules_overlap_is_inconclusive():
    straddling = estimate([-1.0, 1.0, -0.5, 0.5])
    assert above(straddling, 0.0) is Finding.INCONCLUSIVE
    assert within(straddling, 0.0, 2.0) is Finding.INCONCLUSIVE
    assert above(difference([1.0, 1.1], [1.05, 0.95]), 0.0) is Finding.INCONCLUSIVE
    assert above(difference([2.0, 2.1], [1.0]), 0.0) is Finding.INCONCLUSIVE  # one run


def test_combining_verdicts():
    r, n, i = Finding.REPRODUCED, Finding.NOT_REPRODUCED, Finding.INCONCLUSIVE
    assert all_of([r, r]) is r and all_of([r, n]) is n and all_of([r, i]) is i


def test_effect_decides_with_the_smallest_effect_that_bears_the_claim_out():
    """Above 0: reproduced (also when below the smallest effect: small but real); below the
    smallest effect and not above 0: not reproduced; straddling it: inconclusive."""
    r, n, i = Finding.REPRODUCED, Finding.NOT_REPRODUCED, Finding.INCONCLUSIVE
    assert effect(Estimate(0.5, 0.2, 0.8, 10), 0.1) is r
    assert effect(Estimate(0.05, 0.01, 0.09, 10), 0.1) is r
    assert effect(Estimate(0.0, -0.05, 0.05, 10), 0.1) is n
    assert effect(Estimate(-1.0, -1.2, -0.8, 10), 0.1) is n
    assert effect(Estimate(0.05, -0.05, 0.15, 10), 0.1) is i
    assert effect(Estimate(0.0, -0.05, 0.05, 1), 0.1) is i  # one run
    assert effect(Estimate(0.0, -0.05, 0.05, 10), 0.0) is i  # no smallest effect: no bound


def test_minus_adds_the_half_widths_in_quadrature():
    """Half-widths 0.3 and 0.4 (the second asymmetric, mean half-width 0.4): 0.5."""
    d = minus(Estimate(1.0, 0.7, 1.3, 5), Estimate(0.25, 0.0, 0.8, 8))
    assert (d.mean, d.n) == (0.75, 5)
    assert (d.low, d.high) == (pytest.approx(0.25), pytest.approx(1.25))


def test_an_effect_near_zero_is_not_reproduced_once_the_interval_is_tight():
    """Regression for the standard preset's inconclusive claims: an effect about 0 measured
    tightly (sd 0.02, 40 runs per group; K^t's late fall sd 0.002) lies below each claim's
    smallest effect, where the old rule ("above 0") left it inconclusive forever. Continual:
    width helps as much when trained to convergence as with early stopping."""
    gap = _widths(0.4, 0.4, "ensemble_auroc_ood", seeds=40)
    cases = {
        "optimization": _widths(2.0, 2.0, "shortfall", seeds=40),
        "uncertainty": gap.assign(**{"metrics.infinite_gp_auroc_ood": 0.0}),
        "continual": pd.concat(
            [
                _widths(0.4, 0.2, "forgetting", seeds=40, regime=regime)
                for regime in ("early", "converged")
            ],
            ignore_index=True,
        ),
        "kernel_over_time": pd.DataFrame(
            {
                "metrics.kernel_test_mse_early": noisy(1.0, 40),
                "metrics.kernel_test_mse_final": noisy(1.0, 40, 0.002),
            }
        ),
    }
    for name, runs in cases.items():
        runs = runs.assign(hash=[f"h{i}" for i in range(len(runs))])
        [claim] = studies.get(name).claims(Results(runs, {}, lambda h: {}))
        assert claim.finding is Finding.NOT_REPRODUCED, claim


def test_scaling_laws_decides_each_task_on_its_own():
    """A network better than its kernels on one task and worse on the other: one reproduced
    and one not reproduced claim per kernel, where a common verdict was inconclusive."""
    runs = pd.concat([scaling_laws(good=True).head(1), scaling_laws(good=False).tail(1)])
    tables = {"losses": pd.DataFrame({"hash": runs.hash})}
    found = studies.get("scaling_laws").claims(Results(runs, tables, lambda h: {}))
    assert [c.finding for c in found] == [Finding.REPRODUCED, Finding.NOT_REPRODUCED] * 2
    assert "task=a" in found[0].claim and "task=b" in found[1].claim
