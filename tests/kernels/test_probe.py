"""The probe that every eNTK method passes before it runs (`_probe`, `check_against_autograd`),
the second batch's check (`check_second_batch`), and what `auto` does when they refuse.

References: `method="autograd"` (one plain backward pass per example and output) in float64.
Tolerance 1e-12 relative Frobenius where the result is that of another exact method (the
same sums in another order: ~1e-16 measured); a wrong pairing of examples is off by O(1).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ntkscope as ns
from ntkscope.kernels import _forms
from ntkscope.kernels._rules import Factors
from reference import relative_error

TOL = 1e-12


class _Sorted(nn.Module):
    """Runs its batch in the order of the first feature, then restores it (length
    bucketing, expert routing): each example's output depends on that example alone."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        order = torch.argsort(x[:, 0])
        return self.b(torch.tanh(self.a(x[order])))[torch.argsort(order)]


class _Flipped(nn.Module):
    """Runs its batch in reverse order inside, restored at the end."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x.flip(0))).flip(0))


@pytest.mark.parametrize("model_type", [_Sorted, _Flipped])
@pytest.mark.parametrize("ascending", [True, False])
def test_a_model_that_reorders_its_batch_inside_is_not_given_to_structured(model_type, ascending):
    """Its layers see example i in another row: the structured method pairs the wrong rows
    (40% off before). Refused naming the reordering; `auto` falls back to a generic method,
    exact. ``ascending``: the first two examples already in the model's order (the probe must
    not depend on it)."""
    torch.manual_seed(0)
    model = model_type().double()
    x = torch.randn(6, 4, dtype=torch.float64)
    x = x[torch.argsort(x[:, 0], descending=not ascending)]
    with pytest.raises(ValueError, match=r"method='structured': .*reorders the examples"):
        ns.empirical_ntk(model, x, mode="full", method="structured")
    assert ns.kernels.resolve_method(model, x, mode="full") != "structured"
    reference = ns.empirical_ntk(model, x, mode="full", method="autograd")
    assert relative_error(ns.empirical_ntk(model, x, mode="full"), reference) <= TOL


class _Float32Inside(nn.Module):
    """A float64 model whose norm computes in float32 (as Llama's RMSNorm and T5's norm)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 32), nn.Linear(32, 4)

    def forward(self, x):
        h = self.a(x).to(torch.float32)
        h = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype)
        return self.b(torch.tanh(h))


@pytest.mark.parametrize("method", ["auto", "structured", "jacobian", "autograd"])
def test_float64_models_with_float32_inside_are_accepted(method):
    """Their probe differs from autograd by ~1e-8 (float32 roundings in two orders): within
    the float64 tolerance (1e-6), where 1e-9 refused every method, `autograd` included.
    Against autograd's kernel: 1e-6 (the float32 roundings)."""
    torch.manual_seed(0)
    model = _Float32Inside().double()
    x = torch.randn(5, 8, dtype=torch.float64)
    reference = ns.empirical_ntk(model, x, mode="full", method="autograd")
    assert relative_error(ns.empirical_ntk(model, x, mode="full", method=method), reference) < 1e-6


def test_a_disagreement_says_the_relative_gap_and_the_tolerance():
    """A parameter used outside its layer (the readout's weight reused in forward): the
    message gives the two values, their relative gap and the tolerance."""

    class Reused(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x):
            return self.b(torch.tanh(self.a(x))) + x @ self.b.weight

    model = Reused().double()
    with pytest.raises(ValueError, match=r"relative gap of [0-9.e-]+ \(tolerance 1e-06\)"):
        ns.empirical_ntk(model, torch.randn(4, 3, dtype=torch.float64), method="structured")


class _Tokens(nn.Module):
    """Token and position embeddings, a per-token dense layer, a mean over positions."""

    def __init__(self, vocab: int = 11, width: int = 8, length: int = 40):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(vocab, width), nn.Embedding(length, width)
        self.dense, self.out = nn.Linear(width, width), nn.Linear(width, 2)

    def forward(self, ids):
        h = self.tokens(ids) + self.positions(torch.arange(ids.shape[1])[None])
        return self.out(torch.tanh(self.dense(h)).mean(1))


def test_x2_of_another_length_whose_layers_take_other_forms_is_refused_by_structured():
    """Sequences of 1 and 30 tokens: the dense layer is one position (outer form) in x1 and
    many in x2; the structured method cannot pair them (a zip error from deep inside
    before): refused naming x2, and `auto` falls back, exact."""
    torch.manual_seed(0)
    model = _Tokens().double()
    x1, x2 = torch.randint(0, 11, (3, 1)), torch.randint(0, 11, (2, 30))
    with pytest.raises(ValueError, match=r"method='structured': x2: its examples \(shapes"):
        ns.empirical_ntk(model, x1, x2, mode="full", method="structured")
    reference = ns.empirical_ntk(model, x1, x2, mode="full", method="autograd")
    assert relative_error(ns.empirical_ntk(model, x1, x2, mode="full"), reference) <= TOL


def test_x2_of_another_length_with_the_same_forms_keeps_structured():
    """7 and 9 tokens: every layer in the same form on both sides (positional for any two
    position counts): structured, exact."""
    torch.manual_seed(0)
    model = _Tokens().double()
    x1, x2 = torch.randint(0, 11, (3, 7)), torch.randint(0, 11, (2, 9))
    reference = ns.empirical_ntk(model, x1, x2, mode="full", method="autograd")
    got = ns.empirical_ntk(model, x1, x2, mode="full", method="structured")
    assert relative_error(got, reference) <= TOL


def test_auto_survives_a_forward_that_the_flop_counter_cannot_count(monkeypatch):
    """torch's FLOP counter fails on some fast paths (nested tensors of a padded
    `nn.TransformerEncoder` without gradients): `auto` estimates from the parameter count
    and runs."""
    from ntkscope.kernels import empirical

    def fails(*args):
        raise RuntimeError("NestedTensorImpl doesn't support sizes")

    monkeypatch.setattr(empirical, "_profile", fails)
    model = ns.models.mlp(4, 8, 1, 2, seed=0).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    reference = ns.empirical_ntk(model, x, method="autograd")
    assert relative_error(ns.empirical_ntk(model, x), reference) <= TOL


def test_few_positions_in_full_mode_take_the_jacobian_form():
    """A per-token dense layer over 8 positions, 2 outputs: positional 0.74× the Jacobian's
    multiply-adds, but 3× slower in full mode (`POSITIONAL_SLOWDOWN`): Jacobian form. The
    ResNet row's last stage (16 positions, 576 inputs, 10 outputs; 0.11×) stays positional."""
    few = Factors(torch.zeros(1, 8, 65), torch.zeros(1, 2, 8, 128))
    assert _forms.costs(few, True)["positional"] < 0.75 * _forms.costs(few, True)["jacobian"]
    assert _forms.form(few, full=True) == "jacobian"
    wide = Factors(torch.zeros(1, 16, 576), torch.zeros(1, 10, 16, 64))
    assert _forms.form(wide, full=True) == "positional"


def test_the_probes_autograd_gram_is_the_jacobians_gram():
    """`autograd_gram` against the brute-force Jacobian (one backward pass per example and
    output, float64): vᵀ J_i J_jᵀ v for the first three examples, 1e-12 (the same sums in
    another order)."""
    from ntkscope.kernels._functional import FunctionalModel
    from ntkscope.kernels._probe import autograd_gram, probe_direction
    from reference import brute_force_jacobian

    torch.manual_seed(0)
    model = _Sorted().double()
    x = torch.randn(5, 4, dtype=torch.float64)
    fm = FunctionalModel(model)
    v = probe_direction(fm, 2)
    j = brute_force_jacobian(model, x[:3])  # (3, O, P)
    expected = torch.einsum("o,iop,jqp,q->ij", v, j, j, v)
    assert relative_error(autograd_gram(fm, x, v, 3), expected) <= TOL
