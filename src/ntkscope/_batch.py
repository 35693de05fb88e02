"""Batches: what a model is called with, and what of its output is differentiated.

A batch is a tensor (``model(x)``), a tuple of tensors (``model(*x)``) or a mapping of
tensors (``model(**x)``, e.g. ``input_ids`` and ``attention_mask``) whose tensors share
their first dimension N, the example. Floating-point tensors are inputs in the model's
dtype; integer and boolean tensors (token ids, masks) are data, never differentiated.
Every layer that handles inputs (kernels, dynamics, recorders, diagnose) sizes, slices,
moves and calls with a batch through this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ntkscope._checks import finite

Batch = torch.Tensor | tuple[torch.Tensor, ...] | Mapping[str, torch.Tensor]
"""A tensor, a tuple of tensors or a mapping name -> tensor, first dimension N."""

OutputSelector = Callable[[Any], torch.Tensor]
"""Takes what the model returns, gives the (N, ...) tensor to differentiate."""

_KINDS = "a tensor, a tuple of tensors or a mapping name -> tensor"


def apply(fn: Callable[[torch.Tensor], torch.Tensor], batch: Batch) -> Batch:
    """``fn`` applied to every tensor of ``batch``, keeping its kind (tuple, dict)."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, Mapping):
        return {key: fn(value) for key, value in batch.items()}
    return tuple(fn(value) for value in batch)


def tensors(batch: Batch) -> list[torch.Tensor]:
    """The tensors of ``batch`` in order."""
    if isinstance(batch, torch.Tensor):
        return [batch]
    return list(batch.values() if isinstance(batch, Mapping) else batch)


def size(batch: Batch) -> int:
    """N, the number of examples."""
    return tensors(batch)[0].shape[0]


def take(batch: Batch, index: slice | int | torch.Tensor) -> Batch:
    """Examples ``index`` (a slice, or a tensor of indices) of ``batch``."""
    return apply(lambda t: t[index], batch)


def unsqueeze(batch: Batch) -> Batch:
    """One example (no leading N, as inside ``vmap``) made a batch of one."""
    return apply(lambda t: t.unsqueeze(0), batch)


def concat(batches: Sequence[Batch]) -> Batch:
    """The examples of ``batches`` (all of the same kind and keys) one after the other."""
    first = batches[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(list(batches))
    if isinstance(first, Mapping):
        return {key: torch.cat([b[key] for b in batches]) for key in first}
    return tuple(torch.cat(parts) for parts in zip(*batches, strict=True))


def to(batch: Batch, device: torch.device | str | None = None, dtype=None) -> Batch:
    """``batch`` on ``device``; floating-point tensors converted to ``dtype`` (if given),
    integer and boolean tensors keep theirs."""

    def move(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

    return apply(move, batch)


def plain(batch: Batch) -> Batch:
    """``batch`` outside any autograd graph (and not inference tensors, which autograd
    refuses)."""
    return apply(lambda t: t.detach().clone() if t.is_inference() else t.detach(), batch)


def arguments(batch: Batch) -> tuple[tuple, dict]:
    """Positional and keyword arguments of the model's call on ``batch``."""
    if isinstance(batch, torch.Tensor):
        return (batch,), {}
    if isinstance(batch, Mapping):
        return (), dict(batch)
    return tuple(batch), {}


def call(model: Callable, batch: Batch) -> Any:
    """``model(x)``, ``model(*x)`` or ``model(**x)`` for a tensor, tuple or mapping ``x``."""
    args, kwargs = arguments(batch)
    return model(*args, **kwargs)


def forward(model: Callable, batch: Batch) -> torch.Tensor:
    """The model's output on ``batch``, selected by `default_output`."""
    return default_output(call(model, batch))


def _first_tensor(out: Any) -> torch.Tensor | None:
    values = out.values() if isinstance(out, Mapping) else out
    return next((v for v in values if isinstance(v, torch.Tensor)), None)


def default_output(out: Any) -> torch.Tensor:
    """What is differentiated when no ``output`` selector is given.

    A tensor as it is; an object with a ``logits`` attribute or key (a Hugging Face
    ``ModelOutput``, a dict) gives its logits; a tuple, list or mapping gives its first
    tensor.

    Raises:
        TypeError: naming ``output`` when none of these applies.
    """
    if isinstance(out, torch.Tensor):
        return out
    logits = out.get("logits") if isinstance(out, Mapping) else getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    first = _first_tensor(out) if isinstance(out, (tuple, list, Mapping)) else None
    if first is None:
        raise _no_default_output(out)
    return first


def _no_default_output(out: Any) -> TypeError:
    """The error for a return value in which `default_output` finds nothing; it shows a
    mapping's keys, or an object's attributes holding tensors, to choose from."""
    held = [k for k, v in getattr(out, "__dict__", {}).items() if isinstance(v, torch.Tensor)]
    if isinstance(out, Mapping):
        keys = [repr(k) for k in out]
        shown = f" (keys: {', '.join(keys[:8])}{', ...' if len(keys) > 8 else ''})"
    else:
        shown = f" (tensor attributes: {', '.join(held)})" if held else ""
    return TypeError(
        f"output: the model returns {type(out).__name__}{shown}; without output=, ntkscope "
        "differentiates a tensor as it is, else a 'logits' attribute or key holding a "
        "tensor, else the first tensor of a tuple, list or mapping, and found none; pass "
        "output=callable giving the (N, ...) tensor to differentiate"
        + (f", e.g. output=lambda out: out.{held[0]}" if held else "")
    )


def check(batch: object, argument: str, dtype: torch.dtype, device: torch.device) -> Batch:
    """``batch`` validated (errors name ``argument``) and outside any autograd graph.

    Every tensor has the first dimension N >= 1; floating-point tensors are finite and in
    ``dtype`` on ``device``; other tensors (token ids, masks) on ``device``. A plain
    floating-point tensor needs at least two dimensions (N, features...).
    """
    if isinstance(batch, list) and all(isinstance(t, torch.Tensor) for t in batch):
        batch = tuple(batch)
    if not isinstance(batch, (torch.Tensor, tuple, Mapping)) or not tensors(batch):
        raise TypeError(f"{argument}: expected {_KINDS}, got {type(batch).__name__}")
    for key, t in _named(batch, argument):
        _check_tensor(t, key, dtype, device, min_dim=2 if key == argument else 1)
    sizes = {t.shape[0] for t in tensors(batch)}
    if len(sizes) > 1:
        raise ValueError(f"{argument}: tensors have different first dimensions {sorted(sizes)}")
    return plain(batch)


def like(batch: object, argument: str, reference: torch.Tensor) -> Batch:
    """``batch`` on ``reference``'s device, floating-point tensors in its dtype, then
    validated by `check` (inputs of a training run, given in any float dtype)."""
    if isinstance(batch, (torch.Tensor, tuple, list, Mapping)):
        batch = apply(
            lambda t: (
                to(t, reference.device, reference.dtype) if isinstance(t, torch.Tensor) else t
            ),
            tuple(batch) if isinstance(batch, list) else batch,
        )
    return check(batch, argument, reference.dtype, reference.device)


def _named(batch: Batch, argument: str) -> list[tuple[str, Any]]:
    if isinstance(batch, torch.Tensor):
        return [(argument, batch)]
    items = batch.items() if isinstance(batch, Mapping) else enumerate(batch)
    return [(f"{argument}[{key!r}]", value) for key, value in items]


def _check_tensor(t: object, name: str, dtype, device, min_dim: int) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() < (min_dim if t.is_floating_point() else 1):
        raise ValueError(
            f"{name}: expected a batch with at least {min_dim} dimensions "
            f"(N, features...), got shape {tuple(t.shape)}"
        )
    if t.shape[0] == 0:
        raise ValueError(f"{name}: the batch is empty (shape {tuple(t.shape)})")
    if t.is_floating_point():
        if t.dtype != dtype or t.device != device:
            raise TypeError(
                f"{name}: dtype/device {t.dtype}/{t.device} differ from the model's "
                f"parameters {dtype}/{device}; convert with .to(...)"
            )
        finite(t, name)
    elif t.is_complex():
        raise TypeError(f"{name}: complex tensors are not supported, got {t.dtype}")
    elif t.device != device:
        raise TypeError(
            f"{name}: on {t.device}, the model's parameters on {device}; move with .to(...)"
        )


def same_kind(batch: Batch, like: Batch, argument: str, other: str) -> None:
    """Refuse ``batch`` if its kind, length or keys differ from ``like``'s."""
    kind = type(batch).__name__ if not isinstance(batch, Mapping) else "mapping"
    like_kind = type(like).__name__ if not isinstance(like, Mapping) else "mapping"
    keys = list(batch) if isinstance(batch, Mapping) else len(tensors(batch))
    like_keys = list(like) if isinstance(like, Mapping) else len(tensors(like))
    if kind != like_kind or keys != like_keys:
        raise ValueError(
            f"{argument}: a {kind} of {keys} tensors, but {other} is a {like_kind} of {like_keys}"
        )
