"""The verdict rule of `ntkscope.diagnosis.verdict`, on hand-picked numbers."""

from __future__ import annotations

import math

import pytest

from ntkscope.diagnosis.verdict import Verdict, criteria, decide


@pytest.mark.parametrize(
    ("change", "gap", "dispersion", "expected"),
    [
        (0.05, 0.05, 0.05, Verdict.KERNEL_REGIME),
        (0.05, 0.05, 0.3, Verdict.PARTLY),  # lazy, but the kernel depends on the seed
        (0.2, 0.05, 0.05, Verdict.PARTLY),
        (0.05, math.nan, 0.05, Verdict.PARTLY),  # the gap could not be measured
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
