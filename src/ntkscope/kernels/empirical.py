"""The empirical neural tangent kernel of any PyTorch model.

    Θ̂(x, x') = Σ_p ∂f(x)/∂θ_p ⊗ ∂f(x')/∂θ_p        (docs/conventions.md, "The empirical NTK")

One public function, `empirical_ntk`, with interchangeable methods that agree to float
tolerance (the tests prove it against a brute-force autograd reference).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ntkscope import _batch
from ntkscope._batch import Batch, OutputSelector
from ntkscope._checks import boolean, choice
from ntkscope.kernels._functional import FunctionalModel, refuse_training_mode
from ntkscope.kernels._generic import AutogradStrategy, JacobianStrategy, NTVPStrategy
from ntkscope.kernels._probe import HALF, beyond_range, check_independent, disagreement
from ntkscope.kernels._structured import (
    StructuredStrategy,
    UnsupportedModel,
    check_against_autograd,
    check_second_batch,
)
from ntkscope.kernels._tiling import (
    Progress,
    Strategy,
    resolve_budget,
    tiled_diagonal,
    tiled_kernel,
)


class Mode(StrEnum):
    """Output shape of `empirical_ntk`.

    FULL: every output pair, (N1, N2, O, O).
    TRACE: the mean over outputs (1/O)·tr Θ̂(x, x'), (N1, N2); converges to the scalar
        infinite-width NTK.
    """

    FULL = "full"
    TRACE = "trace"


class Method(StrEnum):
    """How `empirical_ntk` computes the kernel.

    STRUCTURED: per-layer Gram products, each layer contracted in its cheapest form, for
        Linear (on any (N, ..., E) input), Conv1d/Conv2d (groups, every padding mode),
        ConvTranspose1d/2d, Embedding, LayerNorm, RMSNorm, GroupNorm, BatchNorm (eval),
        GPT-2's Conv1D, `ntkscope.models.Dense` and `ntkscope.models.Conv`, with any
        parameter-free operations between them (the layer table in the README). Fastest by
        far for these (no per-example Jacobian of the whole model is formed); fails, naming
        the layer, on any other layer holding trainable parameters that the forward calls.
    JACOBIAN: per-example Jacobians by ``vmap(jacrev)`` contracted in one GEMM. Any model;
        fastest generic method when O·P numbers per example fit in memory and O is small.
    NTVP: NTK-vector products (vjp then jvp). Any model whose ops have forward-mode AD and
        vmap rules; needs the least memory; wins for many outputs in full mode.
    AUTOGRAD: per-example Jacobians from one plain backward pass per example and output.
        Any model autograd can differentiate (LSTM, GRU, attention kernels without vmap or
        forward-mode rules); the slowest.
    AUTO: the first that runs on a probe of 1–2 examples and agrees there with autograd,
        in the order of one FLOP estimate over STRUCTURED (when every trainable layer is
        supported), JACOBIAN (when its Jacobians fit in memory) and NTVP, then AUTOGRAD.
        `resolve_method` says which.
    """

    AUTO = "auto"
    STRUCTURED = "structured"
    JACOBIAN = "jacobian"
    NTVP = "ntvp"
    AUTOGRAD = "autograd"


def _profile(fm: FunctionalModel, x: Batch) -> tuple[int, int]:
    """Forward FLOPs and activation numbers of one example (counted by torch)."""
    sizes: list[int] = []

    def count(module, inputs, output):
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel())

    leaves = [m for m in fm.module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    one = _batch.take(x, slice(0, 1))
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fm(fm.theta, one)
    finally:
        for handle in handles:
            handle.remove()
    return counter.get_total_flops(), sum(sizes) + sum(t.numel() for t in _batch.tensors(one))


NTVP_SLOWDOWN = 3
"""How many times longer a FLOP of NTVP takes than one of the other methods: its vjp/jvp
pairs are vmapped over one-hot cotangents, and ran at 5–38 GFLOP/s where the structured and
Jacobian methods ran at 17–123 on the same models (one thread, measured on per-token MLPs
with and without an embedding (O = 60), an MLP with 60 outputs, a bilinear layer, a small
CNN and a 256-wide MLP, full and trace modes). Unweighted, ``auto`` chose NTVP for the
per-token MLPs and the bilinear layer in full mode, 1.7–6× slower than the fastest."""


def _costs(fm, x1, n1, n2, n_out, full, budget) -> tuple[dict[Method, int], int]:
    """Estimated FLOPs of JACOBIAN and NTVP (JACOBIAN only if it fits; NTVP's weighted by
    `NTVP_SLOWDOWN`), and of one per-output backward pass over the features of one example,
    ``3·forward``. A forward pass that cannot be counted (torch's counter fails on some fast
    paths, e.g. nested tensors of a padded `nn.TransformerEncoder` without gradients) counts
    ``2·|θ|``."""
    try:
        flops, _ = _profile(fm, x1)
    except Exception:  # any failure of the count: the methods' own probes decide
        flops = 0
    forward = max(flops, 2 * fm.n_params)
    jacobian = JacobianStrategy(fm, n_out, full)
    costs = {Method.NTVP: NTVP_SLOWDOWN * n1 * n2 * n_out * 5 * forward}
    if 2 * jacobian.feature_bytes + jacobian.pair_bytes <= budget:
        outputs = n_out**2 if full else n_out
        costs[Method.JACOBIAN] = (
            n1 + n2
        ) * n_out * 3 * forward + n1 * n2 * 2 * fm.n_params * outputs
    return costs, 3 * forward


def _generic(method: Method, fm, x1, n_out: int, full: bool) -> Strategy:
    if method is Method.JACOBIAN:
        return JacobianStrategy(fm, n_out, full)
    if method is Method.NTVP:
        return NTVPStrategy(fm, n_out, full, _profile(fm, x1)[1])
    return AutogradStrategy(fm, n_out, full)


def _checked(
    method: Method, fm, x1, n_out: int, full: bool, one_theta: bool = True, x2=None
) -> Strategy:
    """The strategy of ``method``, run on a probe of 1–4 examples and checked against
    autograd there (`_probe`; structured: `check_against_autograd`); `autograd`, the
    probe's own reference, is run on one example and not compared.

    Raises:
        UnsupportedModel: for a structured rule that does not apply, or a disagreement;
            NotImplementedError, RuntimeError: from torch when an op has no vmap or
            forward-mode rule.

    ``one_theta``: as in `StructuredStrategy` (False where features at two parameter sets
    are paired). ``x2``: the second batch, whose examples the structured method must be able
    to pair with x1's (`check_second_batch`).
    """
    if method is Method.STRUCTURED:
        strategy = StructuredStrategy(fm, n_out, full, one_theta)
        probe = strategy.measure(x1)
        check_against_autograd(strategy, probe, x1)
        if x2 is not None:
            check_second_batch(strategy, x1, probe, x2)
        return strategy
    strategy = _generic(method, fm, x1, n_out, full)
    if method is Method.AUTOGRAD:  # the probe's own reference: run, not compared
        strategy.features(_batch.take(x1, slice(0, 1)))  # an op without a backward fails here
        return strategy
    twin = strategy if full else _generic(method, fm, x1, n_out, True)
    why = disagreement(fm, twin.diagonal(twin.features(_batch.take(x1, slice(0, 2))))[0], x1)
    if why is not None:
        raise UnsupportedModel(f"the kernel disagrees with autograd ({why})")
    return strategy


def _reason(error: BaseException) -> str:
    """First line of an error, as in the message of a method that failed."""
    lines = str(error).strip().splitlines() or [""]
    kind = "" if isinstance(error, UnsupportedModel) else f"{type(error).__name__}: "
    return kind + lines[0][:300]


def _instead(*arguments) -> str:
    """Advice after an explicit method failed: the method AUTO chooses (found as AUTO finds
    it, on the probe) or, when AUTO fails too, that no method works."""
    try:
        method, _ = _strategy(Method.AUTO, *arguments)
    except ValueError:
        return "no other method works on this model either (method='auto' fails too)"
    return f"use method='auto' (it runs {method.value!r} here)"


def _strategy(
    method, fm, x1, n1, n2, n_out, full, budget, one_theta: bool = True, x2=None
) -> tuple[Method, Strategy]:
    """The method that runs (never AUTO) and its tiling strategy.

    AUTO tries STRUCTURED, JACOBIAN and NTVP in the order of their estimated FLOPs (one
    cost model: ``(N1 + N2)·O`` backward passes for the features, plus per pair of examples
    the structured forms' multiply-adds, or the Jacobians' Gram, or O jvp/vjp pairs), then
    AUTOGRAD, and takes the first that passes `_checked`.
    """
    if method is not Method.AUTO:
        try:
            return method, _checked(method, fm, x1, n_out, full, one_theta, x2)
        except (UnsupportedModel, NotImplementedError, RuntimeError) as why:
            advice = _instead(fm, x1, n1, n2, n_out, full, budget, one_theta, x2)
            raise ValueError(f"method={method.value!r}: {_reason(why)}; {advice}") from None
    failures, ready = [], {}
    costs, backward = _costs(fm, x1, n1, n2, n_out, full, budget)
    try:  # the structured cost is known once its rules have seen a probe example
        structured = _checked(Method.STRUCTURED, fm, x1, n_out, full, one_theta, x2)
        ready[Method.STRUCTURED] = structured
        features = (n1 + n2) * n_out * backward
        costs = {Method.STRUCTURED: features + n1 * n2 * 2 * structured.pair_cost, **costs}
    except Exception as why:  # any failure of a method: try the next
        failures.append(f"structured: {_reason(why)}")
    for candidate in [*sorted(costs, key=costs.get), Method.AUTOGRAD]:  # stable: ties structured
        try:
            strategy = ready.get(candidate) or _checked(
                candidate, fm, x1, n_out, full, one_theta, x2
            )
            return candidate, strategy
        except Exception as why:  # any failure of a method: try the next
            failures.append(f"{candidate.value}: {_reason(why)}")
    try:
        detached = not fm.depends_on_theta(x1)
    except Exception:  # the model fails outside the methods too: their reasons say why
        detached = False
    if detached:
        raise ValueError(
            "output: the selected model output does not depend on the model's trainable "
            "parameters (a detached tensor?), so its eNTK is 0 and no method differentiates it"
        )
    raise ValueError("model: no eNTK method can differentiate it; " + "; ".join(failures))


def _all_finite(t: torch.Tensor, chunk: int = 2**20) -> bool:
    """``torch.isfinite(t).all()``: true when the sum is finite (a NaN or an infinity makes it
    NaN or infinite), else checked in chunks (a sum of finite entries may overflow; the
    whole-tensor form allocates more than ``t``). A permuted view of contiguous storage
    (`tiled_kernel`'s one-tile kernel) is read in its storage's order, so that its chunks
    are views, not a copy."""
    t = t.permute(*sorted(range(t.dim()), key=lambda d: -t.stride(d)))
    if bool(torch.isfinite(t.sum())):
        return True
    return all(bool(torch.isfinite(part).all()) for part in t.reshape(-1).split(chunk))


def _is_batch(value: object) -> bool:
    return isinstance(value, torch.Tensor | tuple | list | Mapping)


@dataclass
class _Plan:
    """A validated eNTK request, ready to run."""

    fm: FunctionalModel
    x1: Batch
    x2: Batch | None
    n_out: int
    full: bool
    diagonal: bool
    budget: int
    method: Method
    strategy: Strategy

    def run(self, progress: Progress | None) -> torch.Tensor:
        if progress is not None and not callable(progress):
            hint = " (the inputs were given when it was prepared)" if _is_batch(progress) else ""
            raise TypeError(
                "progress: expected None or a callable progress(tiles_done, tiles_total), "
                f"got {type(progress).__name__}{hint}"
            )
        n1 = _batch.size(self.x1)
        rows = (n1,) if self.diagonal else (n1, n1 if self.x2 is None else _batch.size(self.x2))
        shape = rows + ((self.n_out, self.n_out) if self.full else ())
        out = torch.empty(shape, dtype=self.fm.dtype, device=self.fm.device)
        if self.diagonal:
            tiled_diagonal(self.strategy, self.x1, out, self.budget, progress)
        else:
            out = tiled_kernel(self.strategy, self.x1, self.x2, out, self.budget, progress)
        if not self.full:
            out /= self.n_out
        if not _all_finite(out):
            raise ValueError("x1: the eNTK has NaN or infinite entries; " + self._why_not_finite())
        return out

    def _why_not_finite(self) -> str:
        """Why the kernel is not finite: in float16 or bfloat16, with finite outputs, its
        entries (sums of P products of gradients) most likely overflowed the dtype."""
        dtype = self.fm.dtype
        if dtype in HALF:
            batches = [self.x1] if self.x2 is None else [self.x1, self.x2]
            with torch.no_grad():
                finite = all(
                    bool(torch.isfinite(self.fm(self.fm.theta, _batch.take(x, rows))).all())
                    for x in batches
                    for rows in (slice(i, i + 256) for i in range(0, _batch.size(x), 256))
                )
            if finite:
                return (
                    "the model's outputs are finite, so the kernel's entries most likely "
                    + beyond_range(dtype)
                )
        return "the model's outputs or gradients are not finite on these inputs"


def _second_batch(fm: FunctionalModel, x1: Batch, x2: object, n_out: int) -> Batch:
    """x2 validated: the same kind of batch as x1, giving as many outputs per example."""
    x2 = fm.batch(x2, "x2")
    _batch.same_kind(x2, x1, "x2", "x1")
    n_out2 = fm.check_inputs(x2, "x2")
    if n_out2 != n_out:
        raise ValueError(f"x2: the model gives {n_out2} outputs per example, on x1 {n_out}")
    return x2


def _plan(model, x1, x2, mode, diagonal, method, memory_budget, params, output) -> _Plan:
    """Check every argument (errors name it) and choose the method."""
    kind = choice(Mode, mode, "mode")
    method = choice(Method, method, "method")
    diagonal = boolean(diagonal, "diagonal")
    if x2 is x1:
        x2 = None  # the same batch: compute the upper triangle only
    fm = FunctionalModel(model, params, output)
    x1 = fm.batch(x1, "x1")
    if x2 is not None and diagonal:
        raise ValueError("x2: diagonal=True computes Θ̂(x, x) over x1 only; pass x2=None")
    n_out = fm.check_inputs(x1, "x1")
    check_independent(fm, x1, "x1")
    if x2 is not None:
        x2 = _second_batch(fm, x1, x2, n_out)
    budget = resolve_budget(memory_budget, fm.device)
    full = kind is Mode.FULL
    n1 = _batch.size(x1)
    n2 = 1 if diagonal else (n1 if x2 is None else _batch.size(x2))
    used, strategy = _strategy(method, fm, x1, n1, n2, n_out, full, budget, x2=x2)
    return _Plan(fm, x1, x2, n_out, full, diagonal, budget, used, strategy)


def _signature(model: nn.Module) -> tuple:
    """The tensors a plan holds: each parameter's and buffer's storage, layout, dtype,
    device and ``requires_grad``. Updates in place (an optimizer step, ``load_state_dict``,
    running statistics) keep it; a new tensor (an assigned ``nn.Parameter``, ``.data = ``,
    ``.to(...)``) or a parameter frozen or unfrozen changes it."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return tuple(
        (name, t.data_ptr(), t.shape, t.stride(), t.dtype, t.device, t.requires_grad)
        for name, t in tensors
    )


def _training(model: nn.Module) -> list[bool]:
    """Each module's training flag."""
    return [module.training for module in model.modules()]


class PreparedNTK:
    """`empirical_ntk` of a model on fixed inputs, planned once and computed on each call.

    Building it does everything of `empirical_ntk` but the kernel: it checks every
    argument, runs the model on one example, checks that it treats the examples
    independently, and chooses the method, whose result on one or two examples is checked
    against autograd. A call then computes Θ̂ for the model's parameters as they are now,
    at the cost of the kernel alone (the checks were 15% of a whole `empirical_ntk` call
    for the 256-example MLP of ``benchmarks/recorders.py``). The plan holds the live
    parameter and buffer tensors, so updates in place (an optimizer step,
    ``load_state_dict``) are seen; a call that finds the model's tensors replaced (a new
    ``nn.Parameter``, ``.data =``, ``.to(dtype)``, a parameter frozen or unfrozen) plans
    again, checks included, and so does a call that finds a module in training mode that
    was in eval mode when planned (refused as by `empirical_ntk`: BatchNorm, Dropout, a
    layer that draws random numbers); other changes to a module's configuration (e.g. a
    layer's attributes) are not looked for.

    Args: those of `empirical_ntk` but ``progress``, which each call takes.

    Attributes:
        method: the method that runs (`resolve_method`).
    """

    def __init__(
        self,
        model: nn.Module,
        x1: Batch,
        x2: Batch | None = None,
        *,
        mode: str | Mode = Mode.TRACE,
        diagonal: bool = False,
        method: str | Method = Method.AUTO,
        memory_budget: int | float | str | None = None,
        params: Mapping[str, torch.Tensor] | None = None,
        output: OutputSelector | None = None,
    ) -> None:
        self.model = model
        self._arguments = (x1, x2, mode, diagonal, method, memory_budget, params, output)
        self._replan()

    def _replan(self) -> None:
        with torch.inference_mode(False), torch.enable_grad():
            self._plan = _plan(self.model, *self._arguments)
        self._signature, self._training = _signature(self.model), _training(self.model)

    @property
    def method(self) -> Method:
        return self._plan.method

    def __call__(self, progress: Progress | None = None) -> torch.Tensor:
        """Θ̂ for the model's current parameters (shapes as `empirical_ntk` returns).

        Args:
            progress: called as ``progress(tiles_done, tiles_total)`` after each tile.
        """
        training = _training(self.model)
        switched = len(training) != len(self._training) or any(
            now and not before for now, before in zip(training, self._training, strict=True)
        )  # a module in training mode now, in eval mode when planned: checked again
        if switched or _signature(self.model) != self._signature:
            self._replan()
        else:
            refuse_training_mode(self.model)
        with torch.inference_mode(False), torch.enable_grad():
            return self._plan.run(progress)


def resolve_method(
    model: nn.Module,
    x1: Batch,
    x2: Batch | None = None,
    *,
    mode: str | Mode = Mode.TRACE,
    diagonal: bool = False,
    method: str | Method = Method.AUTO,
    memory_budget: int | float | str | None = None,
    params: Mapping[str, torch.Tensor] | None = None,
    output: OutputSelector | None = None,
) -> Method:
    """The method `empirical_ntk` runs with these arguments (AUTO resolved).

    Costs the probes of `Method.AUTO`: for each method tried, its kernel on one or two
    examples and one backward pass. Arguments as in `empirical_ntk`.
    """
    with torch.inference_mode(False), torch.enable_grad():
        plan = _plan(model, x1, x2, mode, diagonal, method, memory_budget, params, output)
        return plan.method


def empirical_ntk(
    model: nn.Module,
    x1: Batch,
    x2: Batch | None = None,
    *,
    mode: str | Mode = Mode.TRACE,
    diagonal: bool = False,
    method: str | Method = Method.AUTO,
    memory_budget: int | float | str | None = None,
    params: Mapping[str, torch.Tensor] | None = None,
    output: OutputSelector | None = None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Empirical NTK ``Θ̂(x, x') = J(x) J(x')ᵀ`` of ``model`` w.r.t. its trainable parameters.

    Jacot, Gabriel & Hongler (2018); methods after Novak, Sohl-Dickstein & Schoenholz,
    "Fast finite width neural tangent kernel" (ICML 2022). The model must treat the
    examples of a batch independently and deterministically: BatchNorm and Dropout in
    training mode are refused, and so is a model whose output for one example changes with
    the rest of the batch (checked on up to 3 examples of x1).

    Args:
        model: any ``nn.Module`` mapping a batch of N examples to outputs (N, ...)
            (flattened to O outputs). Parameters with ``requires_grad=False`` are excluded
            from θ.
        x1: a batch of N1 examples: a tensor (``model(x1)``), a tuple of tensors
            (``model(*x1)``) or a mapping of tensors (``model(**x1)``, e.g. ``input_ids``
            and ``attention_mask``), every tensor with first dimension N1. Floating-point
            tensors must have the parameters' dtype and device; integer tensors (token
            ids, masks) are data, not differentiated.
        x2: a batch of N2 examples of the same kind; None means x1 (and half the work).
        mode: "trace" (mean over outputs, (N1, N2)) or "full" ((N1, N2, O, O)).
        diagonal: only Θ̂(x_n, x_n): (N1,) or (N1, O, O); requires x2=None.
        method: "auto", "structured", "jacobian", "ntvp" or "autograd" (see `Method`).
        memory_budget: bound on working memory beyond the returned kernel, the model and
            the inputs, bytes or a string such as "2GB"; default half of free GPU memory or
            a quarter of free RAM. The kernel is computed in tiles that fit it, counting
            the features kept, the autograd graph and gradient buffers of the chunk whose
            features are being computed (measured on one example) and the tile's
            temporaries (`ntkscope.kernels._tiling.plan_tiles`); measured as peak resident
            memory by ``tests/kernels/test_memory_budget.py``. On CPU the kind of budget
            sets glibc's heap thresholds for the process: an explicit one so that freed
            tiles are returned, the default so that a kernel computed again finds its
            blocks resident (`ntkscope.kernels._tiling.resolve_budget`). When the
            features of all examples do not fit, some are recomputed.
        params: replacement values for some trainable parameters, by name as in
            ``model.named_parameters()`` (e.g. a trajectory's checkpoints); the module
            itself is not changed.
        output: a callable taking what the model returns and giving the (N, ...) tensor to
            differentiate, e.g. ``lambda out: out.logits[:, -1]``. Default: a tensor as it
            is; an object or dict with ``logits`` (a Hugging Face ``ModelOutput``) its
            logits; a tuple or mapping its first tensor.
        progress: called as ``progress(tiles_done, tiles_total)`` after each tile.

    Returns:
        The kernel in the parameters' dtype and on their device. In full mode, a kernel of
        x1 with itself computed as one tile may be a non-contiguous view (output-major
        (O, N, O, N) storage, the order in which it was computed, so that no 0.9 ms copy is
        made for a 128-example MLP); ``.contiguous()`` gives (N, N, O, O) storage, and
        ``.permute(2, 0, 3, 1).reshape(O·N, O·N)`` the output-major kernel matrix.

    Raises:
        ValueError, TypeError: for bad arguments, naming the argument; ValueError if the
        model's outputs or gradients are not finite on these inputs, or if a float16 or
        bfloat16 kernel exceeds the range of its dtype.
    """
    options = dict(memory_budget=memory_budget, params=params, output=output)
    return PreparedNTK(model, x1, x2, mode=mode, diagonal=diagonal, method=method, **options)(
        progress
    )
