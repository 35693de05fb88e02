"""Data sets: built-in synthetic tasks and scikit-learn's digits, no downloads."""

from ntkscope.data.builtin import Dataset, DatasetName, load, targets

__all__ = ["Dataset", "DatasetName", "load", "targets"]
