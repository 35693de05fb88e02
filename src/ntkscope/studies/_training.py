"""What the studies that train a network on a task share: the data splits, the network
family, its output scale, and a learning rate relative to the stability limit of gradient
descent.

MSE training and kernel regression use the targets of `ntkscope.data.targets` (one-hot for
C > 2 classes, ±1 for two, the real targets of a regression task such as single_index).

The trained network is the centered, output-scaled ``α (f(x; θ) − f(x; θ₀))`` of Chizat,
Oyallon & Bach, "On lazy training in differentiable programming" (2019)
(`ntkscope.models.output_scaled`): its eNTK is α² times f's, so gradient descent at
learning rate lr/α² moves f's parameters as lr would at α = 1, while the function moves
1/α times as far per unit of parameter motion; small α is the feature-learning regime, large
α (or large width in NTK parameterization at fixed α) the lazy, kernel regime.

`splits`, `inputs`, `bare_network` and `infinite` read only the fields they name, which
`ntkscope.studies.scaling_laws`' Config shares (its ``model`` under the name ``architecture``).
"""

from __future__ import annotations

import math
from enum import StrEnum

import torch
from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from ntkscope import models
from ntkscope.data import Dataset, SyntheticName, TaskName, load_task
from ntkscope.models import ActivationName, Parameterization
from ntkscope.studies._base import StudyConfig
from ntkscope.studies._cost import Net, cnn, cnn_pools, mlp, task_shape
from ntkscope.studies._kernel_cluster import IN_PROCESS, InProcess, OnCluster


class Architecture(StrEnum):
    """Network family.

    MLP: `ntkscope.models.mlp` on flat inputs.
    CNN: `ntkscope.models.cnn` (Myrtle-style: conv blocks, average pooling, global average
        pooling, dense readout) on the inputs as images; a 2×2 pooling after every block but
        the last while the map's side stays even (`pool_after`).
    """

    MLP = "mlp"
    CNN = "cnn"


class TrainingConfig(StudyConfig):
    """Fields shared by the studies that train a network on a task."""

    task: TaskName = TaskName.DIGITS
    """Task of `ntkscope.data.load_task` (digits, digits_parity, mnist_parity, cifar10_binary
    with ``root``, the synthetic single_index and sparse_parity, ...); the test set is fixed,
    train/val drawn by ``seed``."""
    d: PositiveInt = 64
    """Input dimension of the synthetic tasks (ignored by the others)."""
    degrees: tuple[PositiveInt, ...] = (1, 2)
    """Hermite degrees of the single-index link (`ntkscope.data.synthetic`)."""
    parity_k: PositiveInt = 2
    """Order k of the sparse parity."""
    image_size: PositiveInt | None = None
    """Side of the images after average pooling (e.g. MNIST 28 → 14); None: native."""
    root: str | None = None
    """Folder or file of the user's data for the file-based tasks (cifar10_binary, ...)."""
    n_train: PositiveInt = 256
    """Training examples."""
    n_val: PositiveInt = 128
    """Validation examples (ridge choice, early stopping)."""
    n_test: PositiveInt = 256
    """Test examples."""
    architecture: Architecture = Architecture.MLP
    """Network family ("mlp" or "cnn")."""
    depth: PositiveInt = 2
    """Hidden layers of the MLP, or conv blocks of the CNN."""
    activation: ActivationName = ActivationName.RELU
    """Activation φ."""
    parameterization: Parameterization = Parameterization.NTK
    """"ntk" or "standard" (docs/conventions.md)."""
    sigma_w: NonNegativeFloat = math.sqrt(2.0)
    """Weight standard deviation σ_w."""
    sigma_b: NonNegativeFloat = 0.0
    """Bias standard deviation σ_b."""
    lr_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    """Learning rate as a fraction of gradient descent's stability limit 2 n_train / λ_max(K)
    on ½‖f(X) − Y‖² / n_train, K a reference NTK on the training inputs (each study says which)."""
    center: bool = True
    """Train the centered network α (f − f_0) (`ntkscope.models.output_scaled`): it starts at
    zero output, like kernel regression, so that its wide limit is kernel regression with the
    NTK rather than that plus the random f_0's residual."""
    output_scale: PositiveFloat = 1.0
    """α of the centered network α (f − f_0) (module docstring): 1 keeps f's eNTK; small α
    is the feature-learning regime. The learning rate follows the α²-scaled kernel, i.e.
    lr/α² for a fixed ``lr_fraction``. Needs ``center``."""
    batch_size: PositiveInt | None = None
    """Examples per SGD step; None: full-batch gradient descent."""
    seed: NonNegativeInt = 0
    """Seed of the data draw, the initialization and the mini-batch order."""

    @model_validator(mode="after")
    def _scale_needs_center(self) -> TrainingConfig:
        if self.output_scale != 1.0 and not self.center:
            raise ValueError("output_scale: scaling α (f − f_0) needs center = True")
        return self


def synthetic_options(
    task: TaskName, d: int, degrees: tuple[int, ...], parity_k: int
) -> dict[str, object]:
    """The keyword options of `ntkscope.data.load_task` for ``task``: ``d``, ``degrees`` and
    ``k`` for the synthetic tasks, none for the others."""
    if task.value in {s.value for s in SyntheticName}:
        return {"d": d, "degrees": degrees, "k": parity_k}
    return {}


def splits(
    config: TrainingConfig, n_train: int | None = None, seed: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[Dataset, Dataset, Dataset]:  # fmt: skip
    """Train, validation and test sets of `ntkscope.data.load_task` (``n_train`` and ``seed``
    default to the config's)."""
    task = load_task(
        config.task, n_train=n_train or config.n_train, n_val=config.n_val,
        n_test=config.n_test, seed=config.seed if seed is None else seed, dtype=dtype,
        image_size=config.image_size, root=config.root,
        **synthetic_options(config.task, config.d, config.degrees, config.parity_k),
    )  # fmt: skip
    return task.train, task.val, task.test


def inputs(config: TrainingConfig, data: Dataset) -> torch.Tensor:
    """The inputs as the network takes them: flat for the MLP, images for the CNN."""
    return data.as_images() if config.architecture is Architecture.CNN else data.x


def network(config: TrainingConfig, data: Dataset, width: int, d_out: int, seed: int):
    """The (float32) network of ``config`` with hidden width ``width``, for ``data``'s inputs:
    α (f − f_0) with α = ``config.output_scale`` if ``config.center``, else f."""
    model = bare_network(config, data, width, d_out, seed)
    return models.output_scaled(model, config.output_scale) if config.center else model


def bare_network(config: TrainingConfig, data: Dataset, width: int, d_out: int, seed: int):
    """The network f of ``config``, neither centered nor scaled."""
    common = dict(
        activation=config.activation, parameterization=config.parameterization,
        sigma_w=config.sigma_w, sigma_b=config.sigma_b, seed=seed,
    )  # fmt: skip
    if config.architecture is Architecture.CNN:
        channels, height, width_ = data.image_shape
        pools = pool_after(math.gcd(height, width_), config.depth)
        return models.cnn(channels, width, config.depth, d_out, pool_after=pools, **common)
    return models.mlp(data.x.shape[1], width, config.depth, d_out, **common)


def pool_after(side: int, depth: int) -> list[int]:
    """The CNN blocks followed by a 2×2 pooling on images of height and width multiples of
    ``side``: every block but the last, as long as the map stays divisible by 2 (a 14×14
    MNIST image: one pooling, to 7×7; `ntkscope.studies._cost.cnn_pools`)."""
    return list(range(cnn_pools(side, depth)))


def relative_learning_rate(kernel_train: torch.Tensor, scale: float) -> float:
    """``scale · N / λ_max(K)`` for the (N, N) kernel K on the N training inputs.

    Gradient descent on ½‖f(X) − Y‖² / N with the linearized network, whose kernel is K, is
    stable for learning rates below 2 N / λ_max(K), i.e. for ``scale`` < 2.
    """
    return scale * len(kernel_train) / float(torch.linalg.eigvalsh(kernel_train.double())[-1])


def learning_rate(config: TrainingConfig, kernel_train: torch.Tensor) -> float:
    """``lr_fraction · 2 N / λ_max(K(X, X))``: a fixed fraction of the stability limit, K the
    NTK of the trained network (α² times f's for the output-scaled α (f − f_0))."""
    return relative_learning_rate(kernel_train, config.lr_fraction * 2)


def infinite(
    config: TrainingConfig,
    x1: torch.Tensor,
    x2: torch.Tensor,
    kernels: InProcess | OnCluster = IN_PROCESS,
) -> tuple:
    """(NNGP, NTK) of the infinitely wide network of ``config`` between inputs as the network
    takes them (`infinite_kernels` for the MLP, `infinite_cnn_kernels` for the CNN), computed
    by ``kernels`` (`ntkscope.studies._kernel_cluster`)."""
    common = dict(
        depth=config.depth, activation=config.activation, sigma_w=config.sigma_w,
        sigma_b=config.sigma_b,
    )  # fmt: skip
    if config.architecture is Architecture.CNN:
        pools = pool_after(math.gcd(*x1.shape[-2:]), config.depth)
        return kernels.infinite("infinite_cnn", x1, x2, pool_after=pools, **common)
    return kernels.infinite("infinite", x1, x2, **common)


def network_size(config: TrainingConfig, width: int) -> Net:
    """``config``'s network at ``width`` as the cost model sees it (`ntkscope.studies._cost`):
    ten outputs for the ten-class tasks, one for the binary and synthetic ones."""
    channels, side, d_in = task_shape(config.task, config.d, config.image_size)
    outputs = 10 if config.task.value in ("digits", "mnist") else 1
    if config.architecture is Architecture.CNN:
        return cnn(channels, side, width, config.depth, outputs)
    return mlp(d_in, width, config.depth, outputs)
