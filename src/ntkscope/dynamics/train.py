"""A training loop that records how far training departs from its NTK description.

`train` runs SGD (with momentum) or Adam on an MSE or cross-entropy loss, full batch or in
seeded mini-batches, or full-batch Gauss–Newton steps on MSE, and calls `Recorder` objects
as it goes (see `ntkscope.dynamics.recorders`). MSE is ``½‖f(X) − Y‖² / N`` as in
CONVENTIONS.md, so plain full-batch SGD on it is the gradient descent that `predict_mse`
describes.

A run stops early, keeping every record taken so far, on Ctrl-C (``stopped="interrupted"``)
and when the loss becomes NaN/inf or exceeds ``DIVERGENCE_FACTOR`` times its initial value
or a parameter is NaN/inf when a record is due (``stopped="diverged"``); the model is left as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ntkscope import _batch
from ntkscope._batch import Batch
from ntkscope._checks import (
    choice,
    finite_batch,
    nonnegative_real,
    positive_int,
    positive_real,
    tensor,
)
from ntkscope.data import Dataset
from ntkscope.dynamics.gauss_newton import GaussNewton

DIVERGENCE_FACTOR = 1e6
"""A batch loss this many times the initial full-set loss counts as divergence."""


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
            cross-entropy.
        labels: int64 class labels (N,) for accuracy, or None for regression.
    """

    x: Batch
    targets: torch.Tensor
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
        loss, optimizer, lr, momentum: the run's settings.
        damping: λ of Gauss–Newton (None for the other optimizers).
        steps: total number of optimizer steps planned.
        full_batch: whether every step sees the whole training set.
        step: optimizer steps taken so far (0 before training).
        batch: the (inputs, targets) of the step just taken, None at step 0.
    """

    model: nn.Module
    train: Split
    test: Split | None
    loss: Loss
    optimizer: Optimizer
    lr: float
    momentum: float
    steps: int
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
    """

    every: int = 1

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
    """The outcome of `train`.

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


def _n_outputs(model: nn.Module, data: object, like: torch.Tensor) -> int:
    """O of the model on one training example; errors say that the data do not fit it."""
    x = data.x if isinstance(data, Dataset) else data[0] if isinstance(data, tuple | list) else None
    if not isinstance(x, torch.Tensor | tuple | dict) or not _batch.tensors(x):
        raise TypeError("data: expected a ntkscope Dataset or an (x, y) pair of tensors")
    x = _batch.to(x, like.device, like.dtype)
    try:
        with torch.no_grad():
            out = _batch.forward(model, _batch.take(x, slice(0, 1)))
    except Exception as error:  # the model's own message, with the argument named
        shapes = [tuple(t.shape) for t in _batch.tensors(x)]
        raise ValueError(
            f"data: the model cannot be applied to inputs of shape "
            f"{shapes[0] if len(shapes) == 1 else shapes}: {error}"
        ) from error
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise TypeError(
            f"model: expected outputs of shape (N, O), got {tuple(getattr(out, 'shape', ()))}"
        )
    return out.shape[1]


def _batches(n: int, batch_size: int | None, generator: torch.Generator):
    """Index tensors of successive steps: the whole set, or seeded epochs of mini-batches."""
    while True:
        if batch_size is None or batch_size >= n:
            yield None
            continue
        order = torch.randperm(n, generator=generator)
        yield from order.split(batch_size)


def _schedule(n: int, batch_size: int | None, steps: int | None, epochs: int | None) -> int:
    if (steps is None) == (epochs is None):
        raise ValueError("steps, epochs: give exactly one of them")
    if steps is not None:
        return positive_int(steps, "steps")
    per_epoch = 1 if batch_size is None else math.ceil(n / batch_size)
    return positive_int(epochs, "epochs") * per_epoch


def _full_loss(state: TrainState) -> float:
    with torch.no_grad():
        outputs = _batch.forward(state.model, state.train.x)
        return float(state.objective(outputs, state.train.targets))


def train(
    model: nn.Module,
    data: Dataset | tuple[torch.Tensor, torch.Tensor],
    *,
    loss: str | Loss = "mse",
    optimizer: str | Optimizer = "sgd",
    lr: float,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    momentum: float = 0.0,
    damping: float | None = None,
    recorders: Sequence[Recorder] = (),
    test: Dataset | tuple[torch.Tensor, torch.Tensor] | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Trajectory:
    """Train ``model`` in place and record its trajectory.

    Args:
        model: any module mapping (N, ...) inputs to (N, O) outputs.
        data: training set, a `Dataset` or an (x, y) pair; int y are class labels.
        loss: "mse" or "cross_entropy" (see `Loss`).
        optimizer: "sgd", "adam" or "gauss_newton" (see `Optimizer`).
        lr: learning rate > 0.
        steps, epochs: length of the run, exactly one of them.
        batch_size: examples per step; None for full batch.
        momentum: heavy-ball momentum of SGD, in [0, 1).
        damping: λ > 0 of Gauss–Newton, which needs it (and MSE, full batch); None otherwise.
        recorders: `Recorder` objects called at step 0, after every step, and every
            ``recorder.every`` steps.
        test: optional test set, like ``data``.
        seed: seed of the mini-batch order.
        progress: optional callback ``(step, steps)``.

    Returns:
        The `Trajectory` (records so far if interrupted or diverged).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    like = next((p for p in model.parameters() if p.requires_grad), None)
    if like is None:
        raise ValueError("model: has no trainable parameters")
    loss, optimizer = choice(Loss, loss, "loss"), choice(Optimizer, optimizer, "optimizer")
    if nonnegative_real(lr, "lr") == 0:
        raise ValueError("lr: expected a positive learning rate, got 0")
    if not 0 <= nonnegative_real(momentum, "momentum") < 1:
        raise ValueError(f"momentum: expected a value in [0, 1), got {momentum}")
    n_out = _n_outputs(model, data, like)
    train_split = as_split(data, loss, n_out, "data", like)
    test_split = None if test is None else as_split(test, loss, n_out, "test", like)
    if batch_size is not None:
        batch_size = positive_int(batch_size, "batch_size")
    total = _schedule(len(train_split), batch_size, steps, epochs)
    full_batch = batch_size is None or batch_size >= len(train_split)
    _check_gauss_newton(optimizer, loss, full_batch, momentum, damping)
    state = TrainState(
        model, train_split, test_split, loss, optimizer, float(lr), float(momentum), total,
        full_batch, damping,
    )  # fmt: skip
    trajectory = Trajectory(model, recorders=list(recorders))
    _run(state, trajectory, batch_size, seed, progress)
    return trajectory


def _check_gauss_newton(optimizer, loss, full_batch, momentum, damping) -> None:
    """Gauss–Newton: MSE, full batch, no momentum, damping > 0; damping only for it."""
    if optimizer is not Optimizer.GAUSS_NEWTON:
        if damping is not None:
            raise ValueError(f"damping: only for optimizer='gauss_newton', not {optimizer.value!r}")
        return
    if loss is not Loss.MSE or not full_batch or momentum != 0:
        raise ValueError("optimizer: 'gauss_newton' needs loss='mse', full batches and no momentum")
    if damping is None:
        raise ValueError("damping: expected > 0 for optimizer='gauss_newton', got None")
    positive_real(damping, "damping")


def _due(recorder: Recorder, state: TrainState) -> bool:
    return state.step % recorder.every == 0 or state.step == state.steps


def _record(state: TrainState, trajectory: Trajectory, first: bool = False) -> None:
    row: dict[str, float] = {"step": state.step}
    for recorder in trajectory.recorders:
        if first:
            row.update(recorder.start(state))
        elif _due(recorder, state):
            row.update(recorder.record(state))
    if len(row) > 1:
        trajectory.rows.append(row)


def _run(state, trajectory, batch_size, seed, progress) -> None:
    model, split = state.model, state.train
    params = [p for p in model.parameters() if p.requires_grad]
    step_optimizer = state.make_optimizer(model)
    batches = _batches(len(split), batch_size, torch.Generator().manual_seed(seed))
    try:
        initial = _full_loss(state)
        if not math.isfinite(initial):
            raise ValueError(f"model: the loss at initialization is {initial} (non-finite outputs)")
        limit = DIVERGENCE_FACTOR * max(initial, 1e-12)
        _record(state, trajectory, first=True)
        for step in range(1, state.steps + 1):
            index = next(batches)
            xb, yb = (split.x, split.targets) if index is None else (
                _batch.take(split.x, index), split.targets[index])  # fmt: skip
            step_optimizer.zero_grad(set_to_none=True)
            value = state.objective(_batch.forward(model, xb), yb)
            if not math.isfinite(value.item()) or value.item() > limit:
                trajectory.stopped = "diverged"
                return
            value.backward()
            step_optimizer.step()
            trajectory.losses.append(value.item())
            state.step, state.batch = step, (xb, yb)
            for recorder in trajectory.recorders:
                recorder.after_step(state)
            if any(_due(r, state) for r in trajectory.recorders):
                if not all(torch.isfinite(p).all() for p in params):  # never record NaNs
                    trajectory.stopped = "diverged"
                    return
                _record(state, trajectory)
            if progress is not None:
                progress(step, state.steps)
    except KeyboardInterrupt:
        trajectory.stopped = "interrupted"
