"""`Monitor`: ntkscope's recorders driven by any training loop.

A monitor holds the recorders of `ntkscope.dynamics.recorders` (kernel change and velocity,
parameter change, the linearized network, ...) and the `TrainState` they see. The loop that
trains the model calls it::

    monitor = ns.Monitor(model, probe_x, every=50)
    monitor.start()                           # step 0: Θ̂_0, θ_0
    for step, (x, y) in enumerate(batches, 1):
        ...                                   # the loop's own forward, backward, step
        monitor.step(step, loss=loss.item())  # records when a recorder is due
    monitor.finish()                          # records the last step if it was not
    monitor.frame(), monitor.verdict()

`ntkscope.train` drives the same object, so the records of a loop are those of
`ntkscope.train` for the same model, data and optimizer steps. Recorders measure with the
model in eval mode (dropout off, BatchNorm on its running statistics; the eNTK needs a
deterministic function of each example) and restore every module's mode afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import nn

from ntkscope import _batch
from ntkscope._checks import choice, nonnegative_real, positive_int
from ntkscope.dynamics.recorders import KernelRecorder, ParameterRecorder
from ntkscope.dynamics.state import (
    Loss,
    Optimizer,
    Recorder,
    Split,
    TrainState,
    Trajectory,
    as_split,
)

if TYPE_CHECKING:
    from ntkscope.diagnosis import Diagnosis, Verdict


@contextlib.contextmanager
def measuring(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode inside the block; every module's own mode restored after."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.train(training)


def _trainable(model: object) -> torch.Tensor:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    like = next((p for p in model.parameters() if p.requires_grad), None)
    if like is None:
        raise ValueError("model: has no trainable parameters")
    return like


class Monitor:
    """Records how far a training run departs from its NTK description, in any loop.

    Args:
        model: the network being trained (any ``nn.Module``, e.g. a ``LightningModule`` or
            a Hugging Face model).
        probe: the fixed probe inputs: a batch (tensor, tuple or mapping of tensors such as
            ``input_ids`` and ``attention_mask``) of P examples; the kernel recorders use it
            and, for the recorders that evaluate losses, it is the training set they see.
        recorders: the `Recorder` objects; None: ``KernelRecorder(probe, every)`` and
            ``ParameterRecorder(every)``.
        every: steps between records of the default recorders.
        targets: the probe's targets (class labels (P,) or reals (P, O)), needed by
            `LossRecorder` and `LinearizedRecorder` and used for the kernel alignment.
        loss: the loop's loss, "mse" or "cross_entropy" (`ntkscope.dynamics.Loss`).
        optimizer, lr, momentum: the loop's optimizer (`ntkscope.dynamics.Optimizer`), which
            `LinearizedRecorder` repeats on the linearized network.
        steps: the number of optimizer steps planned, if known (the last is always recorded).
        loggers: objects of `ntkscope.log` (`to_tensorboard`, `to_wandb`) that receive every
            record as it is taken.

    Attributes:
        trajectory: the `Trajectory` of records (rows, batch losses, recorders, ``stopped``).
        state: the `TrainState` the recorders see.
    """

    def __init__(
        self,
        model: nn.Module,
        probe: _batch.Batch,
        recorders: Sequence[Recorder] | None = None,
        *,
        every: int = 50,
        targets: torch.Tensor | None = None,
        loss: str | Loss = "mse",
        optimizer: str | Optimizer | None = None,
        lr: float | None = None,
        momentum: float = 0.0,
        steps: int | None = None,
        loggers: Sequence[Any] = (),
    ) -> None:
        like = _trainable(model)
        loss = choice(Loss, loss, "loss")
        probe = _batch.like(probe, "probe", like)
        self._n_out = None
        if targets is None:
            split = Split(probe, None, None)
        else:
            with measuring(model), torch.no_grad():
                out = _batch.forward(model, _batch.take(probe, slice(0, 1)))
            self._n_out = out.flatten(1).shape[1]
            split = as_split((probe, targets), loss, self._n_out, "targets", like)
        optimizer = None if optimizer is None else choice(Optimizer, optimizer, "optimizer")
        lr = None if lr is None else nonnegative_real(lr, "lr")
        steps = None if steps is None else positive_int(steps, "steps")
        every = positive_int(every, "every")
        if recorders is None:
            recorders = [KernelRecorder(probe, every, probe_y=targets), ParameterRecorder(every)]
        state = TrainState(
            model,
            split,
            None,
            loss,
            optimizer,
            lr,
            nonnegative_real(momentum, "momentum"),
            steps,
            full_batch=False,
        )
        given = {"targets": targets, "optimizer": optimizer, "lr": lr, "steps": steps}
        self._setup(state, recorders, loggers, {k for k, v in given.items() if v is not None})

    @classmethod
    def of(cls, state: TrainState, recorders: Sequence[Recorder]) -> Monitor:
        """The monitor of `ntkscope.train`'s own loop, which knows every setting."""
        monitor = cls.__new__(cls)
        monitor._setup(state, recorders, (), None)
        return monitor

    def _setup(self, state, recorders, loggers, given: set[str] | None) -> None:
        recorders = list(recorders)
        for recorder in recorders:
            if not isinstance(recorder, Recorder):
                raise TypeError(f"recorders: expected Recorder objects, got {recorder!r}")
            known = given | {"batch"} if given is not None else set(recorder.needs)
            lacking = [n for n in recorder.needs if n not in known]
            if lacking:
                raise ValueError(
                    f"recorders: {type(recorder).__name__} needs {', '.join(lacking)}, which "
                    "this Monitor was not given (the whole training set: only ntkscope.train)"
                )
        self.state, self.loggers, self._given = state, list(loggers), given
        self.trajectory = Trajectory(state.model, recorders=recorders)
        self._params = [p for p in state.model.parameters() if p.requires_grad]
        self._started = False

    @property
    def recorders(self) -> list[Recorder]:
        """The recorders, which keep their own arrays (kernels, predictions)."""
        return self.trajectory.recorders

    @property
    def stopped(self) -> str | None:
        """None while every record is finite; "diverged" once a parameter was NaN/inf."""
        return self.trajectory.stopped

    def start(self) -> dict[str, float]:
        """Record step 0 (before any optimizer step): each recorder's ``start``.

        Returns:
            The row recorded, ``{"step": 0, name: value, ...}``.
        """
        if self._started:
            raise RuntimeError("Monitor.start: already started; use a new Monitor per run")
        self._started = True
        return self._record(first=True)

    def step(
        self,
        step: int,
        loss: float | None = None,
        batch: tuple[_batch.Batch, torch.Tensor] | None = None,
    ) -> dict[str, float]:
        """After optimizer step ``step`` (1, 2, ...): every recorder's ``after_step``, then a
        record if one is due (``step`` a multiple of a recorder's ``every``, or the last).

        Args:
            step: optimizer steps taken so far.
            loss: the loss of the step's batch before the step, kept in
                ``trajectory.losses``; optional.
            batch: the step's (inputs, targets), for recorders that train a model alongside
                (`LinearizedRecorder`).

        Returns:
            The row recorded (empty when none was due, or when a parameter is NaN/inf: then
            ``stopped`` is "diverged" and nothing more is recorded).
        """
        if not self._started:
            raise RuntimeError("Monitor.step: call start() before the first optimizer step")
        if self.stopped is not None:
            return {}
        if loss is not None:
            self.trajectory.losses.append(float(loss))
        self.state.step, self.state.batch = step, self._step_batch(batch)
        for recorder in self.recorders:
            recorder.after_step(self.state)
        if not any(self._due(r) for r in self.recorders):
            return {}
        return self._record()

    def _step_batch(self, batch):
        """The step's batch as the recorders use it: inputs and the loss's targets."""
        if self._given is None:  # ntkscope.train: already its inputs and targets
            return batch
        if not any("batch" in r.needs for r in self.recorders):
            return None
        if batch is None:
            wanted = [type(r).__name__ for r in self.recorders if "batch" in r.needs]
            raise ValueError(
                f"batch: {', '.join(wanted)} trains a model alongside; pass the step's "
                "(inputs, targets) as batch="
            )
        split = as_split(batch, self.state.loss, self._n_out, "batch", self._params[0])
        return split.x, split.targets

    def finish(self) -> dict[str, float]:
        """Record the current step with every recorder unless it was just recorded (the end
        of a loop that did not say how many steps it would take)."""
        rows = self.trajectory.rows
        if not self._started or self.stopped is not None:
            return {}
        if rows and rows[-1]["step"] == self.state.step:
            return {}
        self.state.steps = self.state.step
        return self._record()

    def _due(self, recorder: Recorder) -> bool:
        state = self.state
        return state.step % recorder.every == 0 or state.step == state.steps

    def _record(self, first: bool = False) -> dict[str, float]:
        if not first and not all(torch.isfinite(p).all() for p in self._params):
            self.trajectory.stopped = "diverged"  # never record NaNs
            return {}
        row: dict[str, float] = {"step": self.state.step}
        with measuring(self.state.model):
            for recorder in self.recorders:
                if first:
                    row.update(recorder.start(self.state))
                elif self._due(recorder):
                    row.update(recorder.record(self.state))
        if len(row) > 1:
            self.trajectory.rows.append(row)
            self._log(row)
        return row

    def _log(self, row: dict[str, float]) -> None:
        step = int(row["step"])
        for logger in self.loggers:
            logger.scalars(step, row)
            for recorder in self.recorders:
                if isinstance(recorder, KernelRecorder) and recorder.latest_step == step:
                    logger.spectrum(step, recorder.latest)

    def frame(self) -> pd.DataFrame:
        """The records as a pandas DataFrame indexed by step (as `Trajectory.frame`)."""
        return self.trajectory.frame()

    def diagnosis(self, settings: dict[str, object] | None = None) -> Diagnosis:
        """The records judged as `ntkscope.diagnose` judges its run (`Diagnosis`).

        One run has no seed-to-seed dispersion, so the "init dispersion" criterion is not
        measured, and the verdict is at best "incomplete" unless the kernel moved (see
        `ntkscope.diagnosis.verdict`). Needs a `KernelRecorder`.
        """
        from ntkscope.diagnosis.run import monitored  # the diagnosis layer sits above

        return monitored(self.trajectory, settings or self._settings())

    def verdict(self) -> Verdict:
        """The `Verdict` of `diagnosis` on the records so far."""
        return self.diagnosis().verdict

    def _settings(self) -> dict[str, object]:
        state = self.state
        return {
            "loop": "ntkscope.Monitor",
            "probe": _batch.size(state.train.x),
            "loss": state.loss.value,
            "optimizer": None if state.optimizer is None else state.optimizer.value,
            "lr": state.lr,
            "steps": state.step,
        }
