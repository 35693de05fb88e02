"""Uncertainty vs width: NTK Gaussian process, deep ensemble and infinite NTK, and a bandit.

Wenger, Dangel & Kristiadi ("On the disconnect between theory and practice of neural
networks: limits of the NTK perspective", 2023) ask whether the uncertainty that NTK theory
promises (the NTK Gaussian process, or the linearized Laplace approximation) describes
networks of practical width. One run is one width of an MLP in NTK parameterization. It
trains ``ensemble`` networks from independent initializations with MSE on one-hot labels
of the in-distribution classes (digits ``0..in_classes−1``), and compares three predictive
distributions (`ntkscope.kernels.GaussianProcess`, every output independent with shared
prior scale s and noise σ², both by type-II maximum likelihood):

- ``ntk_gp``: the GP with the end-of-training trace eNTK of the first member and prior mean
  the trained network (the linearized-Laplace view): mean f(x*) + Θ̂*ᵀ(Θ̂ + σ²/s I)⁻¹(Y − f(X));
- ``ensemble``: the members' mean, and their variance (ddof 1, averaged over outputs) plus
  the mean squared training residual of the ensemble mean (the maximum-likelihood noise);
- ``infinite_gp``: the GP with the infinite-width NTK and zero prior mean (the network of
  infinite width trained to convergence, averaged over initializations).

Class probabilities (regression on labels): p(c | x) = P(y_c = max_j y_j) for independent
y_j ~ N(μ_j, v) with the shared predictive variance v (latent + noise), computed by 32-point
Gauss–Hermite quadrature of E_z[Π_{j≠c} Φ((μ_c − μ_j)/√v + z)], then normalized. It tends
to one-hot as v → 0 and to uniform as v → ∞.

Evaluated on in-distribution test images, on the held-out classes (OOD) and on the test
images with Gaussian pixel noise (shifted, re-standardized): negative log-likelihood,
expected calibration error (15 equal-width bins of the top probability), accuracy, and the
AUROC of separating in-distribution from OOD / shifted inputs by predictive entropy (and by
predictive variance). Then the bandit of `ntkscope.studies._bandit` (the in-distribution
classes as arms, contexts drawn apart from the training images) under the NTK-theory and
the marginal-likelihood exploration rules.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
)
from scipy import special
from sklearn.metrics import roc_auc_score

from ntkscope import models
from ntkscope.data import DatasetName, load
from ntkscope.dynamics import train
from ntkscope.kernels import GaussianProcess, empirical_ntk, infinite_kernels
from ntkscope.models import ActivationName
from ntkscope.studies import _bandit
from ntkscope.studies._base import Progress, Result, Results, StudyConfig

__all__ = ["METHODS", "PRESETS", "Config", "captions", "figures", "run"]

METHODS = ("ntk_gp", "ensemble", "infinite_gp")
"""The predictive distributions compared (module docstring)."""
SPLITS = ("in", "ood", "shifted")
"""Evaluation sets: in-distribution test, held-out classes, noisy test images."""
ECE_BINS = 15
_HERMITE = np.polynomial.hermite_e.hermegauss(32)
"""Gauss–Hermite nodes and weights for E_z[g(z)], z ~ N(0, 1) (weights sum to √(2π))."""


class Config(StudyConfig):
    """One width: an ensemble of MLPs on the in-distribution digits, and the bandit."""

    data: DatasetName = DatasetName.DIGITS
    """Classification data set (digits: 8×8 images, 10 classes)."""
    width: PositiveInt = 256
    """Hidden width of every layer."""
    depth: PositiveInt = 1
    """Hidden layers L."""
    activation: ActivationName = ActivationName.RELU
    """Activation φ (relu, erf, identity have closed-form infinite kernels)."""
    sigma_w: NonNegativeFloat = math.sqrt(2.0)
    """Weight standard deviation σ_w."""
    sigma_b: NonNegativeFloat = 0.0
    """Bias standard deviation σ_b."""
    in_classes: int = Field(5, ge=2, le=9)
    """Classes 0..in_classes−1 are in-distribution; the others are the OOD set."""
    n_train: PositiveInt = 250
    """Training images (in-distribution)."""
    n_test: PositiveInt = 200
    """Images in each evaluation set (in, OOD, shifted)."""
    shift_noise: PositiveFloat = 1.0
    """Standard deviation of the Gaussian pixel noise of the shifted set (pixels have sd 1)."""
    ensemble: int = 3
    """Independently initialized networks (at least 2); the first one gives the eNTK."""
    steps: PositiveInt = 300
    """Full-batch gradient descent steps on ½‖f(X) − Y‖² / N."""
    lr_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    """Learning rate as a fraction of the stability limit 2N / λ_max(Θ(X, X)) (infinite NTK)."""
    bandit_rounds: NonNegativeInt = 300
    """Bandit rounds T (0 skips the bandit)."""
    bandit_retrain_every: PositiveInt = 50
    """Rounds between retrainings (and eNTK recomputations) of the bandit's network."""
    bandit_steps: PositiveInt = 100
    """Gradient descent steps per retraining."""
    ridge: PositiveFloat = 1.0
    """Ridge λ of the theory rule (prior scale 1/λ, noise 1)."""
    delta: float = Field(0.1, gt=0.0, lt=1.0)
    """Confidence level δ of both exploration rules."""
    reward_noise: PositiveFloat = 0.5
    """Sub-Gaussian constant ν of the rewards (1/2 for rewards in {0, 1})."""
    norm_bound: PositiveFloat = 1.0
    """Bound S on the reward function's norm in the theory rule's β."""
    seed: NonNegativeInt = 0
    """Seed of the data split and of the first initialization (members: seed, seed + 1, ...)."""

    @field_validator("ensemble")
    @classmethod
    def _at_least_two(cls, value: int) -> int:
        if value < 2:
            raise ValueError(f"ensemble: expected at least 2 members, got {value}")
        return value


PRESETS = {
    "quick": {
        "fixed": {
            "n_train": 200,
            "n_test": 150,
            "ensemble": 3,
            "steps": 200,
            "bandit_rounds": 200,
            "bandit_retrain_every": 50,
        },
        "product": {"width": [64, 256, 1024]},
    },
    "full": {
        "fixed": {
            "n_train": 1000,
            "n_test": 1000,
            "ensemble": 10,
            "steps": 2000,
            "bandit_rounds": 1000,
            "bandit_retrain_every": 100,
            "bandit_steps": 500,
        },
        "product": {"width": [64, 128, 256, 512, 1024, 2048, 4096, 8192], "depth": [1, 2]},
    },
}


def _standardize(x: torch.Tensor) -> torch.Tensor:
    """Each image to mean 0, variance 1 over its pixels (as the built-in digits)."""
    return (x - x.mean(dim=1, keepdim=True)) / x.std(dim=1, correction=0, keepdim=True)


def _splits(config: Config):
    """Training (x, labels) and the evaluation sets {split: (x, labels)}, float64."""
    data = load(config.data, seed=config.seed, dtype=torch.float64)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(config.seed))
    inside = order[data.y[order] < config.in_classes]
    outside = order[data.y[order] >= config.in_classes]
    n, m = config.n_train, config.n_test
    if len(inside) < n + m or len(outside) < m:
        raise ValueError(
            f"n_train, n_test: {data.name!r} has {len(inside)} in-distribution and "
            f"{len(outside)} OOD images, asked for {n} + {m} and {m}"
        )
    test = inside[n : n + m]
    noise = torch.randn(m, data.x.shape[1], generator=torch.Generator().manual_seed(config.seed))
    shifted = _standardize(data.x[test] + config.shift_noise * noise.to(torch.float64))
    evaluation = {
        "in": (data.x[test], data.y[test]),
        "ood": (data.x[outside[:m]], data.y[outside[:m]]),
        "shifted": (shifted, data.y[test]),
    }
    return (data.x[inside[:n]], data.y[inside[:n]]), evaluation


def _network(config: Config, d_in: int, d_out: int, seed: int) -> torch.nn.Module:
    return models.mlp(
        d_in, config.width, config.depth, d_out, activation=config.activation,
        sigma_w=config.sigma_w, sigma_b=config.sigma_b, seed=seed,
    ).to(torch.float64)  # fmt: skip


def _infinite_ntk(config: Config, x1: torch.Tensor, x2: torch.Tensor | None = None, **kw):
    return infinite_kernels(
        x1, x2, depth=config.depth, activation=config.activation, sigma_w=config.sigma_w,
        sigma_b=config.sigma_b, **kw,
    )[1]  # fmt: skip


def class_probabilities(mean: torch.Tensor, variance: torch.Tensor) -> np.ndarray:
    """p(c | x) = P(y_c = max_j y_j), y_j ~ N(μ_j, v) independent (module docstring).

    Args:
        mean: (M, C) predictive means; variance: (M,) predictive variance shared by outputs.

    Returns:
        (M, C) probabilities, rows summing to 1.
    """
    mu, sd = mean.numpy(), np.sqrt(variance.numpy())[:, None, None]
    nodes, weights = _HERMITE
    gaps = (mu[:, :, None] - mu[:, None, :])[..., None] / sd[..., None] + nodes  # (M, C, C, Q)
    log_cdf = special.log_ndtr(gaps)
    c = mu.shape[1]
    log_cdf[:, np.arange(c), np.arange(c), :] = 0.0  # j = c is not a competitor
    p = np.exp(log_cdf.sum(axis=2)) @ weights / math.sqrt(2 * math.pi)
    return p / p.sum(axis=1, keepdims=True)


def _nll(p: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood −log p(y | x) (probabilities floored at 1e-12)."""
    return float(-np.log(np.maximum(p[np.arange(len(labels)), labels], 1e-12)).mean())


def _ece(p: np.ndarray, labels: np.ndarray) -> float:
    """Expected calibration error: Σ_b (n_b/N) |accuracy_b − confidence_b| over 15
    equal-width bins of the top probability (Guo et al. 2017)."""
    confidence, correct = p.max(axis=1), p.argmax(axis=1) == labels
    bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    return float(sum(
        abs(correct[bins == b].mean() - confidence[bins == b].mean()) * (bins == b).mean()
        for b in np.unique(bins)
    ))  # fmt: skip


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.maximum(p, 1e-300))).sum(axis=1)


def _auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """AUROC of telling outside (positive) from inside inputs by a score (higher: outside)."""
    labels = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    return float(roc_auc_score(labels, np.r_[inside, outside]))


def _ensemble(config, train_set, evaluation, lr, progress):
    """Train the members; return member 0 and {split: (mean, variance)} of the ensemble."""
    (x, y), members = train_set, []
    outputs = {split: [] for split in ("train", *SPLITS)}
    for k in range(config.ensemble):
        model = _network(config, x.shape[1], config.in_classes, config.seed + k)
        train(model, (x, y), loss="mse", lr=lr, steps=config.steps)
        members.append(model)
        with torch.no_grad():
            outputs["train"].append(model(x))
            for split, (xs, _) in evaluation.items():
                outputs[split].append(model(xs))
        progress(k + 1, config.ensemble + 3)
    one_hot = torch.nn.functional.one_hot(y, config.in_classes).to(torch.float64)
    noise = float((torch.stack(outputs["train"]).mean(0) - one_hot).pow(2).mean())
    predictive = {
        split: (torch.stack(o).mean(0), torch.stack(o).var(0).mean(1) + noise)
        for split, o in outputs.items() if split != "train"
    }  # fmt: skip
    return members[0], predictive, noise


def _gp_predictions(gp, hyper, cross, diagonal, means):
    return {
        split: (p.mean, p.variance)
        for split in SPLITS
        for p in [gp.predict(cross[split], diagonal[split], hyper, prior_mean_test=means[split])]
    }


def _ntk_gp(model, train_set, evaluation, n_classes):
    """The eNTK GP with the trained network as prior mean; its fitted (s, σ²)."""
    x, y = train_set
    one_hot = torch.nn.functional.one_hot(y, n_classes).to(torch.float64)
    with torch.no_grad():
        means = {split: model(xs) for split, (xs, _) in evaluation.items()}
        gp = GaussianProcess(empirical_ntk(model, x), one_hot, prior_mean=model(x))
    hyper = gp.fit_hyperparameters()
    cross = {split: empirical_ntk(model, xs, x) for split, (xs, _) in evaluation.items()}
    diagonal = {s: empirical_ntk(model, xs, diagonal=True) for s, (xs, _) in evaluation.items()}
    return _gp_predictions(gp, hyper, cross, diagonal, means), hyper


def _infinite_gp(config, train_set, evaluation, ntk_train):
    """The infinite-NTK GP with zero prior mean; its fitted (s, σ²)."""
    x, y = train_set
    gp = GaussianProcess(ntk_train, torch.nn.functional.one_hot(y, config.in_classes).double())
    hyper = gp.fit_hyperparameters()
    cross = {split: _infinite_ntk(config, xs, x) for split, (xs, _) in evaluation.items()}
    diagonal = {s: _infinite_ntk(config, xs, diagonal=True) for s, (xs, _) in evaluation.items()}
    return _gp_predictions(gp, hyper, cross, diagonal, dict.fromkeys(SPLITS)), hyper


def _evaluate(method: str, predictions, evaluation) -> tuple[list[tuple], dict[str, float]]:
    """Rows (method, split, nll, ece, accuracy, entropy, variance) and the AUROC metrics."""
    rows, entropy, variance = [], {}, {}
    for split, (mean, var) in predictions.items():
        p, labels = class_probabilities(mean, var), evaluation[split][1].numpy()
        entropy[split], variance[split] = _entropy(p), var.numpy()
        in_range = labels < p.shape[1]  # OOD labels have no class: no NLL/ECE/accuracy
        scores = (_nll(p[in_range], labels[in_range]), _ece(p[in_range], labels[in_range]),
                  float((p.argmax(1) == labels)[in_range].mean())) if in_range.any() else (
                  (math.nan,) * 3)  # fmt: skip
        rows.append((method, split, *scores, entropy[split].mean(), variance[split].mean()))
    metrics = {
        f"{method}_auroc_{split}": _auroc(entropy["in"], entropy[split]) for split in SPLITS[1:]
    } | {f"{method}_auroc_ood_variance": _auroc(variance["in"], variance["ood"])}
    return rows, metrics


def _bandit_regret(config: Config) -> pd.DataFrame:
    """Cumulative regret per rule and round: columns rule, round, regret (empty if T = 0)."""
    if config.bandit_rounds == 0:
        return pd.DataFrame({"rule": [], "round": [], "regret": []})
    data = load(config.data, seed=config.seed + 1, dtype=torch.float64)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(config.seed + 1))
    rounds = order[data.y[order] < config.in_classes][: config.bandit_rounds]
    if len(rounds) < config.bandit_rounds:
        raise ValueError(f"bandit_rounds: {data.name!r} has only {len(rounds)} contexts")
    x, labels = data.x[rounds], data.y[rounds]
    settings = _bandit.BanditSettings(
        config.ridge, config.delta, config.reward_noise, config.norm_bound,
        config.bandit_retrain_every, config.bandit_steps, config.lr_fraction,
    )  # fmt: skip
    ntk = _infinite_ntk(config, x)
    frames = []
    for rule in _bandit.BetaRule:
        model = _network(config, x.shape[1], config.in_classes, config.seed)
        regret = _bandit.play(model, x, labels, ntk, rule, settings)
        frames.append(pd.DataFrame({"rule": rule.value, "round": np.arange(1, len(regret) + 1),
                                    "regret": regret}))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def run(config: Config, progress: Progress) -> Result:
    """Train the ensemble, evaluate the three predictive distributions, play the bandit.

    Returns:
        metrics: per method (``ntk_gp``, ``ensemble``, ``infinite_gp``) on in-distribution
        test data ``{method}_nll``, ``_ece``, ``_accuracy``; ``{method}_auroc_ood`` and
        ``_auroc_shifted`` (entropy score), ``{method}_auroc_ood_variance``; fitted
        hyperparameters ``ntk_gp_prior_scale``, ``ntk_gp_noise``, ``infinite_gp_prior_scale``,
        ``infinite_gp_noise``, ``ensemble_noise``; final cumulative bandit regret
        ``regret_theory`` and ``regret_marglik`` (NaN without a bandit).
        tables: ``evaluation`` (method, split, nll, ece, accuracy, entropy, variance; NaN
        scores on the OOD split), ``regret`` (rule, round, regret).
    """
    train_set, evaluation = _splits(config)
    ntk_train = _infinite_ntk(config, train_set[0])
    lr = config.lr_fraction * 2 * len(ntk_train) / float(torch.linalg.eigvalsh(ntk_train)[-1])
    total = config.ensemble + 3
    model, ensemble, noise = _ensemble(config, train_set, evaluation, lr, progress)
    ntk_gp, ntk_hyper = _ntk_gp(model, train_set, evaluation, config.in_classes)
    progress(config.ensemble + 1, total)
    infinite_gp, infinite_hyper = _infinite_gp(config, train_set, evaluation, ntk_train)
    progress(config.ensemble + 2, total)
    rows, metrics = [], {}
    for method, predictions in zip(METHODS, (ntk_gp, ensemble, infinite_gp), strict=True):
        method_rows, method_metrics = _evaluate(method, predictions, evaluation)
        rows += method_rows
        metrics |= method_metrics
    table = pd.DataFrame(
        rows, columns=["method", "split", "nll", "ece", "accuracy", "entropy", "variance"]
    )
    for row in table[table.split == "in"].itertuples():
        metrics |= {f"{row.method}_{q}": getattr(row, q) for q in ("nll", "ece", "accuracy")}
    regret = _bandit_regret(config)
    progress(total, total)
    final = regret.groupby("rule").regret.last()
    return Result(
        metrics=metrics | {
            "ntk_gp_prior_scale": ntk_hyper.prior_scale, "ntk_gp_noise": ntk_hyper.noise,
            "infinite_gp_prior_scale": infinite_hyper.prior_scale,
            "infinite_gp_noise": infinite_hyper.noise, "ensemble_noise": noise,
        } | {f"regret_{r.value}": float(final.get(r.value, math.nan)) for r in _bandit.BetaRule},
        tables={"evaluation": table, "regret": regret},
    )  # fmt: skip


_LABELS = {"ntk_gp": "eNTK GP (linearized Laplace)", "ensemble": "deep ensemble",
           "infinite_gp": "infinite-NTK GP"}  # fmt: skip
_PANELS = (("nll", "NLL (in-distribution)"), ("ece", "ECE (in-distribution)"),
           ("auroc_ood", "OOD AUROC (held-out classes)"),
           ("auroc_shifted", "AUROC (noisy inputs)"))  # fmt: skip


def _by_width(runs: pd.DataFrame) -> pd.DataFrame:
    """Run metrics averaged over runs of equal width (e.g. seeds), sorted by width."""
    metrics = [c for c in runs.columns if c.startswith("metrics.")]
    return runs.groupby("config.width")[metrics].mean().sort_index()


def _metrics_figure(results: Results) -> Figure:
    """NLL, ECE, OOD and shift AUROC against width, one line per method."""
    figure = Figure(figsize=(10, 7), layout="constrained")
    means = _by_width(results.runs)
    for axes, (metric, title) in zip(figure.subplots(2, 2).flat, _PANELS, strict=True):
        for method in METHODS:
            axes.plot(means.index, means[f"metrics.{method}_{metric}"], "o-",
                      label=_LABELS[method])  # fmt: skip
        axes.set(xscale="log", xlabel="width", title=title)
        axes.set_xticks(means.index, [str(int(w)) for w in means.index])
        axes.minorticks_off()
    figure.axes[0].legend(fontsize="small")
    return figure


def _regret_figure(results: Results) -> Figure:
    """Cumulative regret against round, one line per width and exploration rule."""
    figure = Figure(figsize=(6, 4.5), layout="constrained")
    axes = figure.subplots()
    regret = results.tables["regret"].merge(results.runs[["hash", "config.width"]], on="hash")
    styles = {"theory": "-", "marglik": "--"}
    for (width, rule), group in regret.groupby(["config.width", "rule"]):
        curve = group.groupby("round").regret.mean()
        axes.plot(curve.index, curve, styles[rule], label=f"width {int(width)}, β: {rule}")
    axes.set(xlabel="round", ylabel="cumulative regret (mistakes)",
             title="eNTK UCB on digits as a bandit")  # fmt: skip
    axes.legend(fontsize="small")
    return figure


def figures(results: Results) -> dict[str, Figure]:
    """``metrics_vs_width`` and ``regret``, drawn from stored results."""
    return {"metrics_vs_width": _metrics_figure(results), "regret": _regret_figure(results)}


def captions(results: Results) -> dict[str, str]:
    """The measured answer at the widest width, and its trend, with numbers from the runs."""
    means = _by_width(results.runs)
    wide, narrow = means.iloc[-1], means.iloc[0]
    w, w0 = int(means.index[-1]), int(means.index[0])

    def at(row, metric: str) -> str:
        return ", ".join(f"{_LABELS[m]} {row[f'metrics.{m}_{metric}']:.2f}" for m in METHODS)

    regret = ", ".join(
        f"width {int(width)}: theory β {row['metrics.regret_theory']:.0f}, "
        f"marglik β {row['metrics.regret_marglik']:.0f}"
        for width, row in means.iterrows()
    )
    return {
        "metrics_vs_width": f"At width {w}: OOD AUROC {at(wide, 'auroc_ood')}; NLL "
        f"{at(wide, 'nll')}; ECE {at(wide, 'ece')}. At width {w0}: OOD AUROC "
        f"{at(narrow, 'auroc_ood')}.",
        "regret": f"Cumulative regret after the last round ({regret}).",
    }
