"""A classification data set as a contextual bandit, played by an eNTK UCB agent.

Round t shows a context x_t (an image); the agent picks an arm a (a class) and receives
reward 1 if a is x_t's label, else 0, so the regret of a round is 1 − reward and the
cumulative regret counts mistakes. The agent (NeuralUCB, Zhou, Li & Gu 2020, in its kernel
form) keeps a network f with one output per arm, trained every ``retrain_every`` rounds by
full-batch gradient descent on ½ Σ_i (f_{a_i}(x_i) − r_i)² / n over the rounds so far (by
the width-independent rule of `ntkscope.studies._fit`, learning rate from the current eNTK), and
picks ``argmax_a μ_t(x_t, a) + β_t σ_t(x_t, a)``, where μ_t and σ_t² are the posterior mean
and latent variance of the GP on the observed (x_i, a_i, r_i) with prior mean f (the
linearized-Laplace view, `ntkscope.kernels.GaussianProcess`) and kernel
k((x, a), (x', a')) = Θ̂(x, x') · [a = a'], Θ̂ the trace eNTK of the current network.

Three rules set the GP's scale and β_t:

- ``theory``: ridge λ (prior scale s = 1/λ, noise 1), so that σ_t² = gᵀZ⁻¹g with
  Z = λI + Σ_i g_i g_iᵀ, g the network's gradient (NeuralUCB's exploration term), and the
  confidence width of kernelized linear bandits (Abbasi-Yadkori et al. 2011; Chowdhury &
  Gopalan 2017), the m → ∞ limit of NeuralUCB's γ_t:
  β_t = ν √(log det(I + K_t/λ) + 2 log(1/δ)) + √λ · S.
- ``marglik``: (s, σ²) maximize the GP's log marginal likelihood on the rounds so far,
  refitted at every retraining (online type-II maximum likelihood), and β = √(2 log(1/δ)),
  the one-sided Gaussian quantile at level δ.
- ``greedy``: β = 0 with the ``theory`` scale, i.e. argmax of the posterior mean (no
  exploration): the baseline against which exploration must pay off.

Simplifications: arms are independent GPs sharing the trace eNTK (exact for the infinite
NTK, Θ ⊗ I; NeuralUCB's gradient features give the full eNTK); the eNTK is recomputed only
when the network is retrained (on all T contexts at once, which reveals no reward); the
terms of NeuralUCB's γ_t that vanish as m^(-1/6) are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch

from ntkscope.kernels import GaussianProcess, GPHyperparameters, empirical_ntk
from ntkscope.studies._fit import FitRule, fit


class BetaRule(StrEnum):
    """How the agent scales its exploration (module docstring)."""

    THEORY = "theory"
    MARGLIK = "marglik"
    GREEDY = "greedy"


@dataclass(frozen=True)
class BanditSettings:
    """ridge λ, confidence δ, reward sub-Gaussian constant ν, norm bound S, training."""

    ridge: float
    delta: float
    noise_scale: float
    norm_bound: float
    retrain_every: int
    fit: FitRule


def _gp(kernel, outputs, arms, rewards, t) -> GaussianProcess:
    """The GP on rounds 0..t−1: kernel Θ̂(x_i, x_j)·[a_i = a_j], prior mean f_{a_i}(x_i)."""
    same = (arms[:t, None] == arms[None, :t]).to(kernel.dtype)
    prior = outputs[torch.arange(t), arms[:t]]
    return GaussianProcess(kernel[:t, :t] * same, rewards[:t], prior_mean=prior)


def _ucb(gp, kernel, outputs, arms, t, hyper, beta) -> torch.Tensor:
    """μ_t(x_t, a) + β σ_t(x_t, a) for every arm a, (A,)."""
    n_arms = outputs.shape[1]
    mask = (arms[None, :t] == torch.arange(n_arms)[:, None]).to(kernel.dtype)
    cross = kernel[t, :t][None, :] * mask
    prediction = gp.predict(
        cross, kernel[t, t].expand(n_arms), hyper, prior_mean_test=outputs[t][:, None]
    )
    return prediction.mean[:, 0] + beta * prediction.latent_variance.sqrt()


def _current(model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's trace eNTK (T, T) and outputs (T, A) on all contexts, float64."""
    with torch.no_grad():
        outputs = model(inputs).double()
    return empirical_ntk(model, inputs).double(), outputs


def play(model, x, labels, rule: BetaRule, settings: BanditSettings) -> np.ndarray:
    """Cumulative regret after each of the T = len(x) rounds, (T,).

    Round 0 picks the network's largest output. The ``marglik`` rule starts from the
    ``theory`` scale (s = 1/λ, σ² = 1) and refits (s, σ²) at every retraining.
    """
    n_rounds = len(x)
    inputs = x.to(next(model.parameters()))  # the network's dtype
    arms = torch.zeros(n_rounds, dtype=torch.int64)
    rewards = torch.zeros(n_rounds, dtype=x.dtype)
    hyper = GPHyperparameters(1.0 / settings.ridge, 1.0)
    kernel, outputs = _current(model, inputs)
    for t in range(n_rounds):
        if t > 0 and t % settings.retrain_every == 0:
            fit(model, inputs[:t], rewards[:t], kernel[:t, :t], settings.fit, arms[:t])
            kernel, outputs = _current(model, inputs)
        if t == 0:
            arms[0] = int(torch.argmax(outputs[0]))
        else:
            gp = _gp(kernel, outputs, arms, rewards, t)
            if rule is BetaRule.MARGLIK and t % settings.retrain_every == 0:
                hyper = gp.fit_hyperparameters()
            beta = _beta(rule, kernel, arms, t, settings)
            arms[t] = int(torch.argmax(_ucb(gp, kernel, outputs, arms, t, hyper, beta)))
        rewards[t] = float(arms[t] == labels[t])
    return np.cumsum(1.0 - rewards.numpy())


def _beta(rule: BetaRule, kernel, arms, t, settings: BanditSettings) -> float:
    """β_t of the rule; theory: ν √(log det(I + K_t/λ) + 2 log(1/δ)) + √λ S on the rounds so far."""
    if rule is BetaRule.GREEDY:
        return 0.0
    if rule is BetaRule.MARGLIK:
        return math.sqrt(2 * math.log(1 / settings.delta))
    same = (arms[:t, None] == arms[None, :t]).to(kernel.dtype)
    gram = kernel[:t, :t] * same / settings.ridge
    log_det = float(torch.linalg.slogdet(torch.eye(t, dtype=kernel.dtype) + gram)[1])
    return (
        settings.noise_scale * math.sqrt(log_det + 2 * math.log(1 / settings.delta))
        + math.sqrt(settings.ridge) * settings.norm_bound
    )
