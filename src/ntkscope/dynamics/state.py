"""What a training run is made of, whichever loop drives it: the loss, the optimizer, the
data splits, the `TrainState` a `Recorder` sees and the `Trajectory` of records.

`ntkscope.train` (ntkscope's own loop) and `ntkscope.Monitor` (any other loop) share them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ntkscope import _batch
from ntkscope._batch import Batch
from ntkscope._checks import finite_batch, tensor
from ntkscope.data import Dataset
from ntkscope.dynamics.gauss_newton import GaussNewton

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class Loss(StrEnum):
    """Training objective.

    MSE: ``½‖f(X) − Y‖² / N``; class labels become one-hot targets.
    CROSS_ENTROPY: mean softmax cross-entropy on class labels.
    """

    MSE = "mse"
    CROSS_ENTROPY = "cross_entropy"


class Optimizer(StrEnum):
    """Optimizer of `train`.

    SGD: (stochastic) gradient descent, with optional heavy-ball ``momentum``; the NTK
        predictions (`PredictionRecorder`) describe it.
    ADAM: Adam (Kingma & Ba 2015) with torch's defaults apart from ``lr``; adaptive, so no
        kernel gradient flow describes it.
    GAUSS_NEWTON: damped Gauss–Newton steps −η Jᵀ(JJᵀ + λI)⁻¹ r through the eNTK
        (`ntkscope.dynamics.GaussNewton`); MSE, full batch, needs ``damping`` λ > 0;
        `ntkscope.dynamics.predict_gauss_newton` is its kernel-regime prediction.
    """

    SGD = "sgd"
    ADAM = "adam"
    GAUSS_NEWTON = "gauss_newton"


@dataclass(frozen=True)
class Split:
    """Inputs, training targets and (for classes) labels of one data split.

    Attributes:
        x: inputs, a batch of N examples (`ntkscope.empirical_ntk`: a tensor, a tuple or a
            mapping of tensors), floating-point tensors in the model's dtype and device.
        targets: what the loss compares outputs with: (N, O) reals for MSE, (N,) labels for
            cross-entropy; None for the probe of a `ntkscope.Monitor` given no targets.
        labels: int64 class labels (N,) for accuracy, or None for regression.
    """

    x: Batch
    targets: torch.Tensor | None
    labels: torch.Tensor | None

    def __len__(self) -> int:
        return _batch.size(self.x)


def objective(loss: Loss, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss of a batch (see `Loss`)."""
    if loss is Loss.MSE:
        return 0.5 * (outputs - targets).pow(2).sum() / outputs.shape[0]
    return F.cross_entropy(outputs, targets)


@dataclass
class TrainState:
    """What a recorder sees: the run's settings and where it is.

    Attributes:
        model: the network being trained (do not modify it).
        train, test: the data splits (test may be None).
        loss, optimizer, lr, momentum: the run's settings (optimizer and lr None when the
            loop driving a `ntkscope.Monitor` did not give them).
        damping: λ of Gauss–Newton (None for the other optimizers).
        steps: total number of optimizer steps planned (None: not known in advance).
        full_batch: whether every step sees the whole training set.
        step: optimizer steps taken so far (0 before training).
        batch: the (inputs, targets) of the step just taken, None at step 0.
    """

    model: nn.Module
    train: Split
    test: Split | None
    loss: Loss
    optimizer: Optimizer | None
    lr: float | None
    momentum: float
    steps: int | None
    full_batch: bool
    damping: float | None = None
    step: int = 0
    batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """A fresh optimizer of this run's kind and settings over ``model``'s trainable
        parameters (Gauss–Newton: on the whole training set)."""
        params = [p for p in model.parameters() if p.requires_grad]
        if self.optimizer is Optimizer.GAUSS_NEWTON:
            return GaussNewton(
                model, self.train.x, self.train.targets, damping=self.damping, lr=self.lr
            )
        if self.optimizer is Optimizer.ADAM:
            return torch.optim.Adam(params, lr=self.lr)
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)

    def objective(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """This run's loss of ``outputs`` against ``targets``."""
        return objective(self.loss, outputs, targets)


class Recorder:
    """Base class of the recorders: implement `record`; `start` and `after_step` are hooks.

    Attributes:
        every: record every this many steps (and always at step 0 and at the last step).
        needs: the settings of the run, beyond the model and the probe inputs, that the
            recorder uses: names of `ntkscope.Monitor` arguments ("targets", "optimizer",
            "lr", "steps") and "batch" (each step's inputs and targets, for a recorder that
            trains a model alongside). `ntkscope.train` always has them; a `Monitor` refuses
            a recorder whose needs its loop did not give.
    """

    every: int = 1
    needs: tuple[str, ...] = ()

    def start(self, state: TrainState) -> dict[str, float]:
        """Called once before training (step 0); by default records."""
        return self.record(state)

    def after_step(self, state: TrainState) -> None:
        """Called after every optimizer step (e.g. to train a model alongside)."""

    def record(self, state: TrainState) -> dict[str, float]:
        """Named scalars at ``state.step``."""
        raise NotImplementedError


@dataclass
class Trajectory:
    """The outcome of `train` (and the records of a `ntkscope.Monitor`).

    ``frame()`` (or ``to_frame()``) gives the records as pandas, ``plot()`` their figures;
    in Jupyter it renders as a table and figures (``_repr_html_``; these import the report
    layer when called, a departure from "lower never imports upper" at call time only).

    Attributes:
        model: the trained network (the object passed in).
        rows: one dict per recorded step, ``{"step": t, name: value, ...}``, in step order.
        losses: the loss of each step's batch, before the step (length = steps taken).
        recorders: the recorders, which keep their own arrays (kernels, spectra).
        stopped: None if every step ran, else "interrupted" or "diverged".
    """

    model: nn.Module
    rows: list[dict[str, float]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    recorders: list[Recorder] = field(default_factory=list)
    stopped: str | None = None

    def series(self, name: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one recorded quantity, at the steps where it was recorded."""
        pairs = [(int(r["step"]), r[name]) for r in self.rows if name in r]
        if not pairs:
            known = sorted({k for r in self.rows for k in r} - {"step"})
            raise KeyError(f"name: {name!r} was not recorded; recorded: {known}")
        steps, values = zip(*pairs, strict=True)
        return list(steps), list(values)

    def last(self, name: str) -> float:
        """The latest recorded value of ``name``."""
        return self.series(name)[1][-1]

    def frame(self) -> pd.DataFrame:
        """The records as a pandas DataFrame indexed by step (one column per quantity)."""
        return pd.DataFrame(self.rows).groupby("step").first()

    to_frame = frame

    def plot(self) -> dict[str, Figure]:
        """The recorded curves as matplotlib figures (`ntkscope.report.notebook`)."""
        from ntkscope.report.notebook import trajectory_figures  # the report layer, on use

        return trajectory_figures(self)

    def _repr_html_(self) -> str:
        """Jupyter: the run's state, its last records and its figures."""
        from ntkscope.report.notebook import trajectory_html

        return trajectory_html(self)


def as_split(data: object, loss: Loss, n_outputs: int, argument: str, like: torch.Tensor) -> Split:
    """A `Dataset` or an ``(x, y)`` pair as a `Split` for ``loss``, in ``like``'s dtype/device.

    Class labels (int y) become one-hot (N, O) targets for MSE; real y (N,) or (N, O) are
    regression targets (MSE only).
    """
    if isinstance(data, Dataset):
        x, y = data.x, data.y
    elif isinstance(data, tuple | list) and len(data) == 2:
        x, y = data
    else:
        raise TypeError(f"{argument}: expected a ntkscope Dataset or an (x, y) pair")
    x = _batch.like(x, f"{argument} x", like)
    y = tensor(y, f"{argument} y").to(like.device)
    if y.shape[0] != _batch.size(x):
        raise ValueError(f"{argument}: x has {_batch.size(x)} examples but y has {y.shape[0]}")
    if not y.is_floating_point():
        if y.dim() != 1 or (y < 0).any() or (y >= n_outputs).any():
            raise ValueError(
                f"{argument}: class labels must be (N,) in 0..{n_outputs - 1} for a model "
                f"with {n_outputs} outputs"
            )
        targets = y if loss is Loss.CROSS_ENTROPY else F.one_hot(y, n_outputs).to(like.dtype)
        return Split(x, targets, y)
    if loss is Loss.CROSS_ENTROPY:
        raise ValueError(f"{argument}: cross_entropy needs int64 class labels, got {y.dtype}")
    targets = finite_batch(y.reshape(len(y), -1).to(like.dtype), f"{argument} y")
    if targets.shape[1] != n_outputs:
        raise ValueError(
            f"{argument}: y has {targets.shape[1]} columns but the model has {n_outputs} outputs"
        )
    return Split(x, targets, None)
