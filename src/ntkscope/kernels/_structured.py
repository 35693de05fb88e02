"""Structured eNTK: per-layer Gram products instead of per-example Jacobians.

Each supported layer has a rule (`ntkscope.kernels._rules`, one per layer type) that turns
its input ``a`` and output gradients ``g_o = ∂f_o/∂h`` into terms. A `Factors` term is a
parameter Jacobian ``Σ_p g_{o,p} ⊗ a_p`` over positions p (sequence elements, patches),
whose eNTK contribution is

    Θ_W(x, x')_{oo'} = Σ_{p,q} (a_p · a'_q)(g_{o,p} · g'_{o',q})

contracted per layer in the cheapest of three forms (`_forms`: outer, positional, Jacobian;
the choice of neural-tangents' structured derivatives). A `Jacobian` term (norm scales and
shifts) is concatenated with the small Jacobian-form layers and contracted in the same
GEMM. A tile of a batch with itself is computed by row blocks, each against the columns
from its own first on, and mirrored.

``a`` and ``g`` come from one forward pass with hooks on the layers holding θ, and one
backward pass per output through zero "probe" tensors added to each layer's output
(∂f/∂probe = ∂f/∂h), so no parameter gradient is ever formed. Where a rule knows a faster
input gradient than autograd's (`Rule.input_gradient`: BatchNorm in eval mode, pointwise
convolutions), the layer's backward is replaced by it (`_Probed`). A chain of dense layers
and elementwise activations (`_chain`: an MLP) gets its output gradients by the chain rule
instead, with no probe and no backward pass.
`check_against_autograd` compares the result with plain autograd on a probe batch, along a
direction of the outputs.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field

import torch

from ntkscope import _batch
from ntkscope._batch import Batch
from ntkscope.kernels._chain import chain
from ntkscope.kernels._forms import (
    form,
    positional_diagonal,
    positional_pair,
    upper_gram,
    weighted,
)
from ntkscope.kernels._functional import FunctionalModel
from ntkscope.kernels._gram import OUTPUT_BLOCKS_MIN, gram, gram_diagonal, symmetric_sum
from ntkscope.kernels._probe import HALF, autograd_gram, gram_disagreement, probe_direction
from ntkscope.kernels._rules import Factors, Jacobian, Rule, Term, UnsupportedModel, rule_type
from ntkscope.kernels._rules.linear import LinearRule
from ntkscope.kernels._separable import Separable, separate
from ntkscope.kernels._separable import diagonal as separable_diagonal
from ntkscope.kernels._separable import pair as separable_pair
from ntkscope.kernels._threads import run_jobs
from ntkscope.kernels._tiling import symmetric_tile

__all__ = [
    "StructuredStrategy",
    "UnsupportedModel",
    "check_against_autograd",
    "check_second_batch",
]


def _label(name: str, module) -> str:
    return f"layer {name or '(root)'!r} ({type(module).__name__})"


def _qualified(module_name: str, parameter: str) -> str:
    return f"{module_name}.{parameter}" if module_name else parameter


def _rules(fm: FunctionalModel) -> tuple[dict[str, Rule], dict[str, torch.nn.Module]]:
    """Rules of the supported layers holding θ, and the unsupported ones by name (refused
    when the forward pass calls them).

    Raises:
        UnsupportedModel: for a parameter of a supported layer other than its ``weight`` and
            ``bias``, or a supported layer configured in a way its rule cannot factorize.
    """
    rules, unsupported, owned = {}, {}, set()
    for name, module in fm.module.named_modules():
        own = (n for n, _ in module.named_parameters(recurse=False))
        trainable = frozenset(n for n in own if _qualified(name, n) in fm.theta)
        if not trainable:
            continue
        kind = rule_type(module)
        if kind is None:
            unsupported[name] = module
        else:
            rules[name] = kind(module, _label(name, module), trainable)
            trainable &= {"weight", "bias"}
        owned |= {_qualified(name, n) for n in trainable}
    stray = set(fm.theta) - owned
    if stray:
        raise UnsupportedModel(f"parameters {sorted(stray)} belong to no supported layer")
    return rules, unsupported


@dataclass
class Features:
    """Per-example factors of Θ̂ for one block of examples, each layer in its chosen form.

    ``outer``: `Factors` with one position. ``positional``: `Factors` with several.
    ``jacobians``: blocks (n, O, D) of Jacobian columns: each Jacobian-form layer of at
    least `_OWN_BLOCK` columns alone (concatenating them copied the largest array), the
    smaller ones and the `Jacobian` terms side by side in one (one GEMM, not many thin ones).
    ``directional``: the features of the scalar output v·f along a direction v of the
    outputs (one column where the others have O: `StructuredStrategy._record`), each layer
    in the form it takes for all O outputs. ``separable``: the layers whose output
    gradients separate over the outputs (`_separable`), where that form is the cheapest.
    """

    outer: list[Factors] = field(default_factory=list)
    positional: list[Factors] = field(default_factory=list)
    jacobians: list[torch.Tensor] = field(default_factory=list)
    directional: bool = False
    separable: list[Separable] = field(default_factory=list)

    def take(self, rows: slice) -> Features:
        """The features of the examples ``rows`` (views)."""
        return Features(
            [t.take(rows) for t in self.outer],
            [t.take(rows) for t in self.positional],
            [j[rows] for j in self.jacobians],
            self.directional,
            [t.take(rows) for t in self.separable],
        )

    def any(self) -> bool:
        """Whether any layer holding θ was called."""
        return bool(self.outer or self.positional or self.jacobians or self.separable)


def _along(f: Features, v: torch.Tensor) -> Features:
    """Features of every output (full mode) as those of the scalar output v·f: each g and
    Jacobian block contracted with v over its outputs."""

    def project(g: torch.Tensor) -> torch.Tensor:
        return torch.einsum("no...,o->n...", g, v).unsqueeze(1)

    def factors(terms: list[Factors]) -> list[Factors]:
        return [Factors(t.a, project(t.g), t.vocab) for t in terms]

    return Features(
        factors(f.outer),
        factors(f.positional),
        [project(j) for j in f.jacobians],
        True,
        [t.along(v) for t in f.separable],
    )


_OWN_BLOCK = 1024
"""Jacobian-form layers with at least this many columns per output keep their own block
(copying them into one block cost more than `upper_gram`'s GEMMs saved: 5 ms for the
ResNet row's 8,272 columns)."""

_SYMMETRIC_BLOCK = 8
"""Narrowest row block of examples `StructuredStrategy.symmetric` cuts a symmetric tile into."""
_SYMMETRIC_SPLITS = 8
"""Number of row blocks `StructuredStrategy.symmetric` cuts a wide symmetric tile into."""
_SYMMETRIC_MIN_MACS = 2e9
"""Fewest multiply-adds (`pair_cost`) of a symmetric tile for `StructuredStrategy.symmetric`
to cut it into blocks: below, the calls' overhead outweighs the saved work (a 256-example
MLP trace kernel, 2.6e8 multiply-adds, took 74 ms in 36 square blocks against 50 ms whole;
measured before the row blocks, not since)."""


def _size(f: Features) -> int:
    """Number of examples (0 for a model with no layer holding θ called)."""
    if f.outer or f.positional:
        return (f.outer + f.positional)[0].a.shape[0]
    if f.separable:
        return f.separable[0].examples
    return f.jacobians[0].shape[0] if f.jacobians else 0


def _outer(f: Factors) -> tuple[torch.Tensor, torch.Tensor]:
    """One position's factors as (n, d_a) or (n, 1) ids, and (n, O, d_g)."""
    return f.a[:, 0], f.g[:, :, 0]


def _diagonal(f: Features, full: bool) -> torch.Tensor:
    """Θ̂(x_n, x_n) from one block's features: (n, O, O) if full, else (n,) summed over o."""
    total = 0
    for term in f.outer:
        aa = term.self_inner()[:, 0, 0]
        total = total + (aa[:, None, None] if full else aa) * gram_diagonal(_outer(term)[1], full)
    for term in f.positional:
        total = total + positional_diagonal(term, full)
    for j in f.jacobians:
        total = total + gram_diagonal(j, full)
    for term in f.separable:
        total = total + separable_diagonal(term, full)
    return total


def _output_gradients(
    out: torch.Tensor, probes: list[torch.Tensor], batched: bool
) -> list[torch.Tensor]:
    """∂f_o/∂probe for every output o, as (n, O, *probe.shape[1:]) for each probe.

    ``batched``: one backward pass vectorized over the outputs (``is_grads_batched``: each
    layer's backward is one GEMM for all O outputs; 2.3× faster for an MLP), returned
    output-major (`_gram.output_major`: the Gram products read that layout as it is, and
    a block with itself is split by output there). Otherwise one
    plain backward pass per output (on CPU several times faster than the vectorized pass
    for convolutions and pooling, whose batching rules fall back to slow kernels), written
    into the stacked results so that no second copy of all the gradients is ever held.
    """
    n, n_out = out.shape
    if batched:
        eye = torch.eye(n_out, dtype=out.dtype, device=out.device)
        cotangents = eye[:, None, :].expand(n_out, n, n_out)
        grads = torch.autograd.grad(
            out, probes, cotangents, is_grads_batched=True, allow_unused=True
        )
        return [
            p.new_zeros(n, n_out, *p.shape[1:]) if g is None else g.transpose(0, 1)
            for g, p in zip(grads, probes, strict=True)
        ]
    stacked = [p.new_empty(n, n_out, *p.shape[1:]) for p in probes]
    for o in range(n_out):
        grads = torch.autograd.grad(
            out[:, o].sum(), probes, retain_graph=o < n_out - 1, allow_unused=True
        )
        for result, g in zip(stacked, grads, strict=True):
            result[:, o] = 0 if g is None else g
    return stacked


class _Probed(torch.autograd.Function):
    """``h + probe`` for a layer output h computed without a graph, whose backward pass gives
    the layer input ``a`` the gradient ``input_gradient(∂f/∂h)`` (a rule's formula)."""

    @staticmethod
    def forward(ctx, a, probe, h, input_gradient):
        ctx.input_gradient = input_gradient
        return h + probe

    @staticmethod
    def backward(ctx, grad):
        a_grad = ctx.input_gradient(grad) if ctx.needs_input_grad[0] else None
        return a_grad, grad, None, None


def _one_pass_gradients(
    total: torch.Tensor, probes: list[torch.Tensor], n: int, columns: int
) -> list[torch.Tensor]:
    """∂total/∂probe as (n, columns, *probe.shape[1:]) for each probe (n·columns rows), from
    one backward pass: ``total`` is Σ_c d_c·f of copy c of each example along directions
    d_c, summed over the examples."""
    grads = torch.autograd.grad(total, probes, allow_unused=True)
    return [
        (torch.zeros_like(p) if g is None else g).view(n, columns, *p.shape[1:])
        for g, p in zip(grads, probes, strict=True)
    ]


def _saved_bytes(run, shared: set[int]) -> int:
    """Bytes of the distinct storages that autograd saves while ``run()`` runs, except
    those whose data pointers are in ``shared``."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in shared:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(storages.values())


def _terms(records) -> list[tuple[tuple[str, int], Term]]:
    """Each layer's terms (`Rule.terms`) keyed by (layer label, index among its terms)."""
    return [
        ((rule.label, index), term)
        for rule, a, g in records
        for index, term in enumerate(rule.terms(a, g))
    ]


def _first_column(term: Term) -> Term:
    """The term of the first direction recorded (column 0 of g or of the Jacobian)."""
    if isinstance(term, Jacobian):
        return Jacobian(term.j[:, :1])
    return Factors(term.a, term.g[:, :1], term.vocab)


class StructuredStrategy:
    """Tiling strategy (see `_tiling.Strategy`) for models made of supported layers.

    ``pair_cost``: multiply-adds per pair of examples of the chosen forms, the positional
    form's weighted by its speed (`_forms.weighted`), set by `measure` (the cost `auto`
    compares with the generic methods'). ``one_theta``: every pair of
    features is of the same parameters θ (every eNTK), which allows the separable trace
    column of `Chain.record`; False (the default) keeps ``pair`` exact for features at two
    parameter sets (`ntkscope.dynamics.jacobian_change`).
    """

    def __init__(self, fm: FunctionalModel, n_out: int, full: bool, one_theta: bool = False):
        self.fm, self.n_out, self.full, self.one_theta = fm, n_out, full, one_theta
        self.rules, self.unsupported = _rules(fm)
        # dense layers only (MLPs): one backward pass vectorized over the outputs
        self.dense_only = all(isinstance(rule, LinearRule) for rule in self.rules.values())
        self.chain = chain(fm, self.rules) if not self.unsupported else None
        item = torch.empty((), dtype=fm.dtype).element_size()
        self.feature_bytes, self.pair_bytes = 0, item * (3 * n_out**2 if full else 3)
        self.extract_bytes = 0
        self.pair_cost = 0.0
        self.separable_terms: frozenset[tuple[str, int]] = frozenset()
        self._separating_bytes = 0  # `_separable_terms`

    def measure(self, x: Batch) -> Features:
        """Set the memory and cost estimates from the probe batch of ``x`` (`probe_examples`);
        return its features along the probe direction v (`_probe.probe_direction`), full
        mode, those `check_against_autograd` takes.

        The probe records the scalar output v·f (`_record`: one backward pass, one column
        where a kernel's features have O; planning the ResNet row of ``benchmarks/entk.py``
        took ~36 ms of CPU time with O copies of each probe example, ~21 ms so, measured
        alternating), a chain every output (it
        has no backward pass); sizes and costs are those of O columns. The transient memory
        of `features` per example, ``extract_bytes``, is measured: the autograd graph (the
        storages it saves, less the model's parameters and buffers and the storages of
        ``x``) counted twice for the gradient buffers of a backward pass, or a chain's
        working memory (`Chain.transient_bytes`), plus the features themselves once more
        (the layers' factors before their Jacobian or bias columns are formed and
        concatenated).
        """
        made = []
        module = self.fm.module
        held = [*self.fm.theta.values(), *module.parameters(), *module.buffers()]
        shared = {t.untyped_storage().data_ptr() for t in held + _batch.tensors(x)}
        order, v = probe_examples(x), probe_direction(self.fm, self.n_out)
        probe = _batch.take(x, torch.tensor(order))
        directions = v[None]
        # separability needs two outputs; half precision is too coarse to tell it
        detect = self.n_out > 1 and self.fm.dtype not in HALF
        if detect:
            generator = torch.Generator().manual_seed(1)
            second = torch.randn(self.n_out, generator=generator, dtype=torch.float64)
            directions = torch.stack([v, second.to(v)])
        run = lambda: made.append(self._record(probe, self.full, directions))  # noqa: E731
        graph = _saved_bytes(run, shared) // (len(order) * len(directions))
        records, directional = made[0]
        terms = _terms(records)
        self.separable_terms = self._separable_terms(terms) if detect else frozenset()
        if directional:  # the features along v
            terms = [(key, _first_column(term)) for key, term in terms]
        f = self._features(terms, directional)
        columns = self.n_out if f.directional else 1  # a kernel's columns per recorded one
        item = torch.empty((), dtype=self.fm.dtype).element_size()
        sizes = [t.a.numel() + columns * t.g.numel() for t in f.outer + f.positional]
        sizes += [columns * j.numel() for j in f.jacobians]
        sizes += [t.numel() for t in f.separable]  # the moments: as many for O outputs
        self.feature_bytes = sum(sizes) * item // len(order)
        transient = 2 * graph  # a chain's record has no graph: its own count
        if self.chain is not None:
            transient = max(transient, self.chain.transient_bytes(self.n_out, item))
        self.extract_bytes = transient + self.feature_bytes + self._separating_bytes
        # positional temporaries per pair: a·a' (P²) and g·g' (P²); in full mode, per
        # column example, b and a copy of g in a conv's layout (2·P·O·d_out)
        for term in f.positional:
            p = term.positions
            self.pair_bytes += item * (p**2 + (0 if self.full else p**2))
            self.feature_bytes += 2 * item * columns * term.g[0].numel() if self.full else 0

        def cost(term: Factors, kind: str) -> float:
            return weighted(term, self.full, kind, columns * term.g.shape[1])

        outputs = self.n_out**2 if self.full else self.n_out
        self.pair_cost = sum(cost(term, "outer") for term in f.outer)
        self.pair_cost += sum(cost(term, "positional") for term in f.positional)
        self.pair_cost += sum(outputs * j.shape[2] for j in f.jacobians)
        self.pair_cost += sum(t.multiply_adds(outputs, self.full) for t in f.separable)
        if f.directional:
            return f
        if not self.full and self.one_theta:  # `Chain.record`'s trace column
            f = self.features(probe, full=True)
        return _along(f, v)

    def twin(self, fm: FunctionalModel) -> StructuredStrategy:
        """This plan (rules, forms, separable layers) for ``fm``, the same model at other
        parameter values: the features of the two pair (`pair`)."""
        other = copy.copy(self)
        other.fm = fm
        return other

    def _hooks(self, n: int, records: dict[str, tuple]) -> list:
        """Forward hooks: a zero probe added to each rule's layer output (batch dim n), and a
        refusal from each unsupported layer holding θ that the forward pass calls."""

        def record(name):
            def add_probe(module, inputs, output):
                if name in records:
                    raise UnsupportedModel(
                        f"{self.rules[name].label} is called more than once per forward pass"
                    )
                a = inputs[0].detach()
                if output.shape[0] != n:  # e.g. position embeddings (1, L, E), broadcast
                    if output.shape[0] != 1 or a.shape[0] != 1:
                        raise UnsupportedModel(f"{self.rules[name].label}: batch size differs")
                    output, a = output.expand(n, *output.shape[1:]), a.expand(n, *a.shape[1:])
                probe = torch.zeros_like(output, requires_grad=True)
                records[name] = (a, probe)
                given, fast = inputs[0], None  # a broadcast input (batch 1): autograd's
                if given.shape[0] == n and given.requires_grad:
                    fast = self.rules[name].input_gradient(a)
                if fast is None:
                    return output + probe
                return _Probed.apply(given, probe, output.detach(), fast)

            return torch.compiler.disable(add_probe)  # not traced into a compiled model

        def refuse(name):
            def hook(module, inputs, output):
                raise UnsupportedModel(
                    f"{_label(name, module)} has trainable parameters and is not supported"
                )

            return hook

        handles = [
            rule.module.register_forward_hook(record(name)) for name, rule in self.rules.items()
        ]
        return handles + [
            m.register_forward_hook(refuse(name)) for name, m in self.unsupported.items()
        ]

    def _copies(self, n: int) -> int:
        """Copies of each example that `_record` runs, one per output (1: none): for a lone
        example."""
        return self.n_out if n == 1 and not self.dense_only and self.chain is None else 1

    def _record(
        self, x: torch.Tensor, full: bool, directions: torch.Tensor | None = None
    ) -> tuple[list[tuple[Rule, torch.Tensor, torch.Tensor]], bool]:
        """(rule, input a, output gradients g (n, O, *h.shape[1:])) of each layer called, and
        whether they are along ``directions``.

        A chain records every output (it has no backward pass). Otherwise, given
        ``directions`` (k, O), each example runs as k copies, copy c differentiated along
        directions[c]: g (n, k, ...) from one backward pass (`features` along v: one copy;
        the probe of `measure`: v and a second direction for `_separable_terms`). A lone
        example (a last chunk of one) runs as O copies along the outputs' unit vectors: one
        backward pass instead of O, which cost ~0.5 ms each for the ResNet row's 20 layers
        however small the batch (measured).
        Other batches do not: their memory is planned for one copy of each example.
        """
        if self.chain is not None and isinstance(x, torch.Tensor):
            chained = self.chain.record(self.fm, x, separable=not full and self.one_theta)
            if chained is not None:
                return chained, False
        records: dict[str, tuple] = {}
        n = _batch.size(x)
        along = directions
        if along is None and self._copies(n) > 1:
            along = torch.eye(self.n_out, dtype=self.fm.dtype, device=self.fm.device)
        copies = 1 if along is None else along.shape[0]
        if copies > 1:
            x = _batch.take(x, torch.arange(n).repeat_interleave(copies))
        handles = self._hooks(_batch.size(x), records)
        try:
            with torch.enable_grad():
                out = self.fm(self.fm.theta, x)
        finally:
            for handle in handles:
                handle.remove()
        directional = directions is not None
        if not records:
            return [], directional
        probes = [probe for _, probe in records.values()]
        if along is not None:
            total = (out.view(n, copies, -1) * along).sum()
            grads = _one_pass_gradients(total, probes, n, copies)
        else:
            grads = _output_gradients(out, probes, self.dense_only)
        records = [
            (self.rules[name], a[::copies], g)
            for (name, (a, _)), g in zip(records.items(), grads, strict=True)
        ]
        return records, directional

    def features(
        self, x: torch.Tensor, full: bool | None = None, direction: torch.Tensor | None = None
    ) -> Features:
        """The features of the examples ``x``, for the strategy's mode or, given, ``full``;
        along ``direction`` as in `_record` (`Features.directional`)."""
        directions = None if direction is None else direction[None]
        records, directional = self._record(x, self.full if full is None else full, directions)
        return self._features(_terms(records), directional)

    def _features(self, terms: list[tuple[tuple[str, int], Term]], directional: bool) -> Features:
        """Features of the terms of `_terms`, each in its form."""
        f, small = Features(directional=directional), []
        columns = self.n_out if directional else 1  # forms of all O outputs
        for key, term in terms:
            if isinstance(term, Jacobian):
                kind = "jacobian"
            else:
                kind = self._form(term, key, columns * term.g.shape[1])
            if kind == "separable":
                f.separable.append(Separable.of(term))
                continue
            if kind == "positional" and term.vocab is None:
                # patches are transposed views: flattened by `Factors.inner` at every
                # pair, copied once here instead (ResNet row: ~5 ms of 0.34 s)
                term = Factors(term.a.contiguous(), term.g)
            if kind != "jacobian":
                getattr(f, kind).append(term)
                continue
            j = term.j if isinstance(term, Jacobian) else term.jacobian()
            (f.jacobians if j.shape[2] >= _OWN_BLOCK else small).append(j)
        if small:
            f.jacobians.append(torch.cat(small, dim=2))
        return f

    def _form(self, term: Factors, key: tuple[str, int], n_out: int) -> str:
        """`_forms.form` of ``term`` for ``n_out`` outputs, or "separable" for a term found
        separable by `_separable_terms` (``key``: its layer's label and index) where that
        is cheaper."""
        kind = form(term, self.full, n_out)
        if key in self.separable_terms:
            cost = {k: weighted(term, self.full, k, n_out) for k in (kind, "separable")}
            return min(cost, key=cost.get)
        return kind

    def _separable_terms(self, terms: list[tuple[tuple[str, int], Term]]) -> frozenset:
        """The keys (layer label, term index) of the `Factors` terms with several positions
        whose output gradients separate (`_separable.separate`) over the columns recorded:
        two random directions of the outputs in `measure` (gradients of rank ≥ 2 over the
        outputs give two directions that are not proportional, almost surely), or every
        output (a chain)."""
        found = set()
        for key, term in terms:
            several = isinstance(term, Factors) and term.positions > 1
            if several and term.vocab is None and separate(term.g) is not None:
                found.add(key)
                # `separate`'s copies of g, s and the residual, per example, for O outputs
                size = 3 * self.n_out * term.g[0, 0].numel() * term.g.element_size()
                self._separating_bytes = max(self._separating_bytes, size)
        return frozenset(found)

    def symmetric(self, f: Features) -> torch.Tensor:
        """Θ̂ of a block with itself, exactly symmetric (Θ(x', x) = Θ(x, x')ᵀ).

        Full mode, at least `OUTPUT_BLOCKS_MIN` outputs and no positional or separable layer:
        by output (`_gram.symmetric_sum`). Otherwise, from `_SYMMETRIC_MIN_MACS` on, by row
        blocks of examples, each against the columns from its own first on, the rest mirrored:
        (k + 1)/2k of the work for k row blocks; in full mode the Jacobian blocks' Gram by
        `upper_gram`, the other forms by `pair`, one row block per thread on CPU, each
        thread with one torch thread (`_threads.run_jobs`: the positional form's per-example
        products are too small for torch to split well; with 2 threads, 5–15% less time for
        the ResNet and Myrtle rows of ``benchmarks/entk.py``, measured).
        """
        n = _size(f)
        by_output = not (f.positional or f.separable)
        if self.full and self.n_out >= OUTPUT_BLOCKS_MIN and by_output and n:
            terms = [(t.inner(t)[:, 0, :, 0], _outer(t)[1]) for t in f.outer]
            return symmetric_sum(terms + [(None, j) for j in f.jacobians])
        if n < 2 * _SYMMETRIC_BLOCK or self.pair_cost * n * n < _SYMMETRIC_MIN_MACS:
            return symmetric_tile(self.pair(f, f))
        step = max(_SYMMETRIC_BLOCK, -(-n // _SYMMETRIC_SPLITS))
        if self.full and f.jacobians:
            out = upper_gram(f.jacobians, step)
            f = Features(f.outer, f.positional, separable=f.separable)
        else:
            shape = (n, n, self.n_out, self.n_out) if self.full else (n, n)
            out = torch.zeros(shape, dtype=self.fm.dtype, device=self.fm.device)

        def row_block(start: int) -> None:
            rows = slice(start, min(start + step, n))
            out[rows, start:] += self.pair(f.take(rows), f.take(slice(start, n)), upper=True)

        if f.any():
            blocks = [functools.partial(row_block, start) for start in range(0, n, step)]
            threads = torch.get_num_threads() if out.device.type == "cpu" else 1
            run_jobs(blocks, min(threads, len(blocks)))
        return symmetric_tile(out)

    def pair(
        self, f1: Features, f2: Features, upper: bool = False, full: bool | None = None
    ) -> torch.Tensor:
        """Θ̂ of two blocks; ``upper`` as in `positional_pair`; in the strategy's mode or,
        given, ``full`` (features of that mode)."""
        full = self.full if full is None else full
        total = 0
        for t1, t2 in zip(f1.outer, f2.outer, strict=True):
            aa = t1.inner(t2)[:, 0, :, 0]
            gg = gram(_outer(t1)[1], _outer(t2)[1], full)  # a fresh tensor: in place
            gg.mul_(aa[:, :, None, None] if full else aa)
            total = gg if isinstance(total, int) else total.add_(gg)
        for t1, t2 in zip(f1.positional, f2.positional, strict=True):
            total = total + positional_pair(t1, t2, full, upper)
        for j1, j2 in zip(f1.jacobians, f2.jacobians, strict=True):
            total = total + gram(j1, j2, full)
        for s1, s2 in zip(f1.separable, f2.separable, strict=True):
            total = total + separable_pair(s1, s2, full)
        return total

    def diagonal(self, f: Features) -> torch.Tensor:
        return _diagonal(f, self.full)


def probe_examples(x: Batch) -> list[int]:
    """The examples of ``x`` in the probe batch that `StructuredStrategy.measure` and
    `check_against_autograd` use: x₀, or (x₀, x₁, x₀, x₀) when ``x`` has two or more."""
    return [0] if _batch.size(x) < 2 else [0, 1, 0, 0]


def check_against_autograd(strategy: StructuredStrategy, f: Features, x) -> None:
    """Compare ``vᵀ Θ̂(x_i, x_j) v`` with ``∇_θ (v · f(x_i)) · ∇_θ (v · f(x_j))`` on the
    probe batch of ``x``, x₀ or (x₀, x₁, x₀, x₀) (`probe_examples`, `_probe`).

    Catches what the layer inspection cannot see: a parameter used outside its layer's
    forward, a layer whose forward is not what its rule assumes, and a model that reorders
    the examples of its batch inside (sorting them by length, a flip, routing), whose layers
    then see an example in another row than its own. In (x₀, x₁, x₀, x₀) a reordering goes
    unseen only if it leaves x₁ in row 1, which sorting by any key, flipping or rolling the
    batch cannot. ``f`` are the structured features of the probe batch along v (full mode,
    `Features.directional`), made by `StructuredStrategy.measure`.

    Raises:
        UnsupportedModel: when the two differ by more than the dtype's tolerance.
    """
    fm, order = strategy.fm, probe_examples(x)
    v = probe_direction(fm, strategy.n_out)
    reference = autograd_gram(fm, x, v, max(order) + 1)
    if f.any():
        values = strategy.pair(f, f, full=True)[:, :, 0, 0]
    else:  # no layer holding θ was called
        values = torch.zeros(len(order), len(order), dtype=torch.float64)
    why = gram_disagreement(fm, values, reference[order][:, order])
    if why is not None:
        raise UnsupportedModel(
            f"the layer-wise eNTK disagrees with autograd ({why}); a parameter is probably "
            "used outside its layer's forward, or the model reorders the examples of its batch"
        )


def _layout(f: Features) -> tuple:
    """What must match between the features of two batches to pair them: the terms of each
    form in order (positions may differ: the positional form pairs any two counts)."""
    widths = [(t.width, t.g.shape[3], t.vocab) for t in f.outer + f.positional]
    separable = [t.jacobian().shape[2] for t in f.separable]
    return len(f.outer), widths, [j.shape[2] for j in f.jacobians], separable


def check_second_batch(strategy: StructuredStrategy, x1, f1: Features, x2) -> None:
    """Refuse an x2 whose examples' layers take other contraction forms than x1's.

    A layer's form follows its number of positions (`_forms.form`): for examples of another
    shape (a longer sequence, a larger image) a layer may be contracted positionally in x1
    and as its per-example Jacobian in x2, and the two cannot be paired. Checked, when the
    shapes differ, on ``f1`` (the probe features of x1 from `StructuredStrategy.measure`,
    full mode) against one example of x2, along the probe direction.

    Raises:
        UnsupportedModel: naming ``x2``.
    """
    shapes = [[tuple(t.shape[1:]) for t in _batch.tensors(x)] for x in (x1, x2)]
    if shapes[0] == shapes[1]:
        return
    v = probe_direction(strategy.fm, strategy.n_out)
    second = strategy.features(_batch.take(x2, slice(0, 1)), full=True, direction=v)
    if _layout(f1) != _layout(second):
        raise UnsupportedModel(
            f"x2: its examples (shapes {shapes[1]}) give some layers another contraction form "
            f"than x1's (shapes {shapes[0]}), which the structured method cannot pair"
        )
