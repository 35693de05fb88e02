"""Calibrate the studies' cost models (`ntkscope.studies._cost.RATES`) on stored runs.

For every study with finished runs in the result stores given, prints the rate that makes
the cost model's total estimate equal the total measured time (counted FLOPs / the
measured seconds less the fixed cost of eNTK calls and steps; negative when the fixed part
alone exceeds the measured time), and each run's estimate / measured ratio at the current rate, so that a rate can
be copied into ``RATES`` and the spread of the ratios says how far one run's estimate may be
off. Runs must have been made with one torch thread (the runner's default), on the machine
the rates are for::

    ntkscope reproduce --preset quick --out results-quick --workers 1
    python benchmarks/calibrate_costs.py results-quick [more stores ...]
"""

from __future__ import annotations

import math
import sys

import pandas as pd

from ntkscope import studies
from ntkscope.runner import load
from ntkscope.studies._cost import RATES


def _estimates(directory: str) -> pd.DataFrame:
    """One row per finished run: study, measured seconds, estimated seconds at RATES."""
    runs = load(directory)
    runs = runs[runs["status"] == "done"]
    rows = []
    for study_name, group in runs.groupby("study"):
        study = studies.get(study_name)
        fields = [c for c in group.columns if c.startswith("config.")]
        for _, run in group.iterrows():
            values = {c.removeprefix("config."): run[c] for c in fields}
            values = {k: v for k, v in values.items() if k in study.config.model_fields}
            config = study.config.model_validate(_plain(values))
            rows.append((study_name, run["seconds"], *_parts(study, config)))
    return pd.DataFrame(rows, columns=["study", "measured", "estimated", "fixed"])


def _parts(study, config) -> tuple[float, float]:
    """The estimate of a run, and its fixed part (eNTK calls, steps: the estimate at an
    infinite rate)."""
    estimated, rate = study.cost(config).seconds, RATES[study.name]
    RATES[study.name] = math.inf
    try:
        return estimated, study.cost(config).seconds
    finally:
        RATES[study.name] = rate


def _plain(values: dict) -> dict:
    """Store values back to config values: NaN (a field of another study) dropped, lists
    (tuples in the config) as lists."""
    return {k: v for k, v in values.items() if not (isinstance(v, float) and v != v)}


def main(directories: list[str]) -> None:
    """Print per study: runs, measured and estimated seconds, the fitted rate, the spread."""
    frame = pd.concat([_estimates(d) for d in directories])
    for name, group in frame.groupby("study"):
        ratio = group.estimated / group.measured
        flops = RATES[name] * (group.estimated.sum() - group.fixed.sum())
        fitted = flops / max(group.measured.sum() - group.fixed.sum(), 1e-9)
        print(
            f"{name:18s} runs {len(group):3d}  measured {group.measured.sum():8.1f} s  "
            f"estimated {group.estimated.sum():8.1f} s  fitted rate {fitted:.3g} FLOP/s  "
            f"per-run estimate/measured {ratio.min():.2f}-{ratio.max():.2f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
