"""Loggers: ntkscope's records in TensorBoard or Weights & Biases.

`to_tensorboard` (a ``torch.utils.tensorboard.SummaryWriter``) and `to_wandb` (a
``wandb`` run) give a `Logger` that writes, under the tag prefix ``PREFIX``:

- every scalar a recorder records, at its step (``ntk/kernel_change``, ``ntk/param_change``);
- the eNTK spectrum on the probe set as a histogram (``ntk/spectrum``) at every kernel record;
- with `Logger.report`, the figures of the diagnosis report (``ntk/figures/<name>``), the
  spectra at initialization and at the end, and the verdict as text (``ntk/verdict``).

A `ntkscope.Monitor` given ``loggers=[...]`` writes each record as it is taken; the
`Trajectory` of `ntkscope.train` is written afterwards with `Logger.trajectory`::

    logger = ns.log.to_tensorboard(SummaryWriter("runs/mlp"))
    trajectory = ns.train(model, data, lr=0.5, steps=500, recorders=[ns.KernelRecorder()])
    logger.trajectory(trajectory)

Neither ``tensorboard`` nor ``wandb`` is imported by ntkscope: the writer or run passed in
is used as it is (W&B's ``Histogram`` and ``Image`` types are imported by `to_wandb`).
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ntkscope import metrics
from ntkscope.diagnosis import Diagnosis, describe
from ntkscope.dynamics import KernelRecorder, Trajectory

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PREFIX = "ntk/"
"""The prefix of every tag ntkscope writes."""


def _scalar(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class Logger:
    """Writes records to one backend; subclasses implement the four writes.

    Only `scalar`, `histogram`, `figure` and `text` touch the backend; the rest compose them.
    Steps must be written in increasing order (W&B drops earlier steps).
    """

    def scalar(self, tag: str, value: float, step: int) -> None:
        """One scalar."""
        raise NotImplementedError

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        """A histogram of ``values``."""
        raise NotImplementedError

    def figure(self, tag: str, figure: Figure, step: int) -> None:
        """A matplotlib figure, as an image."""
        raise NotImplementedError

    def text(self, tag: str, text: str, step: int) -> None:
        """A piece of text."""
        raise NotImplementedError

    def scalars(self, step: int, row: dict[str, float]) -> None:
        """Every real number of a record row (``{"step": t, name: value}``), as
        ``ntk/<name>``."""
        for name, value in row.items():
            if name != "step" and _scalar(value):
                self.scalar(PREFIX + name, float(value), step)

    def spectrum(self, step: int, kernel: torch.Tensor, name: str = "spectrum") -> None:
        """The eigenvalues of an eNTK (scalar or full) as the histogram ``ntk/<name>``."""
        values = metrics.spectrum(kernel).numpy()
        self.histogram(PREFIX + name, values, step)

    def trajectory(self, trajectory: Trajectory) -> None:
        """Every row of a finished run, with the spectra its kernel recorders kept (at
        initialization, and at their latest record)."""
        kernels = [r for r in trajectory.recorders if isinstance(r, KernelRecorder)]
        for row in trajectory.rows:
            step = int(row["step"])
            self.scalars(step, row)
            for recorder in kernels:
                if step == 0 and recorder.initial is not None:
                    self.spectrum(step, recorder.initial)
                elif step == recorder.latest_step and recorder.latest is not None:
                    self.spectrum(step, recorder.latest)

    def report(self, diagnosis: Diagnosis, step: int | None = None) -> None:
        """The diagnosis report at ``step`` (default: the run's last recorded step): its
        figures, the spectra at initialization and at the end, the verdict as text."""
        from ntkscope.report.diagnosis import FIGURES  # matplotlib, when used

        rows = diagnosis.trajectory.rows
        step = (int(rows[-1]["step"]) if rows else 0) if step is None else step
        for name, values in diagnosis.spectra.items():
            self.histogram(f"{PREFIX}spectrum_{name}", values.numpy(), step)
        for name, draw in FIGURES.items():
            self.figure(f"{PREFIX}figures/{name}", draw(diagnosis), step)
        self.text(PREFIX + "verdict", verdict_text(diagnosis), step)


def verdict_text(diagnosis: Diagnosis) -> str:
    """The verdict and its criteria, one line each (Markdown)."""
    lines = [f"**{describe(diagnosis.verdict, diagnosis.criteria)}**", ""]
    for c in diagnosis.criteria:
        value = "not measured" if math.isnan(c.value) else f"{c.value:.4g}"
        lines.append(f"- {c.name}: {value} ({c.status}; kernel regime below {c.lazy_below:g})")
    lines += [f"- note: {note}" for note in diagnosis.notes]
    return "\n".join(lines)


class _TensorBoard(Logger):
    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        self.writer.add_histogram(tag, values, step)

    def figure(self, tag: str, figure: Figure, step: int) -> None:
        self.writer.add_figure(tag, figure, step, close=False)

    def text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)


class _WandB(Logger):
    def __init__(self, run: Any, wandb: Any) -> None:
        self.run, self.wandb = run, wandb

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.run.log({tag: value}, step=step)

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        self.run.log({tag: self.wandb.Histogram(values)}, step=step)

    def figure(self, tag: str, figure: Figure, step: int) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot state

        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        self.run.log({tag: self.wandb.Image(np.asarray(canvas.buffer_rgba()))}, step=step)

    def text(self, tag: str, text: str, step: int) -> None:
        self.run.summary[tag] = text


def to_tensorboard(writer: Any) -> Logger:
    """A `Logger` writing through a TensorBoard ``SummaryWriter`` (``torch.utils.tensorboard``
    or tensorboardX; anything with ``add_scalar``, ``add_histogram``, ``add_figure`` and
    ``add_text``)."""
    missing = [m for m in ("add_scalar", "add_histogram", "add_figure", "add_text")
               if not callable(getattr(writer, m, None))]  # fmt: skip
    if missing:
        raise TypeError(
            f"writer: expected a TensorBoard SummaryWriter, got {type(writer).__name__} "
            f"without {', '.join(missing)}"
        )
    return _TensorBoard(writer)


def to_wandb(run: Any) -> Logger:
    """A `Logger` writing to a W&B run (``wandb.init(...)``); the verdict goes to the run's
    summary."""
    if not callable(getattr(run, "log", None)) or not hasattr(run, "summary"):
        raise TypeError(f"run: expected a wandb run (wandb.init()), got {type(run).__name__}")
    import wandb  # an optional dependency, the caller's

    return _WandB(run, wandb)
