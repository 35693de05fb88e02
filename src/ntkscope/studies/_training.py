"""What the studies that train a network on a classification task share: the data splits,
the network family, and a learning rate relative to the stability limit of gradient descent.

MSE training and kernel regression use the targets of `ntkscope.data.targets` (one-hot for
C > 2 classes, ±1 for two).
"""

from __future__ import annotations

import math
from enum import StrEnum

import torch
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt

from ntkscope import models
from ntkscope.data import Dataset, TaskName, load_task
from ntkscope.kernels import infinite_cnn_kernels, infinite_kernels
from ntkscope.models import ActivationName, Parameterization
from ntkscope.studies._base import StudyConfig


class Architecture(StrEnum):
    """Network family.

    MLP: `ntkscope.models.mlp` on flat inputs.
    CNN: `ntkscope.models.cnn` (Myrtle-style: conv blocks, average pooling, global average
        pooling, dense readout) on the inputs as images.
    """

    MLP = "mlp"
    CNN = "cnn"


class TrainingConfig(StudyConfig):
    """Fields shared by the studies that train a network on a classification task."""

    task: TaskName = TaskName.DIGITS
    """Classification task of `ntkscope.data.load_task` (digits, digits_parity, mnist_parity,
    cifar10_binary with ``root``, ...); the test set is fixed, train/val drawn by ``seed``."""
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
    """"ntk" or "standard" (CONVENTIONS.md)."""
    sigma_w: NonNegativeFloat = math.sqrt(2.0)
    """Weight standard deviation σ_w."""
    sigma_b: NonNegativeFloat = 0.0
    """Bias standard deviation σ_b."""
    lr_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    """Learning rate as a fraction of gradient descent's stability limit 2 n_train / λ_max(K)
    on ½‖f(X) − Y‖² / n_train, K a reference NTK on the training inputs (each study says which)."""
    center: bool = True
    """Train the centered network f − f_0 (`ntkscope.models.output_scaled` with α = 1): it
    starts at zero output, like kernel regression, so that its wide limit is kernel
    regression with the NTK rather than that plus the random f_0's residual. Same eNTK."""
    batch_size: PositiveInt | None = None
    """Examples per SGD step; None: full-batch gradient descent."""
    seed: NonNegativeInt = 0
    """Seed of the data draw, the initialization and the mini-batch order."""


def splits(config: TrainingConfig) -> tuple[Dataset, Dataset, Dataset]:
    """Train, validation and test sets (float64) of `ntkscope.data.load_task`."""
    task = load_task(
        config.task, n_train=config.n_train, n_val=config.n_val, n_test=config.n_test,
        seed=config.seed, dtype=torch.float64, image_size=config.image_size, root=config.root,
    )  # fmt: skip
    if task.train.n_classes is None:
        raise ValueError(f"task: expected a classification task, got {config.task.value!r}")
    return task.train, task.val, task.test


def inputs(config: TrainingConfig, data: Dataset) -> torch.Tensor:
    """The inputs as the network takes them: flat for the MLP, images for the CNN."""
    return data.as_images() if config.architecture is Architecture.CNN else data.x


def network(config: TrainingConfig, data: Dataset, width: int, d_out: int, seed: int):
    """The (float32) network of ``config`` with hidden width ``width``, for ``data``'s inputs,
    centered if ``config.center``."""
    model = _bare_network(config, data, width, d_out, seed)
    return models.output_scaled(model, 1.0) if config.center else model


def _bare_network(config: TrainingConfig, data: Dataset, width: int, d_out: int, seed: int):
    common = dict(
        activation=config.activation, parameterization=config.parameterization,
        sigma_w=config.sigma_w, sigma_b=config.sigma_b, seed=seed,
    )  # fmt: skip
    if config.architecture is Architecture.CNN:
        channels = data.image_shape[0]
        return models.cnn(channels, width, config.depth, d_out, **common)
    return models.mlp(data.x.shape[1], width, config.depth, d_out, **common)


def learning_rate(config: TrainingConfig, kernel_train: torch.Tensor) -> float:
    """``lr_fraction · 2 N / λ_max(K(X, X))``: a fixed fraction of the stability limit."""
    top = float(torch.linalg.eigvalsh(kernel_train.double())[-1])
    return config.lr_fraction * 2 * len(kernel_train) / top


def infinite(config: TrainingConfig, x1: torch.Tensor, x2: torch.Tensor) -> tuple:
    """(NNGP, NTK) of the infinitely wide network of ``config`` between inputs as the network
    takes them (`infinite_kernels` for the MLP, `infinite_cnn_kernels` for the CNN)."""
    common = dict(
        depth=config.depth, activation=config.activation, sigma_w=config.sigma_w,
        sigma_b=config.sigma_b,
    )  # fmt: skip
    if config.architecture is Architecture.CNN:
        return infinite_cnn_kernels(x1, x2, **common)
    return infinite_kernels(x1, x2, **common)
