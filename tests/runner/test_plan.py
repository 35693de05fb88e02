"""Plans: each config's estimate, the totals, and the refusal of configs over a worker's memory."""

import dataclasses
import math

import pytest

from ntkscope.runner import Sweep, expand, plan, within_memory
from ntkscope.runner.plan import wall_time
from ntkscope.studies import Cost


def test_plan_sums_times_and_takes_the_largest_memory(toy):
    planned = plan(expand({"study": toy, "product": {"value": [1, 2, 5]}}))  # value s, value MB
    assert planned.costs == (Cost(1.0, 1e6), Cost(2.0, 2e6), Cost(5.0, 5e6))
    assert (planned.seconds, planned.longest, planned.memory) == (8.0, 5.0, 5e6)
    assert planned.over(2.5e6) == [2]
    # 2 workers: the total halves (4 s), unless one run is longer (5 s)
    assert wall_time([planned], 2) == 5.0 and wall_time([planned], 1) == 8.0


def test_configs_over_the_worker_memory_are_refused_unless_allowed(toy):
    plans = [plan(expand({"study": toy, "product": {"value": [1000, 20000, 30000]}}))]
    message = r"worker_memory: 2 configs are estimated to need more than 16.0 GB per worker: "
    with pytest.raises(ValueError, match=message + r"_toy_study [0-9a-f]{12} \(20.0 GB\)"):
        within_memory(plans, 16e9, allow=False)
    assert within_memory(plans, 16e9, allow=True) == [plans[0].sweep]
    assert within_memory(plans, 32e9, allow=False) == [plans[0].sweep]


def test_a_study_without_a_cost_model_is_unknown_not_free(toy):
    sweep = expand({"study": toy, "product": {"value": [1, 2]}})
    planned = plan(Sweep(dataclasses.replace(sweep.study, cost=None), sweep.configs))
    assert planned.costs == (None, None) and math.isnan(planned.seconds)
    assert planned.over(1.0) == []  # unknown memory is not refused
