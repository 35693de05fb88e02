"""Data sets and tasks: built-in data (no downloads) and loaders for users' own files."""

from ntkscope.data.builtin import Dataset, DatasetName, load, targets
from ntkscope.data.files import load_cifar10, load_idx, load_npz, load_svhn
from ntkscope.data.synthetic import SyntheticName, synthetic_task
from ntkscope.data.tasks import Task, TaskName, load_task

__all__ = [
    # built-in data sets
    "Dataset",
    "DatasetName",
    "load",
    "targets",
    # tasks with fixed splits
    "Task",
    "TaskName",
    "load_task",
    # synthetic teachers
    "SyntheticName",
    "synthetic_task",
    # the user's files
    "load_npz",
    "load_idx",
    "load_cifar10",
    "load_svhn",
]
