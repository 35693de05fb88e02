"""Dual activations: the Gaussian expectations that drive the infinite-width recursions.

For (u, v) ~ N(0, [[q1, c], [c, q2]]) the dual of an activation φ is the pair

    E[φ(u) φ(v)]   and   E[φ'(u) φ'(v)],

the two expectations in the NNGP and NTK recursions of docs/conventions.md. `for_activation`
turns a name, a torch activation module or function, or any elementwise callable into a
`Dual`, which evaluates both on broadcast tensors (q1, q2, c).

Closed forms (`ntkscope.kernels._closed_duals`, a few ulps): relu, leaky_relu (any slope),
abs, identity, erf, exact gelu, sin, cos, sign, step. Everything else (tanh, sigmoid, silu,
softplus, elu, mish, any callable): the Mehler series of `ntkscope.kernels._series_dual`,
with error ≤ 1e-9 relative to √(E[φ(u)²] E[φ(v)²]) for q ∈ [1e-4, 1e2] and every ρ.

Relative error, throughout: |error| / √(E[f(u)²] E[f(v)²]), the Cauchy–Schwarz bound on
|E[f(u) f(v)]| (f = φ or φ'). It is the natural scale when the expectation itself crosses
zero (odd φ at ρ = 0), where a plain relative error is undefined.

Measured maximum relative error of E[φφ] / E[φ'φ'] over the 200 points (q1, q2, ρ) of
tests/kernels/data/duals (q log-uniform in [1e-4, 1e2], a third of ρ within 1e-7..1e-1 of
±1, corners at q = 1e-4, 1, 100 with ρ = ±1, 0.999) against nested adaptive quadrature:

    closed forms   relu 6e-15 / 2e-13   leaky_relu 6e-15 / 2e-13   abs 1e-14 / 3e-13
                   identity 1e-15 / 7e-16   gelu 7e-16 / 9e-16   sin 5e-13 / 2e-14
                   sign 3e-13 / 0        (erf, cos, step: ≤ 1e-12, tested)
    series         tanh 3e-13 / 5e-11   sigmoid 1e-13 / 3e-11   silu 2e-11 / 4e-11
                   softplus 8e-12 / 1e-11   elu 2e-13 / 1e-11   mish 4e-12 / 2e-11

The series' truncation is certified per entry at 1e-10 (`_series_dual.TOLERANCE`); its
coefficients and the 2-D fallback rule are accurate to ~1e-12 (measured above). Cost per
entry: ~4 flops per term (Horner's rule on whole tiles, at the length the tile needs: 11–15
terms for tanh and SiLU in benchmarks/infinite.py) where the series certifies, which is
every ρ for smooth φ at q ≲ 10 and |ρ| ≤ 0.914 always; the coefficients once per input and
layer (~2.6·10³ evaluations of φ and φ'); ~2·10⁵ evaluations of φ for the rare entries with
large q at |ρ| near 1 (2-D rule). sign and step: φ' = 0, as autograd differentiates
them (their distributional derivative would make the NTK infinite at x = x').
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from ntkscope.kernels import _closed_duals as closed
from ntkscope.kernels._closed_duals import THETA_SNAP as RELU_THETA_SNAP
from ntkscope.kernels._series_dual import SeriesDual
from ntkscope.models.activations import (
    LEAKY_RELU_SLOPE,
    Activation,
    ActivationName,
    Elementwise,
    resolve_activation,
)

Pair = tuple[torch.Tensor, torch.Tensor]
ActivationLike = str | Elementwise | Activation

__all__ = [
    "CLOSED_FORMS",
    "RELU_THETA_SNAP",
    "ActivationLike",
    "Dual",
    "Pair",
    "Spread",
    "dual",
    "dual_diagonal",
    "for_activation",
    "spread",
]

_Formula = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Pair]
"""(q1, q2, ρ) -> (E[φ(u) φ(v)], E[φ'(u) φ'(v)]) on broadcastable float64 tensors."""
_Moments = Callable[[torch.Tensor], Pair]
"""q -> (E[φ(√q z)], E[φ'(√q z)]), z ~ N(0, 1), elementwise."""
_Layer = Callable[..., None]
"""An MLP layer in place on a tile (`_closed_duals.piecewise_linear_layer` less its slope)."""
_Block = Callable[..., Pair]
"""A CNN block's activation in place (`_closed_duals.piecewise_linear_block` less its slope)."""


def _piecewise(slope: float) -> tuple[_Formula, _Moments, _Layer, _Block]:
    """The dual, the first moments, the in-place MLP layer and CNN activation of φ(x) = x
    for x > 0, ``slope``·x below."""
    return (
        functools.partial(closed.piecewise_linear, slope),
        functools.partial(closed.piecewise_linear_moments, slope),
        functools.partial(closed.piecewise_linear_layer, slope),
        functools.partial(closed.piecewise_linear_block, slope),
    )


_CLOSED: dict[
    ActivationName, tuple[_Formula, _Moments] | tuple[_Formula, _Moments, _Layer, _Block]
] = {
    ActivationName.RELU: _piecewise(0.0),
    ActivationName.LEAKY_RELU: _piecewise(LEAKY_RELU_SLOPE),
    ActivationName.ABS: _piecewise(-1.0),
    ActivationName.IDENTITY: (closed.identity, closed.identity_moments),
    ActivationName.ERF: (closed.erf, closed.erf_moments),
    ActivationName.GELU: (closed.gelu, closed.gelu_moments),
    ActivationName.SIN: (closed.sin, closed.sin_moments),
    ActivationName.COS: (closed.cos, closed.cos_moments),
    ActivationName.SIGN: (closed.sign, closed.sign_moments),
    ActivationName.STEP: (closed.step, closed.step_moments),
}
"""The closed forms (`_closed_duals`, a few ulps): the dual (E[φ(u)φ(v)], E[φ'(u)φ'(v)]) and
the first moments (E[φ(u)], E[φ'(u)]), u ~ N(0, q)."""

CLOSED_FORMS = frozenset(_CLOSED)
"""Built-in activations whose duals are computed exactly, by a formula."""

_CLOSED_ARRAYS: dict[ActivationName, int] = {
    ActivationName.RELU: 9,
    ActivationName.LEAKY_RELU: 10,
    ActivationName.ABS: 10,
    ActivationName.IDENTITY: 6,
    ActivationName.ERF: 10,
    ActivationName.GELU: 20,
    ActivationName.SIN: 12,
    ActivationName.COS: 12,
    ActivationName.SIGN: 7,
    ActivationName.STEP: 7,
}
"""float64 values per entry held while a tile's layer evaluates a closed form out of place
(`Dual.given`: the CNN, `infinite_width`, and the MLP but for `Dual.layer`), the layer's
input NNGP and NTK included: the peak resident memory of a 1000×1000 tile of the MLP
recursion (`ntkscope.kernels.infinite`), rounded up with 5–20% to spare (measured, in
values: relu 8.2, leaky_relu 8.7, abs 8.4, identity 5.1, erf 9.2, gelu 18.2, sin and cos
10.2, sign 6.6, step 6.2; tests/kernels/test_memory_budget.py). A single 16 for all of
them kept small budgets' tiles half as large as they can be for ReLU, and was short for
GELU."""


@dataclass(frozen=True)
class Dual:
    """The dual of one activation φ: both expectations as functions of (q1, q2, c).

    Attributes:
        name: the activation's name (with its parameter, e.g. ``leaky_relu(0.2)``).
        exact: True for a closed form, False for the numerical series.
        arrays: float64 values of working memory per entry (tiles are sized by it).
        layer: for the piecewise-linear φ, the MLP layer in place on a tile
            (`_closed_duals.piecewise_linear_layer`: `LAYER_ARRAYS` values per entry, the
            layer's input and output kernels included), else None.
        block: for the piecewise-linear φ, a CNN block's activation in place
            (`_closed_duals.piecewise_linear_block`: one array more than its input
            kernels), else None.
    """

    name: str
    exact: bool
    arrays: int
    formula: _Formula
    moments: _Moments | None = None
    layer: _Layer | None = None
    block: _Block | None = None

    def __call__(self, q1: torch.Tensor, q2: torch.Tensor, c: torch.Tensor) -> Pair:
        """(E[φ(u) φ(v)], E[φ'(u) φ'(v)]) for (u, v) ~ N(0, [[q1, c], [c, q2]]).

        Args:
            q1: Σ(x, x) ≥ 0, broadcastable with ``q2`` and ``c`` (e.g. (N1, 1) against
                (1, N2)); the numerical series computes its coefficients once per element
                of ``q1`` and of ``q2`` as given, so pass them unexpanded.
            q2: Σ(x', x') ≥ 0.
            c: Σ(x, x'); the correlation ρ = c / √(q1 q2) is clamped to [−1, 1] (0 where a
                variance is 0).

        Returns:
            Two float64 tensors of the broadcast shape.
        """
        return self.given(spread(q1), spread(q2), torch.as_tensor(c, dtype=torch.float64))

    def given(self, a: Spread, b: Spread, c: torch.Tensor, *, overwrite: bool = False) -> Pair:
        """`__call__` with the per-input terms of x and x' computed once (`spread`), e.g. for
        all the tiles of a kernel: the same operations on the tile, the same values.

        ``overwrite``: compute ρ in c's memory (c, of the broadcast shape, is lost): one
        array fewer than `arrays`.
        """
        scaled = c.mul_(a.inv_sqrt) if overwrite else c * a.inv_sqrt
        rho = scaled.mul_(b.inv_sqrt) if overwrite else scaled * b.inv_sqrt
        return self.formula(a.q, b.q, rho.clamp_(-1.0, 1.0))

    def nngp(self, q1: torch.Tensor, q2: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """E[φ(u) φ(v)], the NNGP map of the layer (before σ_w², σ_b²)."""
        return self(q1, q2, c)[0]

    def ntk_derivative(self, q1: torch.Tensor, q2: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """E[φ'(u) φ'(v)], the factor Σ̇ the NTK recursion multiplies Θ by (before σ_w²)."""
        return self(q1, q2, c)[1]

    def first_moments(self, q: torch.Tensor) -> Pair:
        """(E[φ(√q z)], E[φ'(√q z)]), z ~ N(0, 1), elementwise on q ≥ 0 (float64): the closed
        forms of `_closed_duals` (relu (√(q/2π), 1/2), gelu (q/√(2π(1+q)), 1/2), ...) or the
        series' zeroth Hermite coefficients a_0(q), d_0(q) (error ≤ 1e-12 relative to
        √E[φ²], √E[φ'²]: tests/kernels/test_infinite_width_norm.py)."""
        if self.moments is None:
            raise NotImplementedError(f"the dual {self.name} has no first moments")
        return self.moments(torch.as_tensor(q, dtype=torch.float64))

    def mean(self, q: torch.Tensor) -> torch.Tensor:
        """E[φ(√q z)]: the features' mean after φ (`first_moments`)."""
        return self.first_moments(q)[0]

    def diagonal(self, q: torch.Tensor) -> Pair:
        """(E[φ(√q z)²], E[φ'(√q z)²]), z ~ N(0, 1): the pair on q1 = q2 = c = q."""
        q = torch.as_tensor(q, dtype=torch.float64)
        return self.formula(q, q, torch.ones_like(q))  # ρ = 1, also where q = 0


def for_activation(activation: ActivationLike | nn.Module | Dual) -> Dual:
    """The `Dual` of an activation given by name, torch module, torch function or callable.

    Recognized exactly (closed form where `CLOSED_FORMS` has one): the names of
    `ntkscope.models.ActivationName`; ``nn.ReLU``, ``nn.LeakyReLU(slope)``, ``nn.GELU()``
    (``approximate="none"``), ``nn.Tanh``, ``nn.Sigmoid``, ``nn.SiLU``, ``nn.Mish``,
    ``nn.Softplus()`` and ``nn.ELU()`` with default parameters, ``nn.Identity``; the torch
    functions ``torch.relu``, ``F.gelu``, ``torch.tanh``, ``torch.sin``, ... (see
    ``_FUNCTIONS``). Any other callable, e.g. ``nn.ELU(alpha=0.5)`` or
    ``nn.GELU(approximate="tanh")``, gets the numerical series with its derivative by
    autograd.

    Raises:
        ValueError: for an unknown name; TypeError: for anything not callable.
    """
    if isinstance(activation, Dual):
        return activation
    if isinstance(activation, nn.LeakyReLU):
        slope = float(activation.negative_slope)
        arrays = _CLOSED_ARRAYS[ActivationName.LEAKY_RELU]
        return Dual(f"leaky_relu({slope:g})", True, arrays, *_piecewise(slope))
    name = _module_name(activation) if isinstance(activation, nn.Module) else None
    if name is None and not isinstance(activation, str | Activation):
        name = _FUNCTIONS.get(activation) if _hashable(activation) else None
    return _resolved(resolve_activation(name or activation))


def dual(activation: ActivationLike, q1: torch.Tensor, q2: torch.Tensor, c: torch.Tensor) -> Pair:
    """(E[φ(u) φ(v)], E[φ'(u) φ'(v)]): ``for_activation(activation)(q1, q2, c)``."""
    return for_activation(activation)(q1, q2, c)


def dual_diagonal(activation: ActivationLike, q: torch.Tensor) -> Pair:
    """(E[φ(√q z)²], E[φ'(√q z)²]): ``for_activation(activation).diagonal(q)``."""
    return for_activation(activation).diagonal(q)


def _resolved(act: Activation) -> Dual:
    if act.builtin is None:
        return _numerical(act)
    return _builtin(act.builtin)


@functools.cache
def _builtin(name: ActivationName) -> Dual:
    if name in _CLOSED:
        return Dual(name.value, True, _CLOSED_ARRAYS[name], *_CLOSED[name])
    return _numerical(resolve_activation(name.value))


def _numerical(act: Activation) -> Dual:
    series = SeriesDual(act)
    return Dual(act.name, False, series.arrays, series, series.first_moments)


def _module_name(module: nn.Module) -> str | None:
    """The built-in name of a torch activation module with default parameters, else None."""
    if isinstance(module, nn.GELU):
        return "gelu" if module.approximate == "none" else None
    if isinstance(module, nn.ELU):
        return "elu" if module.alpha == 1.0 else None
    if isinstance(module, nn.Softplus):
        return "softplus" if (module.beta, module.threshold) == (1.0, 20.0) else None
    return _MODULES.get(type(module))


def _hashable(obj: object) -> bool:
    try:
        hash(obj)
    except TypeError:
        return False
    return True


_MODULES: dict[type, str] = {
    nn.ReLU: "relu",
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.SiLU: "silu",
    nn.Mish: "mish",
    nn.Identity: "identity",
}

_FUNCTIONS: dict[object, str] = {
    torch.relu: "relu",
    F.relu: "relu",
    F.leaky_relu: "leaky_relu",
    torch.abs: "abs",
    torch.erf: "erf",
    torch.special.erf: "erf",
    F.gelu: "gelu",
    torch.sin: "sin",
    torch.cos: "cos",
    torch.sign: "sign",
    torch.tanh: "tanh",
    F.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    F.silu: "silu",
    F.softplus: "softplus",
    F.elu: "elu",
    F.mish: "mish",
}
"""Torch functions with their default arguments, by the built-in name they compute."""

LAYER_ARRAYS = 4
"""float64 values per entry of a tile under `Dual.layer`: Σ^l (then ρ), Θ^l, θ and Σ^{l+1}
(`_closed_duals.piecewise_linear_layer`, which allocates nothing)."""


class Spread(NamedTuple):
    """A variance q = Σ(x, x) ≥ 0 (float64, shaped to broadcast against the entries) and its
    inverse square root, 0 where q = 0: the per-input terms of the correlation
    ρ = c / √(q1 q2), clamped to [−1, 1] (0 where a variance is 0), that `Dual.given` takes."""

    q: torch.Tensor
    inv_sqrt: torch.Tensor


def spread(q: torch.Tensor) -> Spread:
    """The `Spread` of variances ``q`` (any shape; float64)."""
    q = torch.as_tensor(q, dtype=torch.float64)
    return Spread(q, torch.where(q > 0, q.rsqrt(), 0.0))
