"""Stored metrics do not depend on the executor (seeds and threads are set per task)."""

import pandas as pd

from ntkscope import store
from ntkscope.runner import DaskExecutor, InlineExecutor, LocalExecutor, expand, run_sweep


def sweep(toy):
    return [
        expand({"study": "width_convergence", "fixed": {"n": 8, "widths": [16, 32], "seeds": 2},
                "product": {"depth": [1, 2]}}),
        expand({"study": toy, "product": {"value": [0, 1, 2]}}),
    ]  # fmt: skip


def metrics(directory) -> pd.DataFrame:
    runs = store.load(directory).set_index("hash").sort_index()
    return runs.filter(like="metrics.")


def test_local_dask_and_inline_store_identical_metrics(toy, tmp_path):
    with LocalExecutor(2) as local:
        for plan in sweep(toy):
            run_sweep(plan, tmp_path / "local", local)
    with DaskExecutor(local_workers=2) as dask:
        for plan in sweep(toy):
            run_sweep(plan, tmp_path / "dask", dask)
    for plan in sweep(toy):
        run_sweep(plan, tmp_path / "inline", InlineExecutor())
    reference = metrics(tmp_path / "local")
    assert len(reference) == 5
    # Exact equality: the same float operations on the same thread count in a fresh process.
    pd.testing.assert_frame_equal(metrics(tmp_path / "dask"), reference, check_exact=True)
    pd.testing.assert_frame_equal(metrics(tmp_path / "inline"), reference, check_exact=True)
    draws = reference["metrics.draw"].dropna()
    assert draws.nunique() == 3  # seeded per config, not one stream per worker
