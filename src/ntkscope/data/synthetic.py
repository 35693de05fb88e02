"""Synthetic teachers on which trained networks are known to beat every fixed kernel.

``single_index``: Gaussian inputs ``x ~ N(0, I_d)`` and real targets

    y = g(w·x),   g(z) = Σ_{k ∈ degrees} He_k(z) / √(k! · |degrees|),

with He_k the probabilists' Hermite polynomials and ``w`` a fixed unit vector. Since
``E[He_j(z) He_k(z)] = k! δ_jk`` for ``z ~ N(0, 1)``, ``E[y] = 0`` (for degrees ≥ 1) and
``Var[y] = 1`` exactly, so a test MSE of 1 is the loss of predicting 0. A rotation-invariant
kernel (the NNGP and infinite NTK of an MLP, on these inputs) spreads its degree-k part over
about ``d^k / k!`` eigenfunctions and needs ``n ≳ d^k`` samples to fit it, while a trained
network that learns the direction ``w`` needs far fewer (Ba et al. 2022, "High-dimensional
asymptotics of feature learning"; Damian, Lee & Soltanolkotabi 2022, "Neural networks can
learn representations with gradient descent"). The default ``degrees = (1, 2)`` gives the
network a linear part to find ``w`` by, and leaves a kernel half of the variance (the
quadratic part) that it cannot fit below ``n ≈ d²/2``.

``sparse_parity``: inputs uniform on the hypercube ``{±1}^d`` and binary labels of the
``k``-sparse parity ``χ(x) = x_1 x_2 ⋯ x_k`` (class 1 where χ = +1, class 0 where χ = −1):
a degree-k component only, which rotation-invariant kernels need ``n ≳ d^k`` samples for
(Abbe, Boix-Adserà & Misiakiewicz 2022; Barak et al. 2022).

The teacher ``w`` depends on ``d`` only (a fixed generator), never on ``seed``. The test set
is drawn by a fixed seed as well, so every seed is scored on the same examples; the training
and validation sets are drawn by ``seed`` in blocks of ``BLOCK`` examples, so that a smaller
``n_train`` is a prefix of a larger one. Splits never share an example: Gaussian draws are
distinct with probability one, and the hypercube is partitioned into test, validation and
training points by a fixed hash of the point.
"""

from __future__ import annotations

import math
from dataclasses import replace
from enum import StrEnum

import torch

from ntkscope._checks import choice, floating_dtype, integer, nonnegative_int, positive_int
from ntkscope.data.builtin import Dataset

TEACHER_SEED = 20_240_611
"""Seed of the teachers (and of the hypercube's split hash): one task per d."""

TEST_SEED = 20_240_612
"""Seed of the synthetic test sets, whatever the caller's seed."""

BLOCK = 256
"""Examples drawn per block; a training set is a prefix of the blocks of its seed."""

_SPLITS = ("train", "val", "test")
_HASH_SLOTS = {"test": (0,), "val": (1,), "train": tuple(range(2, 10))}
"""Hypercube split: the point's hash mod 10 (a tenth for test and for validation)."""


class SyntheticName(StrEnum):
    """The synthetic tasks.

    SINGLE_INDEX: Gaussian inputs, real targets ``g(w·x)`` of Hermite degrees ``degrees``.
    SPARSE_PARITY: hypercube inputs, binary labels of the parity of the first ``k`` bits.
    """

    SINGLE_INDEX = "single_index"
    SPARSE_PARITY = "sparse_parity"


def hermite(z: torch.Tensor, k: int) -> torch.Tensor:
    """Probabilists' Hermite polynomial He_k(z) by ``He_{j+1} = z He_j − j He_{j−1}``."""
    previous, current = torch.ones_like(z), z
    if k == 0:
        return previous
    for j in range(1, k):
        previous, current = current, z * current - j * previous
    return current


def teacher_direction(d: int) -> torch.Tensor:
    """The single-index teacher's unit vector w (d,), float64, fixed for each d."""
    generator = torch.Generator().manual_seed(TEACHER_SEED + d)
    w = torch.randn(d, generator=generator, dtype=torch.float64)
    return w / w.norm()


def single_index_link(z: torch.Tensor, degrees: tuple[int, ...]) -> torch.Tensor:
    """``g(z) = Σ_k He_k(z) / √(k! · |degrees|)``: mean 0, variance 1 under N(0, 1)."""
    terms = [hermite(z, k) / math.sqrt(math.factorial(k)) for k in degrees]
    return torch.stack(terms).sum(dim=0) / math.sqrt(len(degrees))


def _generator(seed: int, split: str) -> torch.Generator:
    offset = {"train": 0, "val": 1_000_003}.get(split)
    return torch.Generator().manual_seed(TEST_SEED if offset is None else seed + offset)


def _gaussian_inputs(n: int, d: int, seed: int, split: str) -> torch.Tensor:
    generator = _generator(seed, split)
    blocks = [torch.randn(BLOCK, d, generator=generator, dtype=torch.float64)
              for _ in range(math.ceil(n / BLOCK))]  # fmt: skip
    return torch.cat(blocks)[:n] if blocks else torch.zeros(0, d, dtype=torch.float64)


def _points_in_slots(multipliers: torch.Tensor, slots: tuple[int, ...]) -> int:
    """How many of the 2^d points b ∈ {0, 1}^d have ``b·multipliers mod 10`` in ``slots``,
    counted exactly by the subset sums of the multipliers modulo 10."""
    counts = [1] + [0] * 9  # counts[r]: points of the first j coordinates with hash r
    for m in multipliers.tolist():
        counts = [counts[r] + counts[(r - m) % 10] for r in range(10)]
    return sum(counts[r] for r in slots)


def _hypercube_inputs(n: int, d: int, seed: int, split: str) -> torch.Tensor:
    """Uniform ±1 points whose hash falls in ``split``'s slots, drawn block by block.

    Raises:
        ValueError: naming ``d`` when ``n > 0`` and no point of {±1}^d falls in the slots.
    """
    multipliers = torch.randint(
        1, 2**31, (d,), generator=torch.Generator().manual_seed(TEACHER_SEED + d)
    )
    if n > 0 and _points_in_slots(multipliers, _HASH_SLOTS[split]) == 0:
        raise ValueError(
            f"d: none of the {2**d} points of {{±1}}^{d} falls in the {split} split "
            f"(n_{split} = {n}); sparse_parity needs a larger d"
        )
    slots = torch.tensor(_HASH_SLOTS[split])
    generator, kept, count = _generator(seed, split), [], 0
    while count < n:
        block = torch.randint(0, 2, (BLOCK, d), generator=generator)
        block = block[torch.isin((block * multipliers).sum(dim=1) % 10, slots)]
        kept.append(block)
        count += len(block)
    points = torch.cat(kept)[:n] if kept else torch.zeros(0, d, dtype=torch.int64)
    return 2.0 * points.to(torch.float64) - 1.0


def _single_index(n: int, d: int, degrees: tuple[int, ...], seed: int, split: str) -> Dataset:
    x = _gaussian_inputs(n, d, seed, split)
    y = single_index_link(x @ teacher_direction(d), degrees)
    return Dataset(x, y, SyntheticName.SINGLE_INDEX.value, None, None)


def _sparse_parity(n: int, d: int, k: int, seed: int, split: str) -> Dataset:
    x = _hypercube_inputs(n, d, seed, split)
    labels = (x[:, :k].prod(dim=1) > 0).long()
    return Dataset(x, labels, SyntheticName.SPARSE_PARITY.value, 2, None)


def _check_options(kind: SyntheticName, d: int, degrees: tuple[int, ...], k: int) -> None:
    positive_int(d, "d")
    if kind is SyntheticName.SINGLE_INDEX:
        if not degrees or any(isinstance(j, bool) or not isinstance(j, int) or j < 1
                              for j in degrees) or len(set(degrees)) != len(degrees):  # fmt: skip
            raise ValueError(f"degrees: expected distinct Hermite degrees ≥ 1, got {degrees!r}")
    elif not 1 <= positive_int(k, "k") <= d:
        raise ValueError(f"k: expected a parity order between 1 and d = {d}, got {k}")


def synthetic_task(
    name: str | SyntheticName,
    *,
    n_train: int,
    n_val: int,
    n_test: int,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    d: int = 64,
    degrees: tuple[int, ...] = (1, 2),
    k: int = 2,
) -> tuple[Dataset, Dataset, Dataset]:
    """Train, validation and test sets of a synthetic task (see the module docstring).

    Args:
        name: "single_index" or "sparse_parity".
        n_train, n_val, n_test: sizes of the three splits (n_val may be 0).
        seed: seed of the training and validation draws (not of the teacher or test set).
        dtype: floating dtype of the inputs (and of single_index's targets).
        d: input dimension.
        degrees: Hermite degrees of the single-index link g (ignored by sparse_parity).
        k: order of the sparse parity (ignored by single_index).

    Returns:
        (train, val, test) `Dataset` objects on the CPU.

    Raises:
        ValueError, TypeError: naming the argument (unknown name, sizes, d, degrees, k).
    """
    kind = choice(SyntheticName, name, "name")
    integer(seed, "seed")
    floating_dtype(dtype, "dtype")
    degrees = tuple(degrees)
    _check_options(kind, d, degrees, k)
    sizes = {"train": positive_int(n_train, "n_train"), "val": nonnegative_int(n_val, "n_val"),
             "test": positive_int(n_test, "n_test")}  # fmt: skip
    draws = []
    for split in _SPLITS:
        if kind is SyntheticName.SINGLE_INDEX:
            data = _single_index(sizes[split], d, degrees, seed, split)
        else:
            data = _sparse_parity(sizes[split], d, k, seed, split)
        y = data.y if data.n_classes is not None else data.y.to(dtype)
        draws.append(replace(data, x=data.x.to(dtype), y=y))
    return draws[0], draws[1], draws[2]
