"""Uncertainty vs width: NTK Gaussian process, deep ensemble and infinite NTK, and a bandit.

Wenger, Dangel & Kristiadi ("On the disconnect between theory and practice of neural
networks: limits of the NTK perspective", 2023) ask whether the uncertainty that NTK theory
promises (the NTK Gaussian process, or the linearized Laplace approximation) describes
networks of practical width. One run is one width and one seed of an MLP in NTK
parameterization. It trains ``ensemble`` networks from independent initializations (seeds
1000·seed + k) with MSE on one-hot labels of the in-distribution classes ``0..in_classes−1``
of a task of `ntkscope.data.load_task` (digits, or MNIST pooled to 7×7 or 14×14), and
compares three predictive distributions (`ntkscope.kernels.GaussianProcess`, every output
independent with shared prior scale s and noise σ², both by type-II maximum likelihood):

- ``ntk_gp``: the linearized Laplace approximation in its GP form (Immer, Korzepa & Bauer
  2021; Khan et al. 2019). The first member, trained to θ*, is linearized there:
  f(x; θ) ≈ f(x; θ*) + J(x)(θ − θ*) with J = ∂f/∂θ at θ*, under the prior θ ~ N(θ_0, s I)
  centred at its initialization θ_0. That is the GP with kernel s·Θ̂ (Θ̂ = J Jᵀ, the
  end-of-training trace eNTK) and prior mean m(x) = f(x; θ*) + J(x)(θ_0 − θ*), the
  linearized network evaluated at θ_0 (one Jacobian-vector product, `ntkscope.linearize`).
  Its evidence sees the whole move Y − m(X) = (Y − f(X; θ*)) + J(X)(θ* − θ_0), not only the
  residuals left at the training tolerance; with prior mean f(x; θ*) instead, type-II
  maximum likelihood picks a vanishing s and a latent variance that tells no inputs apart
  (measured: s ≈ 1.6e-6, OOD AUROC ≈ 0.5 at width 1024).
- ``ensemble``: the members' mean, and their variance (ddof 1, averaged over outputs) plus
  the mean squared training residual of the ensemble mean (the maximum-likelihood noise);
- ``infinite_gp``: the GP with the infinite-width NTK and zero prior mean (the network of
  infinite width trained to convergence, averaged over initializations).

Class probabilities (regression on labels): p(c | x) = P(y_c = max_j y_j) for independent
y_j ~ N(μ_j, v) with the shared predictive variance v (latent + noise), computed by 32-point
Gauss–Hermite quadrature of E_z[Π_{j≠c} Φ((μ_c − μ_j)/√v + z)], then normalized. It tends
to one-hot as v → 0 and to uniform as v → ∞.

Training rule (the same at every width, `ntkscope.studies._fit`): full-batch gradient
descent on ½‖f(X) − Y‖²/N with learning rate c·N/λ_max(Θ̂_0(X, X)) (Θ̂_0 the member's own
trace eNTK at initialization, c = ``lr_scale``, as `ntkscope.diagnose` sets it) until the
training loss falls to ``tolerance`` times its initial value or ``max_steps`` steps. Steps,
final relative loss and training accuracy of every member are recorded. Networks are
trained in float32 and evaluated (eNTK, GP) in float64.

Data: the in-distribution training images are the first ``n_train`` of the task's seeded
training pool, the bandit's contexts the next ``bandit_rounds`` ones; the evaluation sets
come from the task's fixed test split (the same for every seed): its first ``n_test``
in-distribution images, its first ``n_test`` images of the held-out classes (OOD), and the
in-distribution ones with Gaussian pixel noise of a fixed seed (shifted, re-standardized).
Evaluated on each, with the metrics of `ntkscope.metrics`: negative log-likelihood,
expected calibration error (15 equal-width bins of the top probability), accuracy, and the
AUROC of separating in-distribution from OOD / shifted inputs by predictive entropy (and by
predictive variance). Then the bandit of
`ntkscope.studies._bandit` (the in-distribution classes as arms) under the NTK-theory, the
marginal-likelihood and the greedy (β = 0) exploration rules.

Presets (sized by the quick preset's measurement): the OOD-AUROC gap between the ensemble
and the infinite-NTK GP falls from 0.053 (width 64) to 0.040 (width 1024) over 2 seeds,
with a t interval 12.7 standard errors wide. A first ``standard`` run of 10 seeds measured
a fall of −0.0005 [−0.016, 0.015]; ``standard`` now runs 50 seeds (150 runs, ~8
CPU-minutes estimated), an interval about √5 times narrower, ±0.007, under the claim's
smallest effect (a quarter of the narrowest width's gap, about 0.009;
`ntkscope.studies._claims.closes_with_width`).
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

from ntkscope import models
from ntkscope.data import TaskName, load_task
from ntkscope.data._preprocess import standardize
from ntkscope.dynamics import linearize
from ntkscope.kernels import GaussianProcess, empirical_ntk, infinite_kernels
from ntkscope.metrics import expected_calibration_error, negative_log_likelihood, ood_auroc
from ntkscope.models import ActivationName
from ntkscope.studies import _bandit
from ntkscope.studies._base import Progress, Result, Results, StudyConfig, extended
from ntkscope.studies._claims import Claim, closes_with_width
from ntkscope.studies._cost import (
    Cost,
    cost_of,
    entk_floats,
    entk_flops,
    infinite_flops,
    mlp,
    task_shape,
    train_flops,
)
from ntkscope.studies._fit import FitRule, fit

__all__ = ["METHODS", "PRESETS", "Config", "captions", "claims", "cost", "figures", "run"]

METHODS = ("ntk_gp", "ensemble", "infinite_gp")
"""The predictive distributions compared (module docstring)."""
SPLITS = ("in", "ood", "shifted")
"""Evaluation sets: in-distribution test, held-out classes, noisy test images."""
TASKS = (TaskName.DIGITS, TaskName.MNIST)
"""Ten-class tasks whose classes split into in-distribution and OOD."""
_NOISE_SEED = 0
"""Seed of the shifted set's pixel noise, fixed like the test split."""
_HERMITE = np.polynomial.hermite_e.hermegauss(32)
"""Gauss–Hermite nodes and weights for E_z[g(z)], z ~ N(0, 1) (weights sum to √(2π))."""


class Config(StudyConfig):
    """One width and seed: an ensemble of MLPs on the in-distribution classes, and the bandit."""

    task: TaskName = TaskName.DIGITS
    """Ten-class task of `ntkscope.data.load_task`: digits (8×8) or mnist (see image_size)."""
    image_size: PositiveInt | None = None
    """Side of the images after average pooling (mnist: 7 or 14); None keeps the native size."""
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
    n_test: PositiveInt = 150
    """Images in each evaluation set (in, OOD, shifted)."""
    shift_noise: PositiveFloat = 1.0
    """Standard deviation of the Gaussian pixel noise of the shifted set (pixels have sd 1)."""
    ensemble: int = 3
    """Independently initialized networks (at least 2); the first one gives the eNTK."""
    lr_scale: float = Field(1.0, gt=0.0, lt=2.0)
    """c in the learning rate c·N/λ_max(Θ̂_0) (below 2: stable for the linearized network)."""
    tolerance: float = Field(1e-2, gt=0.0, lt=1.0)
    """Training stops when the training MSE is at most this fraction of its initial value."""
    max_steps: PositiveInt = 3000
    """Cap on the gradient descent steps of one training."""
    bandit_rounds: NonNegativeInt = 300
    """Bandit rounds T (0 skips the bandit)."""
    bandit_retrain_every: PositiveInt = 50
    """Rounds between retrainings (and eNTK recomputations) of the bandit's network."""
    ridge: PositiveFloat = 1.0
    """Ridge λ of the theory rule (prior scale 1/λ, noise 1)."""
    delta: float = Field(0.1, gt=0.0, lt=1.0)
    """Confidence level δ of both exploration rules."""
    reward_noise: PositiveFloat = 0.5
    """Sub-Gaussian constant ν of the rewards (1/2 for rewards in {0, 1})."""
    norm_bound: PositiveFloat = 1.0
    """Bound S on the reward function's norm in the theory rule's β."""
    seed: NonNegativeInt = 0
    """Seed of the training/bandit draw and of the initializations (the test split is fixed)."""

    @field_validator("ensemble")
    @classmethod
    def _at_least_two(cls, value: int) -> int:
        if value < 2:
            raise ValueError("ensemble: expected at least 2 members (one network has no spread)")
        return value

    @field_validator("task")
    @classmethod
    def _ten_classes(cls, value: TaskName) -> TaskName:
        if value not in TASKS:
            raise ValueError(
                f"task: expected one of {[t.value for t in TASKS]}, got {value.value!r}"
            )
        return value

    @property
    def fit_rule(self) -> FitRule:
        """The training rule of every network (module docstring)."""
        return FitRule(self.lr_scale, self.tolerance, self.max_steps)


_QUICK = {
    "fixed": {
        "n_train": 200,
        "n_test": 150,
        "ensemble": 3,
        "bandit_rounds": 100,
        "bandit_retrain_every": 25,
    },
    "product": {"width": [64, 256, 1024], "seed": [0, 1]},
}

PRESETS = {
    "quick": _QUICK,
    "standard": extended(_QUICK, seed={"range": [0, 50]}),
    "paper": {
        "fixed": {
            "task": "mnist",
            "image_size": 14,
            "n_train": 1000,
            "n_test": 400,
            "ensemble": 10,
            "max_steps": 20000,
            "bandit_rounds": 800,
            "bandit_retrain_every": 100,
        },
        "product": {
            "width": [64, 128, 256, 512, 1024, 2048, 4096, 8192],
            "depth": [1, 2],
            "seed": [0, 1, 2],
        },
    },
}


def cost(config: Config) -> Cost:
    """Estimated time and peak memory of a run (`ntkscope.studies.Cost`): ``ensemble``
    networks trained for at most ``max_steps`` full-batch steps (an upper bound), their eNTKs
    on the training set and to the three evaluation sets, the infinite GP; then, per rule
    of the bandit, a retraining on the rounds so far every ``bandit_retrain_every`` rounds
    and the eNTK on all the contexts."""
    net = mlp(task_shape(config.task, 64, config.image_size)[2], config.width, config.depth,
              config.in_classes)  # fmt: skip
    n, n_eval = config.n_train, 3 * config.n_test
    member = train_flops(n, net, config.max_steps) + entk_flops(n, n, net)
    member += entk_flops(n_eval, n, net) + entk_flops(n_eval, n_eval, net)
    work = config.ensemble * member + infinite_flops(n + n_eval, n, config.depth)
    rounds, every = config.bandit_rounds, config.bandit_retrain_every
    refits = rounds // every
    bandit = sum(train_flops(k * every, net, config.max_steps) for k in range(1, refits + 1))
    bandit += (refits + 1) * entk_flops(rounds, rounds, net)
    rules = len(_bandit.BetaRule)
    work += rules * bandit
    fits = config.ensemble + rules * refits
    floats = 5 * net.params + entk_floats(n_eval, net) + 4 * (n + n_eval) ** 2 + 2 * rounds**2
    return cost_of(
        "uncertainty",
        work,
        floats,
        entks=3 * config.ensemble + rules * (refits + 1),
        steps=fits * config.max_steps,
    )


def _splits(config: Config):
    """Training (x, labels), bandit contexts (x, labels) and the evaluation sets
    {split: (x, labels)}, float64 (module docstring)."""
    task = load_task(config.task, n_val=0, seed=config.seed, dtype=torch.float64,
                     image_size=config.image_size)  # fmt: skip
    train, test = task.train, task.test
    inside = train.y < config.in_classes
    x, y = train.x[inside], train.y[inside]
    test_in, test_out = test.y < config.in_classes, test.y >= config.in_classes
    n, t, m = config.n_train, config.bandit_rounds, config.n_test
    if len(y) < n + t or int(test_in.sum()) < m or int(test_out.sum()) < m:
        raise ValueError(
            f"n_train, bandit_rounds, n_test: {task.name!r} has {len(y)} in-distribution "
            f"training images and {int(test_in.sum())} / {int(test_out.sum())} in / OOD test "
            f"images, asked for {n} + {t} and {m}"
        )
    x_in, y_in = test.x[test_in][:m], test.y[test_in][:m]
    noise = torch.randn(x_in.shape, generator=torch.Generator().manual_seed(_NOISE_SEED),
                        dtype=torch.float64)  # fmt: skip
    evaluation = {
        "in": (x_in, y_in),
        "ood": (test.x[test_out][:m], test.y[test_out][:m]),
        "shifted": (standardize(x_in + config.shift_noise * noise, f"{task.name} (shifted)"), y_in),
    }
    return (x[:n], y[:n]), (x[n : n + t], y[n : n + t]), evaluation


def _network(config: Config, d_in: int, d_out: int, seed: int) -> torch.nn.Module:
    """A float32 MLP of the config (trained in float32, evaluated after ``.double()``)."""
    return models.mlp(
        d_in, config.width, config.depth, d_out, activation=config.activation,
        sigma_w=config.sigma_w, sigma_b=config.sigma_b, seed=seed,
    )  # fmt: skip


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


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.maximum(p, 1e-300))).sum(axis=1)


def _ensemble(config, train_set, evaluation, progress):
    """Train the members by the fit rule; return member 0 (float64), {split: (mean, latent
    variance, noise)} of the ensemble, its noise, and the members' training table."""
    (x, y), members, rows = train_set, [], []
    one_hot = torch.nn.functional.one_hot(y, config.in_classes).to(torch.float64)
    outputs = {split: [] for split in ("train", *SPLITS)}
    for k in range(config.ensemble):
        model = _network(config, x.shape[1], config.in_classes, 1000 * config.seed + k)
        kernel = empirical_ntk(model, x.float())
        result = fit(model, x, one_hot, kernel, config.fit_rule)
        model.double()
        members.append(model)
        with torch.no_grad():
            outputs["train"].append(model(x))
            for split, (xs, _) in evaluation.items():
                outputs[split].append(model(xs))
        accuracy = float((outputs["train"][-1].argmax(1) == y).double().mean())
        rows.append((k, result.steps, result.relative_loss, accuracy))
        progress(k + 1, config.ensemble + 3)
    noise = float((torch.stack(outputs["train"]).mean(0) - one_hot).pow(2).mean())
    predictive = {
        split: (torch.stack(o).mean(0), torch.stack(o).var(0).mean(1), noise)
        for split, o in outputs.items() if split != "train"
    }  # fmt: skip
    table = pd.DataFrame(rows, columns=["member", "steps", "relative_loss", "accuracy"])
    return members[0], predictive, noise, table


def _gp_predictions(gp, hyper, cross, diagonal, means):
    return {
        split: (p.mean, p.latent_variance, hyper.noise)
        for split in SPLITS
        for p in [gp.predict(cross[split], diagonal[split], hyper, prior_mean_test=means[split])]
    }


def _ntk_gp(model, initial, train_set, evaluation, n_classes):
    """The linearized-Laplace GP of the trained ``model`` with its prior centred at the
    ``initial`` network's parameters (module docstring); its fitted (s, σ²)."""
    x, y = train_set
    one_hot = torch.nn.functional.one_hot(y, n_classes).to(torch.float64)
    prior = linearize(model)
    with torch.no_grad():
        for theta, theta0 in zip(prior.linear_parameters, initial.parameters(), strict=True):
            theta.copy_(theta0)
        means = {split: prior(xs) for split, (xs, _) in evaluation.items()}
        gp = GaussianProcess(empirical_ntk(model, x), one_hot, prior_mean=prior(x))
    hyper = gp.fit_hyperparameters()
    cross = {split: empirical_ntk(model, xs, x) for split, (xs, _) in evaluation.items()}
    diagonal = {s: empirical_ntk(model, xs, diagonal=True) for s, (xs, _) in evaluation.items()}
    return _gp_predictions(gp, hyper, cross, diagonal, means), hyper


def _infinite_gp(config, train_set, evaluation):
    """The infinite-NTK GP with zero prior mean; its fitted (s, σ²)."""
    x, y = train_set
    gp = GaussianProcess(
        _infinite_ntk(config, x), torch.nn.functional.one_hot(y, config.in_classes).double()
    )
    hyper = gp.fit_hyperparameters()
    cross = {split: _infinite_ntk(config, xs, x) for split, (xs, _) in evaluation.items()}
    diagonal = {s: _infinite_ntk(config, xs, diagonal=True) for s, (xs, _) in evaluation.items()}
    return _gp_predictions(gp, hyper, cross, diagonal, dict.fromkeys(SPLITS)), hyper


def _evaluate(method: str, predictions, evaluation) -> tuple[list[tuple], dict[str, float]]:
    """Rows (method, split, nll, ece, accuracy, entropy, latent_variance, variance) and the
    AUROC metrics, from {split: (mean, latent variance, noise)}."""
    rows, entropy, variance = [], {}, {}
    for split, (mean, latent, noise) in predictions.items():
        var = latent + noise
        p, labels = torch.from_numpy(class_probabilities(mean, var)), evaluation[split][1]
        entropy[split], variance[split] = torch.from_numpy(_entropy(p.numpy())), var
        if split == "ood":  # held-out classes have no label among the outputs
            scores = (math.nan,) * 3
        else:
            scores = (negative_log_likelihood(p, labels), expected_calibration_error(p, labels),
                      float((p.argmax(1) == labels).double().mean()))  # fmt: skip
        rows.append((method, split, *scores, float(entropy[split].mean()), float(latent.mean()),
                     float(var.mean())))  # fmt: skip
    metrics = {
        f"{method}_auroc_{split}": ood_auroc(entropy["in"], entropy[split]) for split in SPLITS[1:]
    } | {f"{method}_auroc_ood_variance": ood_auroc(variance["in"], variance["ood"])}
    return rows, metrics


def _bandit_regret(config: Config, contexts) -> pd.DataFrame:
    """Cumulative regret per rule and round: columns rule, round, regret (empty if T = 0)."""
    if config.bandit_rounds == 0:
        return pd.DataFrame({"rule": [], "round": [], "regret": []})
    x, labels = contexts
    settings = _bandit.BanditSettings(
        config.ridge, config.delta, config.reward_noise, config.norm_bound,
        config.bandit_retrain_every, config.fit_rule,
    )  # fmt: skip
    frames = []
    for rule in _bandit.BetaRule:
        model = _network(config, x.shape[1], config.in_classes, 1000 * config.seed)
        regret = _bandit.play(model, x, labels, rule, settings)
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
        ``infinite_gp_noise``, ``ensemble_noise``; the members' mean ``train_steps``,
        ``train_relative_loss`` and ``train_accuracy``; final cumulative bandit regret
        ``regret_theory``, ``regret_marglik`` and ``regret_greedy`` (NaN without a bandit).
        tables: ``evaluation`` (method, split, nll, ece, accuracy, mean predictive entropy,
        latent_variance Var[f] and predictive variance Var[y] = latent + noise; NaN scores on
        the OOD split), ``training`` (member, steps, relative_loss, accuracy),
        ``regret`` (rule, round, regret).
    """
    train_set, contexts, evaluation = _splits(config)
    total = config.ensemble + 3
    model, ensemble, noise, training = _ensemble(config, train_set, evaluation, progress)
    initial = _network(config, train_set[0].shape[1], config.in_classes, 1000 * config.seed)
    ntk_gp, ntk_hyper = _ntk_gp(model, initial.double(), train_set, evaluation, config.in_classes)
    progress(config.ensemble + 1, total)
    infinite_gp, infinite_hyper = _infinite_gp(config, train_set, evaluation)
    progress(config.ensemble + 2, total)
    rows, metrics = [], {}
    for method, predictions in zip(METHODS, (ntk_gp, ensemble, infinite_gp), strict=True):
        method_rows, method_metrics = _evaluate(method, predictions, evaluation)
        rows += method_rows
        metrics |= method_metrics
    table = pd.DataFrame(
        rows, columns=["method", "split", "nll", "ece", "accuracy", "entropy", "latent_variance",
                       "variance"],
    )  # fmt: skip
    for row in table[table.split == "in"].itertuples():
        metrics |= {f"{row.method}_{q}": getattr(row, q) for q in ("nll", "ece", "accuracy")}
    regret = _bandit_regret(config, contexts)
    progress(total, total)
    final = regret.groupby("rule").regret.last()
    return Result(
        metrics=metrics | {
            "ntk_gp_prior_scale": ntk_hyper.prior_scale, "ntk_gp_noise": ntk_hyper.noise,
            "infinite_gp_prior_scale": infinite_hyper.prior_scale,
            "infinite_gp_noise": infinite_hyper.noise, "ensemble_noise": noise,
        } | {f"train_{q}": float(training[q].mean()) for q in ("steps", "relative_loss",
                                                                "accuracy")}
        | {f"regret_{r.value}": float(final.get(r.value, math.nan)) for r in _bandit.BetaRule},
        tables={"evaluation": table, "training": training, "regret": regret},
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


_STYLES = {"theory": "-", "marglik": "--", "greedy": ":"}


def _regret_figure(results: Results) -> Figure:
    """Cumulative regret against round (mean over seeds), one line per width and rule."""
    figure = Figure(figsize=(6, 4.5), layout="constrained")
    axes = figure.subplots()
    regret = results.tables["regret"].merge(results.runs[["hash", "config.width"]], on="hash")
    for (width, rule), group in regret.groupby(["config.width", "rule"]):
        curve = group.groupby("round").regret.mean()
        axes.plot(curve.index, curve, _STYLES[rule], label=f"width {int(width)}, β: {rule}")
    axes.set(xlabel="round", ylabel="cumulative regret (mistakes)",
             title="eNTK UCB on the in-distribution classes as a bandit")  # fmt: skip
    axes.legend(fontsize="small")
    return figure


def figures(results: Results) -> dict[str, Figure]:
    """``metrics_vs_width`` and ``regret``, drawn from stored results."""
    return {"metrics_vs_width": _metrics_figure(results), "regret": _regret_figure(results)}


def _closer(row) -> str:
    """Which finite-width method's OOD AUROC is nearer the infinite-NTK GP's."""
    gap = {m: abs(row[f"metrics.{m}_auroc_ood"] - row["metrics.infinite_gp_auroc_ood"])
           for m in ("ntk_gp", "ensemble")}  # fmt: skip
    near, far = sorted(gap, key=gap.get)
    return f"the {_LABELS[near]} is nearer the infinite-NTK GP than the {_LABELS[far]}"


def captions(results: Results) -> dict[str, str]:
    """The measured answer at the widest and narrowest widths, means over seeds."""
    runs = results.runs
    means = _by_width(runs)
    seeds = runs.groupby("config.width").size().max()
    over = f"mean over {seeds} seeds" if seeds > 1 else "one seed"
    wide, narrow = means.iloc[-1], means.iloc[0]
    w, w0 = int(means.index[-1]), int(means.index[0])

    def at(row, metric: str) -> str:
        return ", ".join(f"{_LABELS[m]} {row[f'metrics.{m}_{metric}']:.2f}" for m in METHODS)

    def trained(row) -> str:
        return (f"{row['metrics.train_steps']:.0f} steps, train accuracy "
                f"{row['metrics.train_accuracy']:.2f}")  # fmt: skip

    regret = "; ".join(
        f"width {int(width)}: " + ", ".join(
            f"{rule} β {row[f'metrics.regret_{rule}']:.0f}" for rule in _STYLES
        ) for width, row in means.iterrows()
    )  # fmt: skip
    best = min(_STYLES, key=lambda rule: wide[f"metrics.regret_{rule}"])
    return {
        "metrics_vs_width": f"At width {w} ({over}): OOD AUROC {at(wide, 'auroc_ood')}, so "
        f"{_closer(wide)}; NLL {at(wide, 'nll')}; ECE {at(wide, 'ece')}. At width {w0}: OOD "
        f"AUROC {at(narrow, 'auroc_ood')}; NLL {at(narrow, 'nll')}. Every member trained to "
        f"train MSE ≤ {runs['config.tolerance'].iloc[0]:g} × initial: {trained(narrow)} at "
        f"width {w0}, {trained(wide)} at width {w}.",
        "regret": f"Cumulative eNTK-UCB regret after {int(runs['config.bandit_rounds'].max())} "
        f"rounds ({over}; {regret}); lowest at width {w}: {best} β.",
    }


def claims(results: Results) -> list[Claim]:
    """The ensemble's OOD AUROC against the infinite-NTK GP's, narrow against wide."""
    runs = results.runs
    gap = (runs["metrics.ensemble_auroc_ood"] - runs["metrics.infinite_gp_auroc_ood"]).abs()
    measured, finding, rule = closes_with_width(runs, gap)
    return [
        Claim(
            "a deep ensemble's uncertainty approaches the NTK Gaussian process's only as width "
            "grows",
            "Wenger, Dangel & Kristiadi 2023",
            f"|OOD AUROC ensemble − infinite-NTK GP|, {measured}",
            finding,
            rule,
        )
    ]
