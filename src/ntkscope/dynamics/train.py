"""A training loop that records how far training departs from its NTK description.

`train` runs SGD (with momentum) or Adam on an MSE or cross-entropy loss, full batch or in
seeded mini-batches, or full-batch Gauss–Newton steps on MSE, and calls `Recorder` objects
as it goes (see `ntkscope.dynamics.recorders`) through a `ntkscope.Monitor`, the object that
any other training loop drives too. MSE is ``½‖f(X) − Y‖² / N`` as in
docs/conventions.md, so plain full-batch SGD on it is the gradient descent that `predict_mse`
describes.

A run stops early, keeping every record taken so far, on Ctrl-C (``stopped="interrupted"``)
and when the loss becomes NaN/inf or exceeds ``DIVERGENCE_FACTOR`` times its initial value
or a parameter is NaN/inf when a record is due (``stopped="diverged"``); the model is left as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ntkscope import _batch
from ntkscope._checks import choice, learning_rate, nonnegative_real, positive_int, positive_real
from ntkscope.data import Dataset
from ntkscope.dynamics.monitor import Monitor
from ntkscope.dynamics.state import (
    Loss,
    Optimizer,
    Recorder,
    Split,
    TrainState,
    Trajectory,
    as_split,
    objective,
)

__all__ = [
    "DIVERGENCE_FACTOR",
    "Loss",
    "Optimizer",
    "Recorder",
    "Split",
    "TrainState",
    "Trajectory",
    "as_split",
    "objective",
    "train",
]

DIVERGENCE_FACTOR = 1e6
"""A batch loss this many times the initial full-set loss counts as divergence."""


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
    learning_rate(lr)
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
    _check_sparse_gradients(model, optimizer)
    state = TrainState(
        model, train_split, test_split, loss, optimizer, float(lr), float(momentum), total,
        full_batch, damping,
    )  # fmt: skip
    monitor = Monitor.of(state, recorders)
    _run(state, monitor, batch_size, seed, progress)
    return monitor.trajectory


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


def _check_sparse_gradients(model: nn.Module, optimizer: Optimizer) -> None:
    """Refuse Adam for a model with a sparse embedding (``nn.Embedding(sparse=True)``):
    torch's Adam takes dense gradients only (SGD takes both; Gauss–Newton forms none)."""
    if optimizer is not Optimizer.ADAM:
        return
    for name, module in model.named_modules():
        sparse = isinstance(module, nn.Embedding | nn.EmbeddingBag) and module.sparse
        if sparse and any(p.requires_grad for p in module.parameters()):
            raise ValueError(
                f"optimizer: 'adam' takes dense gradients, and {name or '(root)'!r} is an "
                f"{type(module).__name__} with sparse=True; use optimizer='sgd' or build the "
                "embedding with sparse=False"
            )


def _run(state: TrainState, monitor: Monitor, batch_size, seed, progress) -> None:
    model, split, trajectory = state.model, state.train, monitor.trajectory
    step_optimizer = state.make_optimizer(model)
    batches = _batches(len(split), batch_size, torch.Generator().manual_seed(seed))
    try:
        initial = _full_loss(state)
        if not math.isfinite(initial):
            raise ValueError(f"model: the loss at initialization is {initial} (non-finite outputs)")
        limit = DIVERGENCE_FACTOR * max(initial, 1e-12)
        monitor.start()
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
            monitor.step(step, loss=value.item(), batch=(xb, yb))
            if monitor.stopped is not None:
                return
            if progress is not None:
                progress(step, state.steps)
    except KeyboardInterrupt:
        trajectory.stopped = "interrupted"
