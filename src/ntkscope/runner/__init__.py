"""Runs at scale: sweep files, executors (local processes, Dask), the result store.

The runner knows nothing of NTKs: only studies' configs, tasks and results.
"""

from ntkscope.runner.executors import DaskExecutor, Executor, InlineExecutor, LocalExecutor
from ntkscope.runner.plan import Plan, plan, within_memory
from ntkscope.runner.run import Interrupted, Summary, run_sweep
from ntkscope.runner.store import Status, Store, load, load_arrays, load_table
from ntkscope.runner.sweep import Sweep, config_hash, expand, load_sweep, parse_assignments

__all__ = [
    # sweeps
    "Sweep",
    "config_hash",
    "expand",
    "load_sweep",
    "parse_assignments",
    # plans
    "Plan",
    "plan",
    "within_memory",
    # executors
    "DaskExecutor",
    "Executor",
    "InlineExecutor",
    "LocalExecutor",
    # running and storing
    "Interrupted",
    "Status",
    "Store",
    "Summary",
    "load",
    "load_arrays",
    "load_table",
    "run_sweep",
]
