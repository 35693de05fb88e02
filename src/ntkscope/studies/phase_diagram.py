"""Phase diagram: whether NTK theory holds depends on the initialization phase and on depth.

Seleznova & Kutyniok (2022), "Analyzing finite neural networks: can we trust neural tangent
kernel theory?": in the chaotic phase (χ_1 > 1, exploding gradients) a deep network's
empirical NTK Θ̂ is random at initialization (large dispersion Var_θ[Θ̂] / E_θ[Θ̂]² across
seeds) and moves a lot in training; at the edge of chaos (χ_1 = 1) the dispersion grows with
depth; in the ordered phase (χ_1 < 1, vanishing gradients) Θ̂ is near-deterministic and
nearly frozen, but the network stops training as depth grows. χ_1 and q* are the mean-field
quantities of Schoenholz et al. (2017), "Deep information propagation" (docs/conventions.md).

One run is one cell (activation, σ_w², σ_b, depth, parameterization) at a fixed width, with
``seeds`` independent initializations on one data sample. It measures

- theory: q*, χ_1 and the phase from `ntkscope.kernels.order_chaos`;
- at initialization: the dispersion Var_s[Θ̂(x_0, x_a)] / E_s[Θ̂(x_0, x_a)]² of pairs on the
  sphere ‖x‖² = n_0 at angles a (a = 0 is the diagonal, docs/conventions.md's seed dispersion), the
  condition number λ_max / λ_min of Θ̂ on the training inputs, and (NTK parameterization
  only, where `infinite_kernels` applies) ‖Θ̂ − Θ‖_F / ‖Θ‖_F;
- after ``steps`` steps of full-batch gradient descent on the MSE ½‖f(X) − Y‖² / N with the
  same budget everywhere and the learning rate η = ``lr_scale`` · N / λ_max(Θ̂_0) of each
  seed, so that the top NTK mode contracts by the same factor |1 − ``lr_scale``| per step in
  every phase (stable for ``lr_scale`` < 2): the relative kernel change
  ‖Θ̂_T − Θ̂_0‖_F / ‖Θ̂_0‖_F, the loss decrease 1 − L_T / L_0 (trainability), the test
  accuracy, and the RMSE between the network and its linearization trained alongside;
- output variance: Var_s[f_T(x)] over seeds of the trained network on test inputs (mean over
  inputs and outputs), against the same variance of the NTK prediction
  f_T = `predict_mse` (Θ̂_0, f_0) of each seed (linearized discrete dynamics started from the
  random f_0), as in Seleznova & Kutyniok's output-variance framework.

Which setting a result uses is part of its config: ``parameterization`` and ``sigma_b``. A
ReLU network with σ_b = 0 in NTK parameterization is positively homogeneous in σ_w, so its
normalized kernel statistics do not depend on σ_w (docs/conventions.md); the quick preset uses
standard parameterization (trainable biases) with σ_b = 0.1 so the phase matters.

Presets (sized by the quick preset's measurement): quick separates the phases at depth 12
by 16 half-widths (dispersion chaotic − ordered 0.446 [0.363, 0.529]); ``standard`` adds
depth 20 and 6 seeds (64 initializations for the dispersion) at ~4 CPU-minutes estimated;
``paper`` is Seleznova & Kutyniok's grid (4 activations, 7 σ_w², 8 depths to 50).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from ntkscope import metrics, models
from ntkscope.data import DatasetName, load
from ntkscope.dynamics import LinearizedRecorder, LossRecorder, predict_mse, train
from ntkscope.kernels import empirical_ntk, infinite_kernels, order_chaos
from ntkscope.models import ActivationName
from ntkscope.studies._base import Progress, Result, StudyConfig
from ntkscope.studies._cost import (
    Cost,
    cost_of,
    entk_floats,
    entk_flops,
    infinite_flops,
    mlp,
    train_flops,
)
from ntkscope.studies._phase_figures import captions, claims, figures

__all__ = ["PRESETS", "Config", "cost", "captions", "claims", "figures", "run"]


class Config(StudyConfig):
    """One cell of the phase diagram: several initializations of one MLP, trained alike."""

    activation: ActivationName = ActivationName.RELU
    """Activation φ of every hidden layer."""
    sigma_w2: PositiveFloat = 2.0
    """Weight variance σ_w²; for ReLU χ_1 = σ_w²/2, so 2 is the edge of chaos."""
    sigma_b: NonNegativeFloat = 0.1
    """Bias standard deviation σ_b (biases are trainable in standard parameterization even at 0)."""
    depth: NonNegativeInt = 4
    """Hidden layers L of the MLP."""
    width: PositiveInt = 128
    """Width of every hidden layer."""
    parameterization: models.Parameterization = models.Parameterization.STANDARD
    """"standard" or "ntk" (docs/conventions.md); the distance to the infinite NTK needs "ntk"."""
    seeds: int = Field(4, ge=2)
    """Initializations trained: seeds seed, seed + 1, ... (at least 2, for the output variance)."""
    init_seeds: int = Field(32, ge=2)
    """Initializations for the dispersion at initialization (cheap: Θ̂ of 1 + A sphere points;
    the relative sd of a variance from S' draws is at least √(2/(S' − 1)), 25% for 32)."""
    n: PositiveInt = 64
    """Training inputs; Θ̂_0 on them sets the learning rate and its condition number."""
    n_test: PositiveInt = 128
    """Test inputs (accuracy, network/linearized RMSE, output variance)."""
    angles: tuple[NonNegativeFloat, ...] = (30.0, 60.0, 90.0, 120.0)
    """Angles in degrees of the sphere pairs (x_0, x_a) whose Θ̂ dispersion is measured, besides
    the diagonal Θ̂(x_0, x_0) (angle 0), which is always measured."""
    steps: PositiveInt = 20
    """Full-batch gradient descent steps, the same budget in every cell. Short on purpose: at
    η = N / λ_max a deep ordered network's hidden biases eventually move its tiny
    pre-activations (ReLU, σ_w² = 1, σ_b = 0.1, L = 12: kernel change 0.06 after 20 steps,
    0.6 after 60)."""
    lr_scale: float = Field(1.0, gt=0.0, lt=2.0)
    """Learning rate in units of N / λ_max(Θ̂_0): η = lr_scale · N / λ_max (stable below 2)."""
    data: DatasetName = DatasetName.DIGITS
    """Built-in data set ("digits": 10 one-hot MSE targets; "gaussian": one real target)."""
    seed: NonNegativeInt = 0
    """First initialization seed; also the seed of the data sample and of the sphere pairs."""


PRESETS = {
    "quick": {
        "fixed": {"activation": "relu", "sigma_b": 0.1, "parameterization": "standard",
                  "width": 128, "seeds": 4, "init_seeds": 32, "n": 48, "n_test": 64,
                  "steps": 20},
        "product": {"sigma_w2": [1.0, 2.0, 3.0], "depth": [1, 4, 12]},
    },
    "standard": {
        "fixed": {"activation": "relu", "sigma_b": 0.1, "parameterization": "standard",
                  "width": 128, "seeds": 6, "init_seeds": 64, "n": 48, "n_test": 64,
                  "steps": 20},
        "product": {"sigma_w2": [1.0, 2.0, 3.0], "depth": [1, 4, 12, 20]},
    },
    "paper": {
        "fixed": {"width": 512, "seeds": 20, "init_seeds": 200, "n": 256, "n_test": 512,
                  "steps": 1000},
        "product": {
            "sigma_w2": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5],
            "depth": [1, 2, 5, 10, 20, 30, 40, 50],
            "activation": ["relu", "tanh", "erf", "sigmoid"],
            "sigma_b": [0.0, 0.1, 0.5],
            "parameterization": ["ntk", "standard"],
        },
    },
}  # fmt: skip


def cost(config: Config) -> Cost:
    """Estimated time and peak memory of a run (`ntkscope.studies.Cost`): the sphere eNTKs
    of ``init_seeds`` networks; per seed, the full eNTK on the training and test inputs,
    ``steps`` steps of the network and of its linearization (about 3 network steps each), the
    final eNTK; the infinite NTK once (NTK parameterization)."""
    d, outputs = (64, 10) if config.data == DatasetName.DIGITS else (16, 1)
    sphere = 1 + len(config.angles)
    scalar = mlp(d, config.width, config.depth, 1)
    work = config.init_seeds * entk_flops(sphere, sphere, scalar)
    net = mlp(d, config.width, config.depth, outputs)
    seed = entk_flops(config.n, config.n, net, full=True)
    seed += entk_flops(config.n_test, config.n, net, full=True)
    seed += 4 * train_flops(config.n + config.n_test, net, config.steps)
    seed += entk_flops(config.n, config.n, net)
    work += config.seeds * seed
    if config.parameterization == models.Parameterization.NTK:
        work += infinite_flops(config.n, config.n, config.depth)
    kernels = (config.n * outputs) * (config.n + config.n_test) * outputs
    floats = 6 * net.params + entk_floats(config.n + config.n_test, net) + kernels
    return cost_of(
        "phase_diagram",
        work,
        floats,
        entks=config.init_seeds + 3 * config.seeds,
        steps=2 * config.seeds * config.steps,
    )


def _sphere_pairs(d: int, angles: tuple[float, ...], seed: int) -> torch.Tensor:
    """x_0 = √d u and x_a = √d (cos a · u + sin a · v) per angle a, ‖x‖² = d: (1 + A, d)."""
    generator = torch.Generator().manual_seed(seed)
    u, v = torch.linalg.qr(torch.randn(d, 2, generator=generator, dtype=torch.float64))[0].T
    radians = torch.tensor([math.radians(a) for a in angles], dtype=torch.float64)
    pairs = torch.cos(radians)[:, None] * u + torch.sin(radians)[:, None] * v
    return math.sqrt(d) * torch.cat([u[None], pairs])


def _splits(config: Config) -> tuple:
    """(train x, y), (test x, y) and the training MSE targets (N, O) (one-hot for classes)."""
    data = load(config.data, config.n + config.n_test, seed=config.seed, dtype=torch.float64)
    targets = (
        data.y[:, None].to(torch.float64)
        if data.n_classes is None
        else F.one_hot(data.y, data.n_classes).to(torch.float64)
    )
    cut = config.n
    return (data.x[:cut], data.y[:cut]), (data.x[cut:], data.y[cut:]), targets[:cut]


def _model(config: Config, d_in: int, d_out: int, seed: int) -> torch.nn.Module:
    return models.mlp(
        d_in, config.width, config.depth, d_out, activation=config.activation,
        parameterization=config.parameterization, sigma_w=math.sqrt(config.sigma_w2),
        sigma_b=config.sigma_b, seed=seed,
    ).to(torch.float64)  # fmt: skip


def _sphere_kernels(config: Config, sphere: torch.Tensor) -> np.ndarray:
    """Θ̂(x_0, x_a) of ``init_seeds`` initializations of the scalar-output network (as in
    Hanin & Nica 2019): (S', 1 + A)."""
    return np.stack([
        empirical_ntk(_model(config, sphere.shape[1], 1, seed), sphere)[0].detach().numpy()
        for seed in range(config.seed, config.seed + config.init_seeds)
    ])  # fmt: skip


def _one_seed(config: Config, seed: int, splits, infinite: torch.Tensor | None) -> dict:
    """Kernel at initialization, one training run and the NTK prediction of one seed;
    ``infinite`` is the infinite-width NTK on the training inputs (NTK parameterization)."""
    (x, y), (x_test, y_test), targets = splits
    model = _model(config, x.shape[1], targets.shape[1], seed)
    full = empirical_ntk(model, x, mode="full")
    kernel_test = empirical_ntk(model, x_test, x, mode="full")
    kernel = metrics.scalar_kernel(full)
    eigenvalues = torch.linalg.eigvalsh(kernel)
    lr = config.lr_scale * len(x) / metrics.largest_eigenvalue(full)
    with torch.no_grad():
        f0, f0_test = model(x), model(x_test)
    predicted = predict_mse(full, kernel_test, targets, f0, f0_test, config.steps, lr, True)
    trajectory = train(
        model, (x, y), test=(x_test, y_test), lr=lr, steps=config.steps,
        recorders=[LossRecorder(every=config.steps), LinearizedRecorder(x_test, config.steps)],
    )  # fmt: skip
    losses = trajectory.series("train_loss")[1]
    with torch.no_grad():
        f_test = model(x_test)
    row = {
        "seed": seed,
        "lr": lr,
        "condition": float(eigenvalues[-1] / eigenvalues[0]),
        "kernel_change": metrics.relative_distance(empirical_ntk(model, x), kernel),
        "loss_decrease": 1.0 - losses[-1] / losses[0],
        "linear_rmse": trajectory.last("linear_rmse"),
        "diverged": float(trajectory.stopped == "diverged"),
    }
    if y_test.dtype == torch.int64:
        row["test_accuracy"] = trajectory.last("test_accuracy")
    if infinite is not None:
        row["distance_to_infinite"] = metrics.relative_distance(kernel, infinite)
    outputs = {"f_test": f_test, "f_predicted": predicted.test[-1]}
    return row | {k: v.detach().numpy() for k, v in outputs.items()}


def _infinite_ntk(config: Config, x: torch.Tensor) -> torch.Tensor | None:
    """The infinite-width NTK Θ on the training inputs, the same for every seed, so computed
    once per config (NTK parameterization; None otherwise, where Θ̂ has no such limit here)."""
    if config.parameterization != models.Parameterization.NTK:
        return None
    _, ntk = infinite_kernels(
        x, depth=config.depth, activation=config.activation,
        sigma_w=math.sqrt(config.sigma_w2), sigma_b=config.sigma_b,
    )  # fmt: skip
    return ntk


def _dispersion(sphere: np.ndarray) -> np.ndarray:
    """Var_s / E_s² (unbiased variance) of each entry Θ̂(x_0, x_a) over seeds: (S, A) -> (A,)."""
    return sphere.var(axis=0, ddof=1) / sphere.mean(axis=0) ** 2


def _theory(config: Config) -> dict[str, float]:
    """q*, χ_1 and the phase as −1 (ordered), 0 (edge of chaos), +1 (chaotic)."""
    theory = order_chaos(config.activation, math.sqrt(config.sigma_w2), config.sigma_b)
    sign = {"ordered": -1.0, "edge_of_chaos": 0.0, "chaotic": 1.0}[theory.phase.value]
    return {"q_star": theory.q_star, "chi_1": theory.chi_1, "phase": sign}


def run(config: Config, progress: Progress) -> Result:
    """Measure one cell over ``config.seeds`` initializations (see the module docstring).

    Returns:
        metrics: ``q_star``, ``chi_1``, ``phase`` (−1/0/+1); ``dispersion`` (a = 0, the
        diagonal) and ``dispersion_max`` (over angles); seed means of ``condition``,
        ``kernel_change``, ``loss_decrease``, ``linear_rmse``, ``diverged`` (fraction),
        ``test_accuracy`` (classes) and ``distance_to_infinite`` (NTK parameterization);
        ``output_variance`` measured, ``output_variance_predicted`` by the NTK, and their
        ``output_variance_ratio`` (predicted / measured).
        tables: ``seeds`` (one row per seed), ``dispersion`` (angle, dispersion; angle 0 first).
        arrays: ``angles`` (1 + A), ``sphere_kernels`` Θ̂(x_0, x_a) (S', 1 + A), ``f_test`` and
        ``f_predicted`` (S, M, O).
    """
    splits = _splits(config)
    sphere = _sphere_pairs(splits[0][0].shape[1], config.angles, config.seed)
    arrays = {"sphere": _sphere_kernels(config, sphere)}
    infinite = _infinite_ntk(config, splits[0][0])
    rows = []
    for seed in range(config.seed, config.seed + config.seeds):
        rows.append(_one_seed(config, seed, splits, infinite))
        progress(len(rows), config.seeds)
    arrays |= {k: np.stack([r.pop(k) for r in rows]) for k in ("f_test", "f_predicted")}
    table = pd.DataFrame(rows)
    angles = np.array([0.0, *config.angles])
    dispersion = _dispersion(arrays["sphere"])
    summary = {
        "dispersion": dispersion[0],
        **{f"dispersion_{a:g}": v for a, v in zip(config.angles, dispersion[1:], strict=True)},
        "output_variance": arrays["f_test"].var(axis=0, ddof=1).mean(),
        "output_variance_predicted": arrays["f_predicted"].var(axis=0, ddof=1).mean(),
    }
    summary["output_variance_ratio"] = (
        summary["output_variance_predicted"] / summary["output_variance"]
    )
    return Result(
        metrics=_theory(config) | summary | table.drop(columns="seed").mean().to_dict(),
        tables={"seeds": table, "dispersion": pd.DataFrame(
            {"angle": angles, "dispersion": dispersion})},
        arrays={"angles": angles, "sphere_kernels": arrays["sphere"],
                "f_test": arrays["f_test"], "f_predicted": arrays["f_predicted"]},
    )  # fmt: skip
