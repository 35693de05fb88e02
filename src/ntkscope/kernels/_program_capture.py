"""Capture a module's computation with torch.fx and translate each node to a kernel step.

torch.fx rather than torch.export: ``symbolic_trace`` needs no example input (the kernel
function is built before any data is seen), keeps every ``nn.Module`` call as one node
holding the module itself (so a layer's type, its parameterization and its parameters are
read directly, and errors name the layer as the user wrote it), and runs in milliseconds;
torch.export lowers modules to aten operations, which would have to be matched back to
layers. The price: data-dependent Python control flow cannot be traced (the error says
so and points to `ntkscope.monte_carlo_kernels`).

Before the first weight layer the program runs on the inputs themselves (any
parameter-free operation is applied to x and x' as the network would); a weight layer turns
them into a `Kernel` (Σ⁰[p, p'] = mean_c x_c[p] x'_c[p'], Θ⁰ = 0, docs/conventions.md), and from
there each node is one `Kernel -> Kernel` function of `ntkscope.kernels._program_ops`.
"""

from __future__ import annotations

import functools
import operator
from numbers import Real

import torch
import torch.fx as fx
from torch import nn
from torch.nn import functional as F

from ntkscope.kernels import _program_ops as ops
from ntkscope.kernels._program_concat import CATS, concat_parts
from ntkscope.kernels._program_kernel import Context, Kernel, ProgramError
from ntkscope.kernels._program_pooling import (
    adaptive_step,
    avg_pool_step,
    functional_pooling,
    mean_step,
)
from ntkscope.kernels._program_step import SUGGESTION, Raw, Step, label, pair
from ntkscope.kernels.dual import _FUNCTIONS as ELEMENTWISE_FUNCTIONS
from ntkscope.kernels.dual import Dual, _hashable, for_activation
from ntkscope.models.layers import ActivationLayer, Conv, Dense


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


class _Tracer(fx.Tracer):
    """Keeps ntkscope's own layers whole, like torch's built-in modules."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, Dense | Conv | ActivationLayer) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    """The fx graph of ``model``; a clear error when it cannot be traced."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    try:
        graph = _Tracer().trace(model)
    except Exception as error:  # data-dependent control flow, unsupported Python
        raise ProgramError(
            f"model: torch.fx cannot trace {type(model).__name__} "
            f"({type(error).__name__}: {error}); {SUGGESTION}"
        ) from error
    return fx.GraphModule(model, graph)


def _mean_square(t: torch.Tensor | None) -> float:
    return 0.0 if t is None else float(t.detach().double().square().mean())


def _grad(t: torch.Tensor | None) -> bool:
    return t is not None and t.requires_grad


def _plain_affine(weight: torch.Tensor, bias: torch.Tensor | None, fan_in: int) -> ops.Affine:
    """Standard parameterization read from the parameters: σ_w² = n · mean W², σ_b² = mean b²."""
    return ops.Affine(
        weight_var=fan_in * _mean_square(weight),
        bias_var=_mean_square(bias),
        weight_grad=float(fan_in) if _grad(weight) else 0.0,
        bias_grad=1.0 if _grad(bias) else 0.0,
    )


def _ntkscope_affine(layer: Dense | Conv, fan_in: int) -> ops.Affine:
    """The layer's declared σ_w, σ_b and its forward multipliers."""
    has_bias = layer.bias is not None
    return ops.Affine(
        weight_var=layer.sigma_w**2,
        bias_var=layer.sigma_b**2 if has_bias else 0.0,
        weight_grad=layer.weight_scale**2 * fan_in if _grad(layer.weight) else 0.0,
        bias_grad=layer.bias_scale**2 if _grad(layer.bias) else 0.0,
    )


def _affine_text(kind: str, affine: ops.Affine, label: str) -> str:
    return (
        f"{label}: {kind}  Σ = {affine.weight_var:.4g}·K + {affine.bias_var:.4g}, "
        f"Θ = {affine.weight_var:.4g}·T + {affine.weight_grad:.4g}·K + {affine.bias_grad:.4g}"
    )


def _dense_step(node: fx.Node, module: nn.Module) -> Step:
    fan_in = module.weight.shape[1]
    if isinstance(module, Dense):
        affine, kind = _ntkscope_affine(module, fan_in), f"Dense {fan_in}→{module.weight.shape[0]}"
        kind += f" ({module.parameterization.value})"
    else:
        affine = _plain_affine(module.weight, module.bias, fan_in)
        kind = f"Linear {fan_in}→{module.weight.shape[0]} (standard)"
    name = node.name
    return Step(
        node,
        _affine_text(kind, affine, label(node)),
        lambda k, ctx: ops.dense(k[0], affine, name),
        kind="layer",
        channel=-1,
    )


def _conv_windows(module: nn.Module, dims: int) -> list[ops.Window]:
    sizes, strides = pair(module.kernel_size, dims), pair(module.stride, dims)
    dilations = pair(module.dilation, dims)
    if module.padding == "same":
        totals = [d * (k - 1) for d, k in zip(dilations, sizes, strict=True)]
        pads = [(t // 2, t - t // 2) for t in totals]
    elif module.padding == "valid":
        pads = [(0, 0)] * dims
    else:
        pads = [(p, p) for p in pair(module.padding, dims)]
    return [ops.Window(*w) for w in zip(sizes, strides, dilations, pads, strict=True)]


def _conv_step(node: fx.Node, module: nn.Module) -> Step:
    if isinstance(module, Conv):
        c_out, c_in, k = module.weight.shape[:3]
        dims = module.weight.dim() - 2
        windows = [ops.Window(k, 1, 1, (module.padding, module.padding))] * dims
        fan_in = module.weight[0].numel()
        affine = _ntkscope_affine(module, fan_in)
        kind = f"Conv {dims}-d {c_in}→{c_out} k={k} ({module.parameterization.value})"
    else:
        if module.groups != 1 or module.padding_mode != "zeros":
            raise ProgramError(
                f"{node.target}: {type(module).__name__} with groups={module.groups}, "
                f"padding_mode={module.padding_mode!r} is not supported (groups=1 and zero "
                f"padding are); {SUGGESTION}"
            )
        windows = _conv_windows(module, module.weight.dim() - 2)
        fan_in = module.weight[0].numel()
        affine = _plain_affine(module.weight, module.bias, fan_in)
        kind = (
            f"{type(module).__name__} {module.in_channels}→{module.out_channels} "
            f"k={module.kernel_size} stride={module.stride} dilation={module.dilation} "
            f"padding={module.padding} (standard)"
        )
    name = node.name
    return Step(
        node,
        _affine_text(kind, affine, label(node)),
        lambda k, ctx: ops.conv(k[0], affine, windows, name),
        kind="layer",
        channel=0,
    )


def _activation_step(node: fx.Node, dual: Dual) -> Step:
    return Step(
        node,
        f"{label(node)}: activation {dual.name}  Σ = E[φ(u)φ(v)], Θ = T·E[φ'(u)φ'(v)]",
        lambda k, ctx: ops.activation(k[0], dual, ctx),
        kind="activation",
        arrays=dual.arrays,
        gaussian=dual.name == "identity",
        what=dual.name,
    )


def _norm_step(node: fx.Node, module: nn.Module) -> Step:
    shape = tuple(module.normalized_shape)
    if len(shape) != 1:
        raise ProgramError(
            f"{node.target}: {type(module).__name__} over {shape}: only a norm over the last "
            f"(width) axis is supported; {SUGGESTION}"
        )
    weight, bias = module.weight, getattr(module, "bias", None)
    eps = module.eps if module.eps is not None else torch.finfo(torch.get_default_dtype()).eps
    gain = torch.ones(1) if weight is None else weight.detach().double()
    shift = torch.zeros(1) if bias is None else bias.detach().double()
    spec = ops.Norm(
        eps=eps,
        centered=isinstance(module, nn.LayerNorm),
        gain_var=float(gain.square().mean()),
        bias_var=float(shift.square().mean()),
        gain_mean=float(gain.mean()),
        bias_mean=float(shift.mean()),
        gain_grad=1.0 if _grad(weight) else 0.0,
        bias_grad=1.0 if _grad(bias) else 0.0,
    )
    keeps = not shift.any() and bool((gain == gain.flatten()[0]).all())
    name = node.name
    centered = "(K − μμ')/√((σ²+ε)(σ'²+ε))" if spec.centered else "K/√((q+ε)(q'+ε))"
    text = (
        f"{label(node)}: {type(module).__name__}  Σ = {spec.gain_var:.4g}·{centered} + "
        f"{spec.bias_var:.4g}, ε={eps:g}"
    )
    return Step(
        node, text, lambda k, ctx: ops.norm(k[0], spec, ctx, name), kind="norm", gaussian=keeps
    )


def _identity_step(node: fx.Node, what: str) -> Step:
    return Step(node, f"{label(node)}: {what} (identity)", lambda k, ctx: k[0])


_ELEMENTWISE_MODULES = (
    nn.ReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.Softplus,
    nn.Mish,
    nn.LeakyReLU,
    nn.CELU,
    nn.SELU,
    nn.Hardtanh,
)


def _module_step(node: fx.Node, module: nn.Module) -> Step:
    """The step of a ``call_module`` node, or an error naming the layer."""
    kind = type(module).__name__
    if isinstance(module, nn.Linear | Dense):
        return _dense_step(node, module)
    if isinstance(module, nn.Conv1d | nn.Conv2d | Conv):
        return _conv_step(node, module)
    dual = _module_dual(module)
    if dual is not None:
        return _activation_step(node, dual)
    if isinstance(module, nn.LayerNorm | nn.RMSNorm):
        return _norm_step(node, module)
    if isinstance(module, nn.Identity):
        return _identity_step(node, kind)
    if isinstance(module, nn.Dropout | nn.Dropout1d | nn.Dropout2d | nn.AlphaDropout):
        if module.training:
            raise ProgramError(f"{node.target}: {kind} in training mode; call model.eval() first")
        return _identity_step(node, f"{kind} in eval mode")
    if isinstance(module, nn.AvgPool1d | nn.AvgPool2d):
        dims = 1 if isinstance(module, nn.AvgPool1d) else 2
        return avg_pool_step(
            node,
            dims,
            module.kernel_size,
            module.stride,
            module.padding,
            module.ceil_mode,
            module.count_include_pad,
        )
    if isinstance(module, nn.AdaptiveAvgPool1d | nn.AdaptiveAvgPool2d):
        dims = 1 if isinstance(module, nn.AdaptiveAvgPool1d) else 2
        return adaptive_step(node, dims, module.output_size)
    if isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            raise ProgramError(f"{node.target}: Flatten must flatten axes 1.. (start_dim=1)")
        return _flatten_step(node)
    raise ProgramError(
        f"{node.target}: layer {kind} has no infinite-width kernel in ntkscope "
        f"(supported: Linear, Conv1d/Conv2d, ntkscope Dense/Conv, average pooling, "
        f"LayerNorm/RMSNorm, elementwise activations, Dropout in eval mode); {SUGGESTION}"
    )


def _flatten_step(node: fx.Node) -> Step:
    return Step(node, f"{label(node)}: flatten", lambda k, ctx: ops.flatten(k[0]))


def _scale_step(node: fx.Node, factor: float) -> Step:
    return Step(
        node, f"{label(node)}: × {factor:g}  Σ = c²K", lambda k, ctx: ops.scale(k[0], factor)
    )


def _add_step(node: fx.Node, sign: float, modules: dict[str, nn.Module]) -> Step:
    a, b = node.args[:2]
    name = node.name
    if a is b:  # h + h = 2h; h − h = 0
        return _scale_step(node, 1.0 + sign)
    shared = _shared_branches(a, b, modules)
    if shared is not None:
        return _shared_add_step(node, sign, *shared)

    def apply(k: list[Kernel], ctx: Context) -> Kernel:
        return ops.add(k[0], k[1] if sign > 0 else ops.scale(k[1], -1.0), name)

    text = f"{name}: {'sum' if sign > 0 else 'difference'} of branches  Σ = K_a + K_b + μ_a μ_b'"
    return Step(node, text + " + μ_b μ_a'", apply, kind="add")


def _unscaled(node: fx.Node) -> tuple[fx.Node, float]:
    """(g, c) with ``node`` = c·g through scalar multiples (c = 1 if there are none)."""
    factor = 1.0
    while node.op in ("call_function", "call_method") and _scale_factor(node) is not None:
        factor *= _scale_factor(node)
        node = node.all_input_nodes[0]
    return node, factor


def _shared_branches(
    a: fx.Node, b: fx.Node, modules: dict[str, nn.Module]
) -> tuple[int, Dual, fx.Node, float] | None:
    """For a sum c_a·φ(g) + c_b·g (either order): (index of the φ branch, φ's dual, g,
    c_a·c_b); None for any other pair of branches."""
    (na, ca), (nb, cb) = _unscaled(a), _unscaled(b)
    for first, f, g in ((0, na, nb), (1, nb, na)):
        dual = _node_dual(f, modules)
        if dual is not None and f.all_input_nodes == [g]:
            return first, dual, g, ca * cb
    return None


def _shared_add_step(node: fx.Node, sign: float, first: int, dual: Dual, g: fx.Node, c: float):
    name = node.name

    def apply(k: list[Kernel], ctx: Context) -> Kernel:
        a, b = k[0], k[1] if sign > 0 else ops.scale(k[1], -1.0)
        f, linear = (a, b) if first == 0 else (b, a)
        return ops.add_shared(f, linear, k[2], dual, c * sign, ctx)

    text = (
        f"{name}: sum of a·{dual.name}(g) and b·g, g = {g.name}  Σ = K_a + K_b + "
        f"ab(E[φ'(u)] + E[φ'(u')]) K_g, Θ likewise with T_g"
    )
    return Step(node, text, apply, kind="add_shared", extra=(g,))


_ACTIVATION_METHODS = frozenset({"relu", "tanh", "sigmoid", "erf", "abs", "sin", "cos", "sign"})
_SERIES_FUNCTIONS = frozenset(
    {F.selu, F.celu, F.hardtanh, F.relu6, torch.selu, torch.celu, torch.clamp, torch.clip}
)
"""Elementwise functions with no built-in name, as their module forms (nn.SELU, nn.CELU,
nn.Hardtanh, nn.ReLU6): the numerical series dual; clamps with number bounds only."""
_SERIES_METHODS = {"clamp": torch.clamp, "clip": torch.clip}


def _function_activation(node: fx.Node) -> Dual | None:
    """The dual of an elementwise torch function or tensor method, else None."""
    target, args, kwargs = node.target, node.args[1:], dict(node.kwargs)
    if any(isinstance(a, fx.Node) for a in (*args, *kwargs.values())):
        return None  # a tensor argument (a clamp to another tensor, ...)
    if node.op == "call_method":
        if target in _ACTIVATION_METHODS and not args:
            return for_activation(target)
        target = _SERIES_METHODS.get(target)
    known = _hashable(target) and (target in ELEMENTWISE_FUNCTIONS or target in _SERIES_FUNCTIONS)
    if not known:
        return None
    if not args and not kwargs:
        return for_activation(target)
    if target is F.leaky_relu:
        return for_activation(nn.LeakyReLU(*args, **kwargs))
    if target is F.gelu:
        return for_activation(nn.GELU(*args, **kwargs))

    def fn(u: torch.Tensor) -> torch.Tensor:  # the node's other arguments after u
        return target(u, *args, **kwargs)

    functools.update_wrapper(fn, target)
    return for_activation(fn)


def _module_dual(module: nn.Module) -> Dual | None:
    """The dual of an activation module, else None."""
    if isinstance(module, ActivationLayer):
        return for_activation(module.activation)
    return for_activation(module) if isinstance(module, _ELEMENTWISE_MODULES) else None


def _node_dual(node: fx.Node, modules: dict[str, nn.Module]) -> Dual | None:
    """The dual of an activation node (module, function or method), else None."""
    if node.op == "call_module":
        return _module_dual(modules[node.target])
    if node.op in ("call_function", "call_method"):
        return _function_activation(node)
    return None


def _scale_factor(node: fx.Node) -> float | None:
    """c when ``node`` is c times its one tensor argument (mul, div by a number, neg)."""
    target, numbers = node.target, _numbers(node)
    tensors = tuple(a for a in node.args if isinstance(a, fx.Node))
    if target in (operator.mul, torch.mul, "mul") and len(tensors) == 1 and numbers:
        return numbers[0]
    if target in (operator.truediv, torch.div, "div") and tensors == node.args[:1] and numbers:
        return 1.0 / numbers[0]
    if target in (operator.neg, torch.neg, "neg"):
        return -1.0
    return None


def _numbers(node: fx.Node) -> list[float]:
    return [float(a) for a in node.args if _is_number(a)]


def _function_step(node: fx.Node, modules: dict[str, nn.Module]) -> Step:
    """The step of a ``call_function`` or ``call_method`` node."""
    target, name = node.target, getattr(node.target, "__name__", str(node.target))
    act = _function_activation(node)
    if act is not None:
        return _activation_step(node, act)
    tensors = [a for a in node.args if isinstance(a, fx.Node)]
    if target in CATS:
        return Step(node, *concat_parts(node), kind="cat")
    if target in (operator.add, torch.add, "add") and len(tensors) == 2 and not node.kwargs:
        return _add_step(node, 1.0, modules)
    if target in (operator.sub, torch.sub, "sub") and len(tensors) == 2 and not node.kwargs:
        return _add_step(node, -1.0, modules)
    factor = _scale_factor(node)
    if factor is not None:
        return _scale_step(node, factor)
    if target in (torch.flatten, "flatten") and _flatten_args(node):
        return _flatten_step(node)
    if target in ("view", "reshape", torch.reshape) and _flat_shape(node):
        return _flatten_step(node)
    if target in (torch.mean, "mean") and len(node.args) + len(node.kwargs) > 1:
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        return mean_step(node, dims, bool(keepdim))
    pooling = functional_pooling(node)
    if pooling is not None:
        return pooling
    if target in (F.dropout, "dropout") and not node.kwargs.get("training", True):
        return _identity_step(node, "dropout, training=False")
    if target in ("contiguous", "clone", "detach") or target is torch.clone:
        return _identity_step(node, name)
    if target in (getattr, "size", operator.getitem) and _is_shape_query(node):
        return Step(node, "", lambda k, ctx: k[0])
    raise ProgramError(
        f"{node.name}: the operation {name}{tuple(str(a) for a in node.args)} has no "
        f"infinite-width kernel in ntkscope; {SUGGESTION}"
    )


def _flatten_args(node: fx.Node) -> bool:
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return start == 1 and end == -1


def _flat_shape(node: fx.Node) -> bool:
    """x.view(N, -1) / reshape(N, -1), N being the batch size (any expression)."""
    shape = node.args[1:] if len(node.args) > 2 else node.args[1] if len(node.args) > 1 else ()
    return len(shape) == 2 and shape[1] == -1


def _is_shape_query(node: fx.Node) -> bool:
    """x.size(..), x.shape, x.shape[0]: integers, not tensors."""
    if node.target == "size" or (node.target is getattr and node.args[1] == "shape"):
        return True
    source = node.args[0]
    return isinstance(source, fx.Node) and _is_shape_query(source)


def steps(graph: fx.GraphModule) -> tuple[fx.Node, list[Step], fx.Node]:
    """(input node, steps in order, output node) of a traced model; unsupported ops raise."""
    placeholders = [n for n in graph.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ProgramError(
            f"model: forward takes {len(placeholders)} inputs; the kernel program takes "
            f"one tensor (N, ...); {SUGGESTION}"
        )
    modules = dict(graph.named_modules())
    program: list[Step] = []
    output = None
    for node in graph.graph.nodes:
        if node.op == "call_module":
            program.append(_module_step(node, modules[node.target]))
        elif node.op in ("call_function", "call_method"):
            program.append(_function_step(node, modules))
        elif node.op == "get_attr":
            raise ProgramError(
                f"{node.target}: a parameter or buffer used outside a supported layer; {SUGGESTION}"
            )
        elif node.op == "output":
            output = node.args[0]
    if not isinstance(output, fx.Node):
        raise ProgramError(f"model: expected one output tensor (N, O); {SUGGESTION}")
    return placeholders[0], program, output


def input_kernel(raw: Raw, channel: int) -> Kernel:
    """Σ⁰[p, p'] = mean_c x_c[p] x'_c[p'] (channels on per-example axis ``channel``), Θ⁰ = 0,
    μ⁰[p] = mean_c x_c[p]."""

    def rows(x: torch.Tensor) -> torch.Tensor:
        x = x.movedim(channel % (x.dim() - 1) + 1, -1)
        return x.reshape(len(x), -1, x.shape[-1])

    x1 = raw.x1
    positions = tuple(s for i, s in enumerate(x1.shape[1:]) if i != channel % (x1.dim() - 1))
    a = rows(x1)
    b = a if raw.x2 is None else rows(raw.x2)
    if raw.x2 is None:
        nngp = torch.einsum("apc,aqc->apq", a, a) / a.shape[-1]
        batch = (len(x1),)
    else:
        nngp = torch.einsum("apc,bqc->abpq", a, b) / a.shape[-1]
        batch = (len(x1), len(raw.x2))
    nngp = nngp.reshape(*batch, *positions, *positions)
    mean = tuple(r.mean(-1).reshape(len(r), *positions) for r in (a, b))
    return Kernel(
        nngp,
        torch.zeros_like(nngp),
        batch=len(batch),
        ndim=x1.dim() - 1,
        channel=channel % (x1.dim() - 1),
        mean=mean,
    )
