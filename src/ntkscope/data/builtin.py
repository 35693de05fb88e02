"""Built-in data sets, generated or read from installed packages: nothing is downloaded.

``digits``: scikit-learn's handwritten digits (1,797 images of 8×8 pixels, 10 classes).
Pixels are divided by 16 (to [0, 1]) and then each image is standardized over its own 64
pixels (mean 0, variance 1), so every input has ``‖x‖² = d = 64``. Per-image
standardization puts all inputs on one sphere, where the NTK is a function of the angle
alone, and makes ``Σ¹(x, x) = σ_w² + σ_b²`` in docs/conventions.md's recursion whatever the
stroke thickness; a global standardization would leave the norms, and so the kernel's
diagonal, varying from image to image.

``gaussian``: inputs ``x ~ N(0, I_d)`` and real targets ``y = w·x`` of a linear teacher
``w`` drawn uniformly from the unit sphere, so that ``y ~ N(0, 1)``. The teacher comes
from a fixed generator (it depends on d, not on ``seed``), so sets drawn with different
seeds are samples of one task, e.g. a training and a test set.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from enum import StrEnum

import torch

from ntkscope._checks import choice, floating_dtype, integer, positive_int
from ntkscope.data._preprocess import standardize


class DatasetName(StrEnum):
    """The built-in data sets.

    DIGITS: scikit-learn's 8×8 handwritten digits, 1,797 images, labels 0..9, each image
        standardized (see the module docstring).
    GAUSSIAN: synthetic ``N(0, I_d)`` inputs with real targets from a fixed linear teacher;
        as many examples as asked for.
    """

    DIGITS = "digits"
    GAUSSIAN = "gaussian"


_TEACHER_SEED = 20_240_601
"""Seed of the gaussian task's teacher: one task per d, whatever the sample's seed."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Inputs, targets and what a model needs to know about them.

    Attributes:
        x: inputs (N, d), flat; see `as_images` for (N, C, H, W).
        y: int64 class labels (N,) when ``n_classes`` is set, real targets (N,) otherwise.
        name: the data set's name.
        n_classes: number of classes, or None for regression targets.
        image_shape: (C, H, W) of an input seen as an image, or None if it is not one.
    """

    x: torch.Tensor
    y: torch.Tensor
    name: str
    n_classes: int | None
    image_shape: tuple[int, int, int] | None

    def __len__(self) -> int:
        return self.x.shape[0]

    def as_images(self) -> torch.Tensor:
        """The inputs as images (N, C, H, W), for CNNs.

        Raises:
            ValueError: if the data set has no image shape.
        """
        if self.image_shape is None:
            raise ValueError(f"data: {self.name!r} has no image shape; its inputs are vectors")
        return self.x.reshape(len(self), *self.image_shape)


def targets(data: Dataset, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Real targets (N, O) for MSE training and kernel regression.

    Two classes: one column of ±1 (class 1 is +1), so the sign of an output is the
    prediction; C > 2 classes: one-hot (N, C); regression: the targets as one column.
    `ntkscope.metrics.classification_error` reads outputs in the same convention.
    """
    if data.n_classes is None:
        return data.y.to(dtype).reshape(len(data), 1)
    if data.n_classes == 2:
        return (2.0 * data.y.to(dtype) - 1.0).reshape(len(data), 1)
    return torch.nn.functional.one_hot(data.y, data.n_classes).to(dtype)


@functools.cache
def _digits_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    """Standardized float64 images (1797, 64) and labels, read once per process."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = standardize(torch.as_tensor(bunch.data, dtype=torch.float64) / 16.0, "digits")
    return x, torch.as_tensor(bunch.target, dtype=torch.int64)


def _digits(d: int | None) -> Dataset:
    if d is not None:
        raise ValueError("d: only the 'gaussian' data set takes an input dimension")
    x, y = _digits_arrays()
    return Dataset(x, y, DatasetName.DIGITS.value, 10, (1, 8, 8))


def _gaussian(n: int, d: int | None, seed: int) -> Dataset:
    d = 16 if d is None else positive_int(d, "d")
    teacher = torch.randn(
        d, generator=torch.Generator().manual_seed(_TEACHER_SEED), dtype=torch.float64
    )
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return Dataset(x, x @ (teacher / teacher.norm()), DatasetName.GAUSSIAN.value, None, None)


def _subset(data: Dataset, n: int, seed: int) -> Dataset:
    if n > len(data):
        raise ValueError(f"n: {data.name!r} has {len(data)} examples, asked for {n}")
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    return replace(data, x=data.x[index], y=data.y[index])


def load(
    name: str | DatasetName,
    n: int | None = None,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    d: int | None = None,
) -> Dataset:
    """A built-in data set (see `DatasetName` and the module docstring for the preprocessing).

    Args:
        name: "digits" or "gaussian".
        n: number of examples. For digits, a random subset drawn by ``seed`` (the first
            ``n`` of one seeded permutation, so a smaller subset is a prefix of a larger one
            with the same seed); None keeps all 1,797 in their original order. For gaussian,
            the sample size (None: 1,024).
        seed: seed of the subset (digits) or of the sample (gaussian).
        dtype: floating dtype of the inputs, and of gaussian's targets.
        d: input dimension of gaussian (default 16); digits takes none.

    Returns:
        The `Dataset`, on the CPU.

    Raises:
        ValueError: for an unknown name, ``n <= 0``, ``n`` larger than the set, or ``d``
            given to digits. TypeError: for a non-int ``n``, ``seed`` or ``d``, or a
            non-floating ``dtype``.
    """
    kind = choice(DatasetName, name, "name")
    if n is not None:
        n = positive_int(n, "n")
    integer(seed, "seed")
    floating_dtype(dtype, "dtype")
    if kind is DatasetName.DIGITS:
        data = _digits(d)
        data = data if n is None else _subset(data, n, seed)
    else:
        data = _gaussian(1024 if n is None else n, d, seed)
    # copies: the cached digits arrays must not be shared with the caller
    y = data.y.clone() if data.n_classes is not None else data.y.to(dtype, copy=True)
    return replace(data, x=data.x.to(dtype, copy=True), y=y)
