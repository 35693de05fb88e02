"""Reading a results directory: ``ntkscope.store.load(dir)`` returns a DataFrame of every run.

The store itself (layout, atomicity) is described in `ntkscope.runner.store`.
"""

from ntkscope.runner.store import Status, load, load_arrays, load_table

__all__ = ["Status", "load", "load_arrays", "load_table"]
