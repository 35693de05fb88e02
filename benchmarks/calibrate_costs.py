"""Calibrate the studies' cost models (`ntkscope.studies._cost.CALIBRATION`) on stored runs.

For every study with finished runs in the result stores given, prints the factor that makes
the cost model's total estimate equal the total measured time, and each run's estimate /
measured ratio at the current factor, so that the factor can be copied into
``CALIBRATION`` and the spread of the ratios says how far one run's estimate may be off.
Runs must have been made with one torch thread (the runner's default), on the machine the
factors are for::

    ntkscope reproduce --preset quick --out results-quick --workers 1
    python benchmarks/calibrate_costs.py results-quick [more stores ...]
"""

from __future__ import annotations

import sys

import pandas as pd

from ntkscope import studies
from ntkscope.runner import load
from ntkscope.studies._cost import CALIBRATION


def _estimates(directory: str) -> pd.DataFrame:
    """One row per finished run: study, measured seconds, estimated seconds."""
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
            rows.append((study_name, run["seconds"], study.cost(config).seconds))
    return pd.DataFrame(rows, columns=["study", "measured", "estimated"])


def _plain(values: dict) -> dict:
    """Store values back to config values: NaN (a field of another study) dropped, lists
    (tuples in the config) as lists."""
    return {k: v for k, v in values.items() if not (isinstance(v, float) and v != v)}


def main(directories: list[str]) -> None:
    """Print per study: runs, measured and estimated seconds, the fitted factor, the spread."""
    frame = pd.concat([_estimates(d) for d in directories])
    for name, group in frame.groupby("study"):
        ratio = group.estimated / group.measured
        fitted = CALIBRATION[name] * group.measured.sum() / group.estimated.sum()
        print(
            f"{name:18s} runs {len(group):3d}  measured {group.measured.sum():8.1f} s  "
            f"estimated {group.estimated.sum():8.1f} s  factor {fitted:.3g}  "
            f"per-run estimate/measured {ratio.min():.2f}-{ratio.max():.2f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
