"""The verdict rule of `ntkscope.diagnosis.verdict`, on hand-picked numbers."""

from __future__ import annotations

import math

import pytest

from ntkscope.diagnosis.verdict import Verdict, criteria, decide, describe


@pytest.mark.parametrize(
    ("change", "gap", "dispersion", "expected"),
    [
        (0.05, 0.05, 0.05, Verdict.KERNEL_REGIME),
        (0.05, 0.05, 0.3, Verdict.PARTLY),  # lazy, but the kernel depends on the seed
        (0.2, 0.05, 0.05, Verdict.PARTLY),
        (0.05, math.nan, 0.05, Verdict.INCOMPLETE),  # the gap could not be measured
        (0.2, math.nan, 0.05, Verdict.INCOMPLETE),
        (0.6, math.nan, 0.05, Verdict.FEATURE_LEARNING),  # decided by the kernel change
        (0.6, 0.05, 0.05, Verdict.FEATURE_LEARNING),
        (0.05, 0.4, 0.05, Verdict.FEATURE_LEARNING),
        (5.0, 5.0, 5.0, Verdict.FEATURE_LEARNING),
    ],
)
def test_decide(change, gap, dispersion, expected):
    assert decide(criteria(change, gap, dispersion), diverged=False) is expected
    assert decide(criteria(change, gap, dispersion), diverged=True) is Verdict.DIVERGED


def test_every_criterion_states_its_thresholds():
    for c in criteria(0.0, 0.0, 0.0):
        assert 0 < c.lazy_below < c.rich_above and c.meaning


def test_a_criterion_not_measured_is_named_in_the_verdict():
    """Regression (issue 18, defect 1): "partly" used to rest on two criteria silently."""
    measured = criteria(0.2, math.nan, 0.05)
    assert describe(decide(measured, False), measured) == (
        "incomplete (not measured: linearization gap)"
    )
    measured = criteria(0.6, 0.05, math.nan)
    assert describe(decide(measured, False), measured) == (
        "feature learning (not measured: init dispersion)"
    )
    assert describe(decide(measured, True), measured) == "diverged"


def test_a_diverged_run_has_no_regime_statuses():
    """Regression (issue 18, defect 5): a diverged run's "kernel change 0" read "kernel"."""
    measured = criteria(0.0, math.nan, 0.05, diverged=True)
    assert {c.status for c in measured} == {"n/a (diverged)"}
    assert decide(measured, diverged=True) is Verdict.DIVERGED
