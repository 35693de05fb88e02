"""Data sets: built-in synthetic tasks and scikit-learn's digits, no downloads."""

from ntkscope.data.builtin import Dataset, DatasetName, load, targets
from ntkscope.data.synthetic import SyntheticName, synthetic_task

__all__ = ["Dataset", "DatasetName", "SyntheticName", "load", "synthetic_task", "targets"]
