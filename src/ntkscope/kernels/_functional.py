"""A module seen as a function ``f(θ, x) -> (N, O)`` of its trainable parameters θ.

``x`` is a batch (`ntkscope._batch`): a tensor, a tuple or a mapping of tensors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd
from torch.overrides import TorchFunctionMode

from ntkscope import _batch
from ntkscope._batch import Batch, OutputSelector

Params = dict[str, torch.Tensor]


class FunctionalModel:
    """Wraps a module for the eNTK: trainable parameters θ, everything else fixed.

    θ are the parameters with ``requires_grad=True``; frozen parameters and buffers are
    held fixed. ``params`` replaces some or all of θ (same names and shapes as
    ``model.named_parameters()``) without touching the module. A tied parameter (one tensor
    under several names, as GPT-2's ``lm_head.weight`` and ``transformer.wte.weight``) may
    be given under any of its names, so ``model.state_dict()`` is accepted, but under
    several only with equal values: it is one parameter of θ. ``output`` selects the
    tensor to differentiate from what the model returns (default `_batch.default_output`);
    it is flattened to (N, O): a model returning (N,) has O = 1. A model with a sparse
    embedding (``nn.Embedding(sparse=True)``, ``nn.EmbeddingBag(sparse=True)``) runs under
    `DenseGradients`, so that every method differentiates it.
    """

    def __init__(
        self,
        model: nn.Module,
        params: Mapping[str, torch.Tensor] | None = None,
        output: OutputSelector | None = None,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        if output is not None and not callable(output):
            raise TypeError(f"output: expected a callable or None, got {type(output).__name__}")
        self.module = model
        self.output = output or _batch.default_output
        named = dict(model.named_parameters())
        trainable = {name: p for name, p in named.items() if p.requires_grad}
        if not trainable:
            raise ValueError(
                "model: has no trainable parameters (every parameter has requires_grad=False)"
            )
        self.theta = {name: p.detach() for name, p in trainable.items()}
        self.theta.update(self._checked(params or {}, named, trainable, _aliases(model)))
        self.fixed = {n: p.detach() for n, p in named.items() if n not in trainable}
        self.fixed.update(dict(model.named_buffers()))
        self._sparse = any(
            isinstance(m, nn.Embedding | nn.EmbeddingBag) and m.sparse for m in model.modules()
        )
        refuse_training_mode(model)
        first = next(iter(self.theta.values()))
        self.dtype, self.device = first.dtype, first.device
        kinds = {(t.dtype, t.device) for t in self.theta.values()}
        if len(kinds) > 1:
            found = ", ".join(sorted(f"{d}/{v}" for d, v in kinds))
            raise TypeError(
                f"model: its trainable parameters have several dtypes or devices ({found}); "
                "convert the model with .to(dtype) or .to(device) first"
            )

    @staticmethod
    def _checked(params: Mapping, named: dict, trainable: dict, aliases: dict) -> Params:
        """``params`` validated, keyed by the names of ``named`` (tied aliases resolved)."""
        if not isinstance(params, Mapping):
            raise TypeError(
                f"params: expected a mapping name -> tensor, got {type(params).__name__}"
            )
        checked: Params = {}
        given_as: dict[str, str] = {}
        for name, value in params.items():
            kept = aliases.get(name, name)
            if kept not in trainable:
                what = "a frozen parameter" if kept in named else "not a parameter of the model"
                raise ValueError(f"params: {name!r} is {what}")
            _check_value(name, value, named[kept])
            if kept in checked and not torch.equal(checked[kept], value):
                raise ValueError(
                    f"params: {name!r} and {given_as[kept]!r} name one tied parameter (the "
                    "same tensor in the model) but were given different values"
                )
            checked[kept], given_as[kept] = value.detach(), name
        return checked

    @property
    def n_params(self) -> int:
        """Number of trainable scalars P."""
        return sum(t.numel() for t in self.theta.values())

    def __call__(self, theta: Params, x: Batch) -> torch.Tensor:
        """f(θ, x) as an (N, O) tensor: the selected output of the model on batch ``x``."""
        return self.output(self._apply(theta, x)).reshape(_batch.size(x), -1)

    def _apply(self, theta: Params, x: Batch) -> object:
        """What the model returns on batch ``x`` at parameters ``theta``."""
        args, kwargs = _batch.arguments(x)
        with DenseGradients() if self._sparse else contextlib.nullcontext():
            return functional_call(self.module, {**self.fixed, **theta}, args, kwargs)

    def batch(self, x: object, argument: str) -> Batch:
        """``x`` validated as a batch for this model (`_batch.check`)."""
        return _batch.check(x, argument, self.dtype, self.device)

    def depends_on_theta(self, x: Batch) -> bool:
        """Whether the selected output of the first example of ``x`` has a gradient with
        respect to θ (False for a detached output)."""
        theta = {name: t.detach().requires_grad_(True) for name, t in self.theta.items()}
        with torch.enable_grad():
            return bool(self(theta, _batch.take(x, slice(0, 1))).requires_grad)

    def check_inputs(self, x: Batch, argument: str) -> int:
        """Run one example; return O. Errors name ``argument`` instead of torch internals.

        Also refuses a model whose forward pass draws random numbers or changes a buffer in
        place (`refuse_random`, `refuse_changed_buffers`): layers in training mode that
        `refuse_training_mode` cannot know by type (stochastic depth, LayerDrop, a power
        iteration).
        """
        one = _batch.take(x, slice(0, 1))
        versions = {name: b._version for name, b in self.module.named_buffers()}
        state = _generator_state(self.device)
        try:
            with torch.no_grad():
                out = self._apply(self.theta, one)
        except Exception as error:  # the model's own error, re-raised with the argument named
            shapes = [tuple(t.shape) for t in _batch.tensors(x)]
            raise ValueError(
                f"{argument}: the model cannot be applied to inputs of shape "
                f"{shapes[0] if len(shapes) == 1 else shapes}: {error}"
            ) from error
        if not torch.equal(state, _generator_state(self.device)):
            refuse_random(self.module, self.device, lambda: self._apply(self.theta, one))
        refuse_changed_buffers(self.module, versions)
        out = self.output(out)
        if not isinstance(out, torch.Tensor) or out.dim() == 0 or out.shape[0] != 1:
            raise TypeError(
                "output: expected the selected model output to be one tensor of shape "
                f"(N, ...), got {type(out).__name__}{tuple(getattr(out, 'shape', ()))}"
            )
        if not out.is_floating_point():
            raise TypeError(
                f"output: the selected model output is a {out.dtype} tensor, which has no "
                "gradient; pass output= a function that selects a floating-point tensor "
                "(e.g. output=lambda out: out['scores'])"
            )
        return out[0].numel()


class DenseGradients(TorchFunctionMode):
    """Inside, ``F.embedding`` and ``F.embedding_bag`` run with ``sparse=False``: the same
    outputs, and a dense gradient for the embedding's weight instead of a sparse one, which
    has no ``reshape``, ``view`` or vmap rule (so no eNTK method could use it). torch hands
    ``sparse`` to the mode by keyword. A mode disables torch's fused fast paths (as of
    ``nn.TransformerEncoderLayer`` in eval mode), so `FunctionalModel` enters it only for a
    model holding a sparse embedding."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.embedding or func is F.embedding_bag:
            kwargs = {**kwargs, "sparse": False}
        return func(*args, **kwargs)


def _aliases(model: nn.Module) -> dict[str, str]:
    """Each further name of a tied parameter -> the name ``named_parameters()`` keeps."""
    kept: dict[int, str] = {}
    aliases = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        first = kept.setdefault(id(p), name)
        if first != name:
            aliases[name] = first
    return aliases


def _check_value(name: str, value: object, like: torch.Tensor) -> None:
    """``params[name]`` is a finite tensor of the parameter ``like``'s shape, dtype, device."""
    if not isinstance(value, torch.Tensor) or value.shape != like.shape:
        raise ValueError(f"params: {name!r} must be a tensor of shape {tuple(like.shape)}")
    if value.dtype != like.dtype or value.device != like.device:
        raise TypeError(
            f"params: {name!r} has dtype/device {value.dtype}/{value.device}, the "
            f"model's parameter {like.dtype}/{like.device}; convert with .to(...)"
        )
    if not torch.isfinite(value).all():
        raise ValueError(f"params: {name!r} contains NaN or infinite values")


def _generator_state(device: torch.device) -> torch.Tensor:
    """The state of the default random generator that draws for tensors on ``device``."""
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return torch.random.get_rng_state()


def refuse_random(model: nn.Module, device: torch.device, forward) -> None:
    """Refuse a model whose forward pass (``forward()``, which just advanced the default
    random generator of ``device``) draws random numbers, naming the innermost layer that
    draws them (the first whose forward pass ends with the generator moved).

    Raises:
        ValueError: naming ``model`` and the layer.
    """
    before: dict[int, torch.Tensor] = {}
    drawn: list[str] = []

    def start(module, args):
        before[id(module)] = _generator_state(device)

    def end(name):
        def hook(module, args, output):
            if not drawn and not torch.equal(before[id(module)], _generator_state(device)):
                drawn.append(f"layer {name or '(root)'!r} ({type(module).__name__})")

        return hook

    handles = []
    for name, module in model.named_modules():
        handles += [module.register_forward_pre_hook(start)]
        handles += [module.register_forward_hook(end(name))]
    try:
        with torch.no_grad():
            forward()
    finally:
        for handle in handles:
            handle.remove()
    raise ValueError(
        f"model: {drawn[0] if drawn else 'its forward pass'} draws random numbers (dropout, "
        "stochastic depth or noise in training mode?), so the model's output is random and "
        "has no eNTK; call model.eval() first"
    )


def refuse_changed_buffers(model: nn.Module, versions: dict[str, int]) -> None:
    """Refuse a model whose forward pass changed one of its buffers in place (``versions``:
    each buffer's version counter before it), so that each evaluation sees another model.

    Raises:
        ValueError: naming ``model`` and the buffer.
    """
    for name, buffer in model.named_buffers():
        if name in versions and buffer._version != versions[name]:
            raise ValueError(
                f"model: its forward pass changes the buffer {name!r} in place (running "
                "statistics or a power iteration in training mode?), so each evaluation sees "
                "another model; call model.eval() first"
            )


def refuse_training_mode(model: nn.Module) -> None:
    """BatchNorm (couples the examples) and Dropout with p > 0 (random) must be in eval mode,
    and BatchNorm must keep running statistics (without, it normalizes by the batch's even
    in eval mode)."""
    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm) and module.running_mean is None:
            raise ValueError(
                f"model: layer {name!r} ({type(module).__name__}) keeps no running statistics "
                "(track_running_stats=False), so it normalizes by the batch's statistics even "
                "in eval mode, which couples the examples of a batch: no per-example eNTK exists"
            )
        if not module.training:
            continue
        if isinstance(module, _BatchNorm):
            why = "couples the examples of a batch"
        elif isinstance(module, _DropoutNd) and module.p > 0:
            why = "makes the output random"
        else:
            continue
        raise ValueError(
            f"model: layer {name!r} ({type(module).__name__}) is in training mode, "
            f"which {why}; call model.eval() first"
        )
