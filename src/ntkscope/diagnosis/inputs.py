"""What `ntkscope.diagnose` is given: a model factory and data, checked with clear errors.

A factory is a callable returning a fresh ``nn.Module``. ``torch.manual_seed(seed)`` is
always called first; then the seed is passed by keyword if the factory has a parameter
named ``seed`` (``make_model(seed=0)``), positionally if it has exactly one required
positional parameter (``make_model(s)``), and otherwise not at all: the factory is called
with no arguments and keeps its defaults (``make_model(d_in=64, d_out=10)``). From the
command line it is named ``path/to/file.py:function``. Data are a built-in name
(`ntkscope.data.load`), a `Dataset`, or a ``.npz`` file with arrays ``x`` and ``y``
(optionally ``x_test`` and ``y_test``; integer ``y`` are class labels). Signed-integer
``x`` are token ids, kept as int64 (N, L) for an ``nn.Embedding``; float or unsigned
(pixel) ``x`` are inputs, flattened to (N, d).
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ntkscope import _batch
from ntkscope.data import Dataset, DatasetName, load
from ntkscope.data.files import npz_pair, read_npz

Factory = Callable[..., nn.Module]


def load_factory(spec: str) -> Factory:
    """The function named by ``"path/to/file.py:function"``, imported from that file."""
    path, sep, name = str(spec).rpartition(":")
    if not sep or not path or not name:
        raise ValueError(f"model: expected 'path/to/file.py:function', got {spec!r}")
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"model: no such file {path!r}")
    module_spec = importlib.util.spec_from_file_location(f"_ntkscope_user_{file.stem}", file)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"model: {path!r} is not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module  # dataclasses and pickling look modules up here
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:  # the user's file failed: say where, without our traceback
        raise ValueError(
            f"model: importing {path!r} failed: {type(error).__name__}: {error}"
        ) from error
    factory = getattr(module, name, None)
    if factory is None:
        raise ValueError(f"model: {path!r} has no function {name!r}")
    if not callable(factory):
        raise ValueError(f"model: {path}:{name} is not callable")
    return factory


_FORMS = (
    "make_model(), make_model(seed) with one required positional parameter, "
    "make_model(..., seed=...) with a parameter named seed, or any factory whose other "
    "parameters all have defaults"
)


def _seed_arguments(factory: Factory, seed: int) -> tuple[tuple, dict]:
    """How ``factory`` takes the seed (module docstring); a clear error if it cannot be
    called in any accepted form."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return (), {}
    kinds = inspect.Parameter
    if any(p.name == "seed" and p.kind != kinds.POSITIONAL_ONLY for p in parameters):
        return (), {"seed": seed}
    required = [p for p in parameters if p.default is p.empty and p.kind not in (
        kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)]  # fmt: skip
    positional = (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
    if len(required) == 1 and required[0].kind in positional:
        return (seed,), {}
    if required:
        names = ", ".join(p.name for p in required)
        raise TypeError(
            f"model_factory: cannot be called with the seed alone (required parameters: "
            f"{names}); accepted forms: {_FORMS}"
        )
    return (), {}


def build(factory: Factory, seed: int) -> nn.Module:
    """The factory's model after ``torch.manual_seed(seed)``, the seed passed as the module
    docstring says; checked."""
    if not callable(factory):
        raise TypeError(f"model_factory: expected a callable, got {type(factory).__name__}")
    args, kwargs = _seed_arguments(factory, seed)
    torch.manual_seed(seed)
    try:
        model = factory(*args, **kwargs)
    except Exception as error:  # the user's code failed
        raise ValueError(f"model_factory: raised {type(error).__name__}: {error}") from error
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model_factory: expected it to return a torch.nn.Module, got {type(model).__name__}"
        )
    return model


def _from_npz(path: Path, dtype: torch.dtype) -> tuple[Dataset, Dataset | None]:
    """The pool ``x``, ``y`` and the test set ``x_test``, ``y_test`` if present (`read_npz`,
    `npz_pair`: errors name the key and the file); float inputs and targets in ``dtype``."""
    arrays = read_npz(path, "data")
    x, y = npz_pair(arrays, ("x", "y"), ("data", "data"), path)
    test = None
    if "x_test" in arrays or "y_test" in arrays:
        x_test, y_test = npz_pair(arrays, ("x_test", "y_test"), ("data", "data"), path)
        if x_test.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"data: array 'x_test' of {str(path)!r} has examples of shape "
                f"{x_test.shape[1:]}, 'x' has {x.shape[1:]}; expected the same"
            )
        test = (x_test, y_test)

    def dataset(x: np.ndarray, y: np.ndarray) -> Dataset:
        labels = np.issubdtype(y.dtype, np.integer)
        yt = torch.as_tensor(y, dtype=torch.int64 if labels else dtype)
        n_classes = int(y.max()) + 1 if labels else None
        if np.issubdtype(x.dtype, np.signedinteger):  # token ids
            return Dataset(torch.as_tensor(x, dtype=torch.int64), yt, path.stem, n_classes, None)
        xt = torch.as_tensor(x, dtype=dtype)
        shape = tuple(xt.shape[1:]) if xt.dim() == 4 else None
        return Dataset(xt.reshape(len(xt), -1), yt, path.stem, n_classes, shape)

    return dataset(x, y), None if test is None else dataset(*test)


def _subset(pool: Dataset, index: torch.Tensor) -> Dataset:
    return Dataset(pool.x[index], pool.y[index], pool.name, pool.n_classes, pool.image_shape)


def split(
    data: str | Path | Dataset,
    n_train: int,
    n_test: int,
    seed: int,
    *,
    asked: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Dataset, Dataset]:
    """Disjoint training and test sets of the requested sizes, drawn with ``seed``;
    ``asked`` names the requested size in the error of a too small data set (default
    "n_train + n_test", or "n_train" when the test set is not drawn from it). A built-in
    set or a ``.npz`` file is read into ``dtype`` (inputs, and float targets) from its own
    values, so float64 data keep their precision; a `Dataset` is taken as it is."""
    test: Dataset | None = None
    if isinstance(data, Dataset):
        pool = data
    elif isinstance(data, str) and data in {n.value for n in DatasetName}:
        n = None if data == DatasetName.DIGITS else n_train + n_test
        pool = load(data, n, seed=seed, dtype=dtype)
    elif isinstance(data, str | Path):
        path = Path(data)
        if not path.is_file():
            known = ", ".join(n.value for n in DatasetName)
            raise ValueError(
                f"data: expected a built-in name ({known}) or a .npz file, got {str(data)!r}"
            )
        pool, test = _from_npz(path, dtype)
    else:
        raise TypeError(f"data: expected a name, a path or a Dataset, got {type(data).__name__}")
    need = n_train + (0 if test is not None else n_test)
    if len(pool) < need:
        asked = asked or ("n_train" if need == n_train else "n_train + n_test")
        raise ValueError(f"data: {pool.name!r} has {len(pool)} examples, {need} needed ({asked})")
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))
    if test is None:
        test = _subset(pool, order[n_train : n_train + n_test])
    return _subset(pool, order[:n_train]), test


def fit_inputs(model: nn.Module, data: Dataset) -> Callable[[torch.Tensor], torch.Tensor]:
    """How to feed ``data.x`` to ``model``: flat, or as images (N, C, H, W) if only that
    works. Raises a ValueError quoting the model's own error when neither does."""
    like = next(iter(model.parameters()), torch.empty(0))
    flat = _batch.to(data.x[:2], dtype=like.dtype)
    tries: list[tuple[str, Callable]] = [("flat", lambda x: x)]
    if data.image_shape is not None:
        tries.append(("images", lambda x: x.reshape(len(x), *data.image_shape)))
    errors = []
    for name, shape in tries:
        try:
            with torch.no_grad():
                out = _batch.forward(model, shape(flat).to(like.device))
        except Exception as error:  # the model rejects this layout; try the next
            errors.append(f"as {name} {tuple(shape(flat).shape)}: {type(error).__name__}: {error}")
            continue
        if isinstance(out, torch.Tensor) and out.dim() == 2:
            return shape
        errors.append(f"as {name}: expected outputs (N, O), got {tuple(getattr(out, 'shape', ()))}")
    raise ValueError(f"data: the model does not accept {data.name!r} inputs: " + "; ".join(errors))
