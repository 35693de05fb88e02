"""Layers whose output gradients are separable over the outputs: ``g_{o,p,d} = w_{o,d} s_{p,d}``.

A layer whose output reaches the model's outputs through per-channel operations only
(elementwise activations, eval BatchNorm, a residual sum with other branches, pooling over
positions) and then one dense readout has, for each example, output gradients
``g_{o,p,d} = w_{o,d} s_{p,d}``: the readout's row o times a per-example, per-position scale
(the last convolution of a ResNet or of the Myrtle CNN before global pooling: ReLU′,
BatchNorm's scale and 1/P times W_out[o, d]). Its parameter Jacobian
``Σ_p g_{o,p} ⊗ a_p`` is then ``w_{o,d} M[d, e]`` with the per-example moment
``M = Σ_p s_p ⊗ a_p`` (d_g × d_a), so

    Θ_W(x, x')_{oo'} = Σ_d w_{o,d} w'_{o',d} T_d(x, x'),   T_d(x, x') = Σ_e M[d, e] M'[d, e]

(the diagonal and broadcast structure of a layer's Jacobian that neural-tangents' structured
derivatives exploit; Novak, Sohl-Dickstein & Schoenholz, ICML 2022). Per pair of examples
d_a·d_g multiply-adds for T and O²·d_g for the sum (full mode; in trace mode the weights
``Σ_o w_{o,d}²`` fold into one Gram of the flattened moments), against O²·d_a·d_g for the
Jacobian form. w may differ between the two sides (each batch's own factorization: the
product ``w_{o,d} s_{p,d}`` is all that is fixed), which the sum takes as it is.

`separate` finds w and s from the recorded gradients of a batch and checks that they
reproduce them to rounding; where they do not (a model whose structure changes with its
input), the term keeps its per-example Jacobian, exact and paired as one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ntkscope.kernels._gram import gram, gram_diagonal
from ntkscope.kernels._rules import Factors

ROUNDING = 64
"""Multiples of the dtype's epsilon that the residual of `separate`'s factorization may
reach, per channel, relative to the channel's gradients: the gradients are products of a
few rounded factors (the readout's weight, 1/P, an activation's derivative, a norm's
scale), a few epsilons each; a layer that is not separable leaves a residual of the order
of the gradients themselves."""


def multiply_adds(d_a: int, d_g: int, outputs: int, full: bool) -> int:
    """Multiply-adds per pair of examples of `pair`: T (d_a·d_g), then the sum over the
    channels for ``outputs`` pairs of outputs (O² in full mode; one weighted sum in trace
    mode)."""
    return d_a * d_g + (outputs * d_g if full else d_g)


def separate(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(w (O, D), s (n, P, D)) with ``g[n, o, p, d] = w[o, d] s[n, p, d]`` to `ROUNDING` for
    gradients g (n, O, P, D), or None. w[:, d] is channel d's gradient vector over the
    outputs of largest norm (an exact column of g), s the projection of g on it. g is read
    in its own layout (a conv's is (n, O, D, P)): a copy of it cost 2× the time."""
    n, _, p, d = g.shape
    norms = (g * g).sum(1).view(n * p, d)
    column = norms.argmax(0)  # (D,): the example and position of each channel's largest
    w = g[column // p, :, column % p, torch.arange(d, device=g.device)].T  # (O, D)
    squared = (w * w).sum(0)
    w4 = w[None, :, None, :]
    s = (g * w4).sum(1, keepdim=True) / torch.where(squared > 0, squared, 1)
    residual = torch.addcmul(g, w4, s, value=-1)
    tol = (ROUNDING * torch.finfo(g.dtype).eps) ** 2
    if bool(((residual * residual).sum((0, 1, 2)) <= tol * norms.sum(0)).all()):
        return w, s[:, 0]
    return None


@dataclass
class Separable:
    """A layer's parameter Jacobian ``w_{o,d} M[d, e]`` (module docstring).

    ``moments``: M as (D, n, d_a), batched over the channels for their Grams (a view of
    (n, D, d_a) storage: the GEMMs read it as fast, a copy cost 1 ms of 5 for the
    ResNet row's last convolution); ``w``: (O, D). Where
    the gradients of this batch did not separate, ``moments`` and ``w`` are None and
    ``j`` holds the per-example Jacobian (n, O, D·d_a) in the same column order.
    """

    moments: torch.Tensor | None
    w: torch.Tensor | None
    j: torch.Tensor | None = None

    @staticmethod
    def of(term: Factors) -> Separable:
        """The factorization of ``term``, or its Jacobian where g does not separate."""
        parts = separate(term.g)
        if parts is None:
            return Separable(None, None, term.jacobian())
        w, s = parts
        moments = torch.bmm(s.transpose(1, 2), term.a)  # (n, D, d_a)
        return Separable(moments.transpose(0, 1), w)

    @property
    def split(self) -> bool:
        return self.moments is not None

    @property
    def examples(self) -> int:
        return self.moments.shape[1] if self.split else self.j.shape[0]

    def take(self, rows: slice) -> Separable:
        if not self.split:
            return Separable(None, None, self.j[rows])
        return Separable(self.moments[:, rows], self.w)

    def along(self, v: torch.Tensor) -> Separable:
        """The term of the scalar output v·f (one output)."""
        if not self.split:
            return Separable(None, None, torch.einsum("nok,o->nk", self.j, v).unsqueeze(1))
        return Separable(self.moments, (v @ self.w).unsqueeze(0))

    def jacobian(self) -> torch.Tensor:
        """The per-example Jacobian (n, O, D·d_a)."""
        if not self.split:
            return self.j
        d, n, e = self.moments.shape
        j = self.w.T[:, None, :, None] * self.moments[:, :, None, :]  # (D, n, O, d_a)
        return j.permute(1, 2, 0, 3).reshape(n, -1, d * e)

    def numel(self) -> int:
        """Numbers held per batch (the moments, or the Jacobian)."""
        return self.moments.numel() if self.split else self.j.numel()

    def multiply_adds(self, outputs: int, full: bool) -> int:
        """`multiply_adds` of this term's pairs (the moments' shape; its Jacobian's width
        where it did not separate)."""
        if not self.split:
            return outputs * self.j.shape[2]
        d, _, e = self.moments.shape
        return multiply_adds(e, d, outputs, full)


def pair(t1: Separable, t2: Separable, full: bool) -> torch.Tensor:
    """Θ_W of two blocks: (n, m, O, O) if full, else (n, m) summed over o = o'."""
    if not (t1.split and t2.split):
        return gram(t1.jacobian(), t2.jacobian(), full)
    d, n, _ = t1.moments.shape
    m = t2.moments.shape[1]
    per_channel = torch.bmm(t1.moments, t2.moments.transpose(1, 2)).view(d, n * m)
    if full:
        weights = (t1.w.T[:, :, None] * t2.w.T[:, None, :]).reshape(d, -1)  # (D, O·O)
        return (per_channel.T @ weights).view(n, m, t1.w.shape[0], t2.w.shape[0])
    return (per_channel.T @ (t1.w * t2.w).sum(0)).view(n, m)


def diagonal(t: Separable, full: bool) -> torch.Tensor:
    """`pair` of each example with itself: (n, O, O) if full, else (n,)."""
    if not t.split:
        return gram_diagonal(t.j, full)
    per_channel = (t.moments * t.moments).sum(2)  # (D, n)
    if full:
        weights = (t.w.T[:, :, None] * t.w.T[:, None, :]).flatten(1)
        return (per_channel.T @ weights).view(-1, t.w.shape[0], t.w.shape[0])
    return per_channel.T @ (t.w * t.w).sum(0)
