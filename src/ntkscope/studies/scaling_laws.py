"""Data-scaling laws: a trained network against its kernels (Vyas, Bansal & Nakkiran 2022).

"Limitations of the NTK for understanding generalization in deep learning" (arXiv:2206.10012)
finds that (a) a finite network can have a much better data-scaling exponent than its
empirical NTK at initialization and than its infinite-width NTK, and (b) the after-kernel
K_m, the eNTK of the network after training on m samples, improves with m when used for
kernel regression on n samples, but does not catch up with the network.

For each training-set size n and seed the study trains the network (SGD on the MSE, full
batch; early stopping on the validation split or training to convergence) and fits, on the
same n examples, kernel regression ``K(X*, X)(K(X, X) + λI)⁻¹Y`` with the eNTK at
initialization (trace mode), the infinite NTK and NNGP, and every after-kernel K_m (the eNTK
of the network trained at n = m with the same seed), both ridgeless (``<kernel>_ridgeless``)
and with λ chosen on the validation split (``<kernel>``). Kernel regression runs in float64
with a cached Cholesky factorization per ridge, kernel and n, reused by every target
(`ntkscope.dynamics.KernelRidge`). Test loss is
the mean squared error ``‖f − Y‖² / (N·O)`` against `ntkscope.data.targets`; the data-scaling
exponent α of ``log loss = c − α log n`` comes with a bootstrap 95% interval over seeds
(`ntkscope.metrics.fit_power_law`).

The network is the centered, output-scaled MLP ``α_out (f(x; θ) − f(x; θ₀))`` of Chizat,
Oyallon & Bach (2019), trained with learning rate ``lr / α_out²``: it starts from the zero
function like the kernel predictors, and a small α_out puts it in the feature-learning
regime (α_out → ∞ is lazy training, where it would match its eNTK at initialization).

Presets: ``quick`` runs MLPs on the single-index task (where feature learning is known to
beat rotation-invariant kernels), digits and MNIST parity (7×7) at n ≤ 560; ``full`` runs
width-1024 MLPs on the synthetic tasks at n up to 5,000 and MLP and Myrtle-style CNN (3
blocks) on MNIST parity (14×14) up to n = 3,000 (the infinite CNN kernel costs ~5 ms per
pair of 14×14 images on a CPU core: ~10⁷ pairs, for a GPU or a cluster).
Tasks that read the user's files (CIFAR-10 binary, SVHN parity) take ``root``, which no
preset can know; write a sweep file (as ``examples/scaling_laws_cifar.toml``) and run it
with ``ntkscope sweep``::

    study = "scaling_laws"
    [fixed]
    task = "cifar10_binary"          # or "svhn_parity"
    root = "/data/cifar-10-batches-py"   # SVHN: a train_32x32.mat file or its folder
    image_size = 8                   # 32×32 images average-pooled to 8×8 for the MLP
    width = 1024
    seeds = 5
    sizes = [100, 200, 400, 800, 1600, 3200, 5000]
    after_kernel_sizes = [100, 400, 1600, 5000]

Presets (sized by the quick preset's measurement): each task's exponents are decided at
quick scale already (bootstrap intervals ±0.01–0.07 apart by 0.03–0.38), but the tasks
disagree: single_index (α_out = 0.1) has the network's α above both kernels', digits and
mnist_parity below or overlapping. The claims are therefore one per task, each decided with
the smallest gain `GAIN` (`_scaling_figures`); ``standard`` (one more size per task, 4
seeds, width 256, ~1 CPU-minute estimated) narrows each task's interval. ``paper``: Vyas
et al.'s sizes to 5,000 and the MNIST-parity CNN on 14×14 images (one 2×2 pooling, to
7×7).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from enum import StrEnum

import numpy as np
import pandas as pd
import torch
from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from ntkscope import models
from ntkscope.data import TaskName, targets
from ntkscope.dynamics import KernelRidge, select_ridge, train
from ntkscope.dynamics.ridge import DEFAULT_RIDGES
from ntkscope.metrics import classification_error, fit_power_law
from ntkscope.models import ActivationName
from ntkscope.models.scaling import OutputScaled
from ntkscope.studies._base import Progress, Result
from ntkscope.studies._cost import (
    Cost,
    cost_of,
    entk_floats,
    entk_flops,
    infinite_flops,
    task_shape,
    train_flops,
)
from ntkscope.studies._kernel_cluster import ClusterFields, InProcess, OnCluster, kernel_functions
from ntkscope.studies._scaling_figures import captions, claims, figures
from ntkscope.studies._training import (
    Architecture,
    bare_network,
    infinite,
    inputs,
    network_size,
    splits,
)

__all__ = [
    "MIN_SEEDS",
    "MIN_SIZES",
    "PRESETS",
    "Config",
    "captions",
    "claims",
    "cost",
    "figures",
    "run",
]

MIN_SIZES = 6
"""Fewest distinct training-set sizes per run. The exponent α is a least-squares slope of log
loss on log n: six sizes leave four residual degrees of freedom, enough for the slope to
average out seed noise and for a bend away from a power law to show (docs/conventions.md asks for
at least four sizes; `ntkscope.metrics.fit_power_law` refuses fewer)."""
MIN_SEEDS = 3
"""Fewest seeds per size (docs/conventions.md: each n averaged over ≥ 3 seeds). The bootstrap
interval of α resamples seeds with replacement at each n: two seeds give only three distinct
resampled means per n, three give ten."""

NETWORK, ENTK_INIT, NTK, NNGP = "network", "entk_init", "ntk", "nngp"
"""Method names in the ``losses`` table; after-kernels are ``after_<m>``."""


def after_kernel(m: int) -> str:
    """The method name of the after-kernel K_m."""
    return f"after_{m}"


class Stopping(StrEnum):
    """When network training stops.

    EARLY: after ``patience`` validation checks without improvement (or ``max_steps``);
        the checkpoint with the best validation loss is kept.
    CONVERGED: when the training loss ½‖f − Y‖²/N falls below ``tolerance`` (or at
        ``max_steps``); the last parameters are kept.
    """

    EARLY = "early"
    CONVERGED = "converged"


class Config(ClusterFields):
    """One scaling curve: a task, a network family and its kernels, over sizes n and seeds."""

    task: TaskName = TaskName.SINGLE_INDEX
    """Task of `ntkscope.data.load_task`: synthetic ("single_index", "sparse_parity"), built
    in ("digits", "digits_parity", "mnist_parity", ...) or from files under ``root``."""
    d: PositiveInt = 64
    """Input dimension of the synthetic tasks."""
    degrees: tuple[PositiveInt, ...] = (1, 2)
    """Hermite degrees of the single-index link (see `ntkscope.data.synthetic`)."""
    parity_k: PositiveInt = 2
    """Order k of the sparse parity."""
    image_size: PositiveInt | None = None
    """Side of image tasks after average pooling (MNIST 28 → 14 or 7); None: native."""
    root: str | None = None
    """The user's files for cifar10_binary, svhn_parity, npz (and optionally mnist): the
    folder of the CIFAR-10 python batches, an SVHN .mat file or folder, an .npz file."""
    n_val: PositiveInt = 256
    """Validation examples (ridge selection, early stopping)."""
    n_test: PositiveInt = 1000
    """Test examples (fixed across seeds)."""
    model: Architecture = Architecture.MLP
    """"mlp" or "cnn" (image tasks; see `Architecture`)."""
    width: PositiveInt = 128
    """Hidden width of the MLP, channels of the CNN."""
    depth: NonNegativeInt = 1
    """Hidden layers L of the MLP; convolution blocks of the CNN (≥ 1)."""
    activation: ActivationName = ActivationName.RELU
    """Activation φ (relu, erf and identity have closed-form infinite kernels)."""
    parameterization: models.Parameterization = models.Parameterization.NTK
    """"ntk" or "standard" (docs/conventions.md); the eNTK and infinite kernels match at "ntk"."""
    sigma_w: NonNegativeFloat = math.sqrt(2.0)
    """Weight standard deviation σ_w."""
    sigma_b: NonNegativeFloat = 0.0
    """Bias standard deviation σ_b."""
    output_scale: PositiveFloat = 0.1
    """α_out of the centered network α_out(f − f₀), trained at lr/α_out²; small is rich."""
    sizes: tuple[PositiveInt, ...] = Field((48, 80, 128, 208, 336, 544), min_length=MIN_SIZES)
    """Training-set sizes n (at least 6 distinct; log-spaced is best for the fit)."""
    seeds: int = Field(MIN_SEEDS, ge=MIN_SEEDS)
    """Seeds per size (data draw and initialization): seed, seed + 1, ... (at least 3)."""
    seed: NonNegativeInt = 0
    """First seed."""
    stopping: Stopping = Stopping.EARLY
    """"early" (best validation checkpoint) or "converged" (train loss below tolerance)."""
    lr: PositiveFloat = 1.0
    """SGD learning rate before the division by α_out²."""
    max_steps: PositiveInt = 1000
    """Cap on full-batch SGD steps per network."""
    check_every: PositiveInt = 10
    """Steps between validation (or convergence) checks."""
    patience: PositiveInt = 20
    """Checks without validation improvement before early stopping."""
    tolerance: PositiveFloat = 1e-3
    """Training loss ½‖f − Y‖²/N at which "converged" stops."""
    after_kernel_sizes: tuple[PositiveInt, ...] = (48, 208, 544)
    """Sizes m of the after-kernels K_m; each must be one of ``sizes``."""
    ridges: tuple[float, ...] = DEFAULT_RIDGES
    """Ridges λ tried on the validation split, relative to tr(K)/N (λ = 0 is always tried)."""

    @field_validator("sizes")
    @classmethod
    def _distinct_sizes(cls, sizes: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(sizes)) < MIN_SIZES:
            raise ValueError(
                f"sizes: expected at least {MIN_SIZES} distinct training-set sizes for a "
                f"scaling fit, got {sorted(set(sizes))}"
            )
        return tuple(sorted(set(sizes)))

    @field_validator("ridges")
    @classmethod
    def _positive_ridges(cls, ridges: tuple[float, ...]) -> tuple[float, ...]:
        if not ridges or any(not r > 0 for r in ridges):
            raise ValueError(
                f"ridges: expected positive relative ridges (λ = 0, ridgeless, is always "
                f"tried), got {list(ridges)}"
            )
        return ridges

    @property
    def architecture(self) -> Architecture:
        """``model``, under the name that `ntkscope.studies._training` reads."""
        return self.model

    @model_validator(mode="after")
    def _cnn_has_blocks(self) -> Config:
        if self.model is Architecture.CNN and self.depth < 1:
            raise ValueError("depth: a CNN needs at least one convolution block")
        return self

    @model_validator(mode="after")
    def _after_sizes_trained(self) -> Config:
        missing = sorted(set(self.after_kernel_sizes) - set(self.sizes))
        if missing:
            raise ValueError(
                f"after_kernel_sizes: {missing} not among sizes {list(self.sizes)}; an "
                "after-kernel K_m reuses the network trained at n = m"
            )
        return self


PRESETS = {
    "quick": {
        "fixed": {"seeds": 3, "width": 128, "depth": 1, "output_scale": 0.1, "lr": 1.0},
        "zip": [{
            "task": ["single_index", "digits", "mnist_parity"],
            "image_size": [None, None, 7],
            "sizes": [[48, 80, 128, 208, 336, 544], [32, 56, 100, 180, 320, 560],
                      [32, 56, 100, 180, 320, 560]],
            "after_kernel_sizes": [[48, 208, 544], [32, 180, 560], [32, 180, 560]],
            "n_val": [256, 200, 200],
            "n_test": [1000, 359, 500],
            "max_steps": [1000, 300, 300],
        }],
    },
    "standard": {
        "fixed": {"seeds": 4, "width": 256, "depth": 1, "output_scale": 0.1, "lr": 1.0},
        "zip": [{
            "task": ["single_index", "digits", "mnist_parity"],
            "image_size": [None, None, 7],
            "sizes": [[48, 80, 128, 208, 336, 544, 880], [32, 56, 100, 180, 320, 560, 1000],
                      [32, 56, 100, 180, 320, 560, 1000]],
            "after_kernel_sizes": [[48, 208, 880], [32, 180, 1000], [32, 180, 1000]],
            "n_val": [256, 200, 200],
            "n_test": [1000, 359, 500],
            "max_steps": [1000, 300, 300],
        }],
    },
    "paper": {
        "fixed": {"seeds": 5, "width": 1024, "output_scale": 0.1, "lr": 1.0,
                  "max_steps": 20000, "d": 128},
        "zip": [{
            "task": ["single_index", "sparse_parity", "mnist_parity", "mnist_parity"],
            "model": ["mlp", "mlp", "mlp", "cnn"],
            "depth": [2, 2, 2, 3],
            "image_size": [None, None, 14, 14],
            "sizes": [[100, 200, 400, 800, 1600, 3200, 5000]] * 2
                     + [[50, 100, 200, 400, 800, 1600, 3000]] * 2,
            "after_kernel_sizes": [[100, 400, 1600, 5000]] * 2 + [[100, 400, 1600, 3000]] * 2,
            "n_val": [1000, 1000, 500, 500],
            "n_test": [2000, 2000, 1000, 1000],
        }],
    },
}  # fmt: skip


def cost(config: Config) -> Cost:
    """Estimated time and peak memory of a run (`ntkscope.studies.Cost`), per seed: the
    infinite kernels and 1 + len(after_kernel_sizes) eNTKs between all inputs and the
    largest training set; one network per size trained for at most ``max_steps`` steps
    (an upper bound: early stopping ends most sooner)."""
    net = network_size(config, config.width)
    n_max = max(config.sizes)
    n_all = n_max + config.n_val + config.n_test
    side = task_shape(config.task, config.d, config.image_size)[1]
    kernels = 1 + len(config.after_kernel_sizes)
    seed = kernels * entk_flops(n_all, n_max, net)
    seed += infinite_flops(n_all, n_max, config.depth, side if config.model == "cnn" else None)
    seed += sum(train_flops(n + config.n_val, net, config.max_steps) for n in config.sizes)
    floats = 4 * net.params + entk_floats(n_all, net) + (2 + kernels) * n_all * n_max
    return cost_of(
        "scaling_laws",
        config.seeds * seed,
        floats,
        entks=config.seeds * kernels,
        steps=config.seeds * len(config.sizes) * config.max_steps,
    )


def _mse(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean squared error ‖f − Y‖² / (N·O)."""
    with torch.no_grad():
        return float((model(x) - y).square().mean())


def _train_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Training loss ½‖f − Y‖²/N: squared errors summed over outputs, averaged over examples."""
    with torch.no_grad():
        return float((model(x) - y).square().sum(1).mean() / 2)


def _fit_network(
    config: Config, initial: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
    x_val: torch.Tensor, y_val: torch.Tensor, where: str,
) -> tuple[OutputScaled, int]:  # fmt: skip
    """Train α_out(f − f₀) by full-batch SGD in chunks of ``check_every`` steps (momentum-free
    SGD carries no state between chunks); returns the kept network and its step. Unlike
    `_training`, lr is fixed (lr/α_out², not a fraction of 2N/λ_max, which moves with n) and
    training stops early on validation or at ``tolerance`` (``stopping``)."""
    net = OutputScaled(copy.deepcopy(initial), config.output_scale)
    lr = config.lr / config.output_scale**2
    best, best_state, best_step, waited, step = _mse(net, x_val, y_val), None, 0, 0, 0
    while step < config.max_steps:
        chunk = min(config.check_every, config.max_steps - step)
        if train(net, (x, y), lr=lr, steps=chunk).stopped == "diverged":
            raise ValueError(f"lr: training diverged at {where}; lower lr or raise output_scale")
        step += chunk
        if config.stopping is Stopping.CONVERGED:
            if _train_loss(net, x, y) < config.tolerance:
                break
            continue
        loss = _mse(net, x_val, y_val)
        if loss < best:
            best, best_state, best_step, waited = loss, copy.deepcopy(net.state_dict()), step, 0
        elif (waited := waited + 1) >= config.patience:
            break
    if config.stopping is Stopping.EARLY:
        if best_state is None:  # no step beat the zero function: keep θ₀
            net = OutputScaled(copy.deepcopy(initial), config.output_scale)
        else:
            net.load_state_dict(best_state)
        step = best_step
    return net, step


def _entk(
    kernels: InProcess | OnCluster,
    model: torch.nn.Module,
    x_all: torch.Tensor,
    x_train: torch.Tensor,
) -> torch.Tensor:
    """Trace eNTK Θ̂(X_all, X_train) in float64."""
    double = copy.deepcopy(model).to(torch.float64)
    return kernels.entk(double, x_all.to(torch.float64), x_train.to(torch.float64), mode="trace")


class _Scores:
    """Test loss and error of predictions, and where each kernel's blocks lie."""

    def __init__(self, n_max: int, n_val: int, y: torch.Tensor, labels: torch.Tensor | None):
        self.val = slice(n_max, n_max + n_val)
        self.test = slice(n_max + n_val, None)
        self.y, self.labels = y, labels

    def __call__(self, predictions: torch.Tensor) -> tuple[float, float]:
        predictions = predictions.to(torch.float64)
        loss = float((predictions - self.y[self.test]).square().mean())
        if self.labels is None:
            return loss, math.nan
        return loss, classification_error(predictions, self.labels)


def _regress(
    kernel: torch.Tensor, n: int, y: torch.Tensor, scores: _Scores, ridges: Sequence[float]
) -> list[tuple[str, float, float, float]]:
    """Ridge-selected and ridgeless kernel regression on the first n examples:
    [(suffix, ridge, test loss, test error)], a cached Cholesky per ridge (`KernelRidge`)."""
    model = KernelRidge(kernel[:n, :n], y[:n])
    ridge, _ = select_ridge(model, kernel[scores.val, :n], y[scores.val], ridges)
    chosen, ridgeless = model.path(kernel[scores.test, :n], [ridge, 0.0])
    return [("", ridge, *scores(chosen)), ("_ridgeless", 0.0, *scores(ridgeless))]


def _one_seed(config: Config, seed: int, clock: dict[str, float], progress, kernels) -> list[tuple]:
    """Rows (n, seed, method, test_loss, test_error, ridge, steps) of one seed, its kernels
    computed by ``kernels`` (`ntkscope.studies._kernel_cluster`)."""
    sizes, n_max = config.sizes, max(config.sizes)
    train_set, val, test = splits(config, n_max, seed, torch.float32)
    if config.model is Architecture.CNN and train_set.image_shape is None:
        raise ValueError(f"model: 'cnn' needs an image task, and {config.task.value!r} is not one")
    x_train, x_val, x_test = (inputs(config, data) for data in (train_set, val, test))
    x_all = torch.cat([x_train, x_val, x_test])
    y_all = torch.cat([targets(train_set), targets(val), targets(test)])
    scores = _Scores(n_max, len(val), y_all, None if test.n_classes is None else test.y)
    initial = bare_network(config, train_set, config.width, y_all.shape[1], seed)
    y_val = y_all[scores.val].to(x_val.dtype)
    start = time.perf_counter()
    nngp, ntk = infinite(config, x_all.double(), x_train.double(), kernels)
    by_method = {ENTK_INIT: _entk(kernels, initial, x_all, x_train), NTK: ntk, NNGP: nngp}
    clock["kernel"] += time.perf_counter() - start
    rows = []
    for i, n in enumerate(sizes):
        start = time.perf_counter()
        x, y = x_train[:n], y_all[:n].to(x_train.dtype)
        net, steps = _fit_network(config, initial, x, y, x_val, y_val, f"n={n}, seed={seed}")
        with torch.no_grad():
            rows.append((n, seed, NETWORK, *scores(net(x_test)), math.nan, steps))
        clock["train"] += time.perf_counter() - start
        if n in config.after_kernel_sizes:
            start = time.perf_counter()
            by_method[after_kernel(n)] = _entk(kernels, net.model, x_all, x_train)
            clock["kernel"] += time.perf_counter() - start
        progress(i + 1, len(sizes) + 1)
    start = time.perf_counter()
    for n in sizes:
        for name, kernel in by_method.items():
            for suffix, ridge, loss, error in _regress(kernel, n, y_all, scores, config.ridges):
                rows.append((n, seed, name + suffix, loss, error, ridge, math.nan))
    clock["kernel"] += time.perf_counter() - start
    progress(len(sizes) + 1, len(sizes) + 1)
    return rows


def _exponents(table: pd.DataFrame) -> dict[str, float]:
    """α, its interval and intercept per method: ``alpha_<method>``, ``..._low``, ``..._high``,
    ``intercept_<method>``."""
    metrics = {}
    for method, rows in table.groupby("method", sort=False):
        losses = rows.pivot(index="n", columns="seed", values="test_loss").sort_index()
        fit = fit_power_law(losses.index.to_numpy(float), losses.to_numpy())
        metrics |= {
            f"alpha_{method}": fit.exponent,
            f"alpha_{method}_low": fit.low,
            f"alpha_{method}_high": fit.high,
            f"intercept_{method}": fit.intercept,
        }
    return metrics


def run(config: Config, progress: Progress) -> Result:
    """Network and kernel test losses for every n and seed, and the fitted exponents.

    Returns:
        metrics: ``alpha_<method>`` with ``_low``/``_high`` (bootstrap 95%) and
        ``intercept_<method>`` for network, entk_init, ntk, nngp, after_<m> and their
        ``_ridgeless`` variants; ``kernel_seconds`` and ``train_seconds`` (wall time of the
        kernel phase: kernels and regressions; and of network training).
        tables: ``losses`` (n, seed, method, test_loss, test_error, ridge, steps); test_error
        is NaN for real targets, ridge NaN for the network, steps NaN for kernels.
        arrays: ``sizes``, ``after_kernel_sizes``.
    """
    clock = {"kernel": 0.0, "train": 0.0}
    rows, per_seed = [], len(config.sizes) + 1
    total = config.seeds * per_seed
    with kernel_functions(config) as kernels:
        for index, seed in enumerate(range(config.seed, config.seed + config.seeds)):
            done = index * per_seed
            rows += _one_seed(
                config, seed, clock, lambda i, _, d=done: progress(d + i, total), kernels
            )
    columns = ["n", "seed", "method", "test_loss", "test_error", "ridge", "steps"]
    table = pd.DataFrame(rows, columns=columns)
    metrics = _exponents(table)
    metrics |= {"kernel_seconds": clock["kernel"], "train_seconds": clock["train"]}
    return Result(
        metrics=metrics,
        tables={"losses": table},
        arrays={"sizes": np.array(config.sizes),
                "after_kernel_sizes": np.array(sorted(config.after_kernel_sizes))},
    )  # fmt: skip
