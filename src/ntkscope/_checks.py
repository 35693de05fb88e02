"""Argument checks shared by the public functions: clear errors at the boundary."""

from __future__ import annotations

import math
import numbers
import re
from enum import StrEnum
from os import PathLike
from pathlib import Path
from typing import TypeVar

import torch

E = TypeVar("E", bound=StrEnum)


def choice(enum: type[E], value: str | E, argument: str) -> E:
    """Parse a string option into its enum, naming the argument on failure."""
    try:
        return enum(value)
    except ValueError:
        known = ", ".join(repr(member.value) for member in enum)
        raise ValueError(f"{argument}: expected one of {known}, got {value!r}") from None


def positive_int(value: object, argument: str) -> int:
    """An int > 0 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{argument}: expected a positive int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{argument}: expected a positive int, got {value}")
    return value


def nonnegative_int(value: object, argument: str) -> int:
    """An int >= 0 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{argument}: expected an int >= 0, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{argument}: expected an int >= 0, got {value}")
    return value


def nonnegative_real(value: object, argument: str) -> float:
    """A finite real number >= 0 (bools refused), as float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{argument}: expected a real number >= 0, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{argument}: expected a finite real number >= 0, got {value}")
    return float(value)


def positive_real(value: object, argument: str) -> float:
    """A finite real number > 0 (bools refused), as float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{argument}: expected a real number > 0, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{argument}: expected > 0, got {value}")
    return float(value)


def learning_rate(value: object, argument: str = "lr") -> float:
    """A step size: a finite real number > 0 (at 0 the parameters never move), as float."""
    try:
        return positive_real(value, argument)
    except ValueError:
        raise ValueError(f"{argument}: expected a positive learning rate, got {value}") from None


def tensor(x: object, argument: str) -> torch.Tensor:
    """``x`` itself if it is a tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{argument}: expected a torch.Tensor, got {type(x).__name__}")
    return x


def finite(x: torch.Tensor, argument: str) -> torch.Tensor:
    """``x`` itself if it has no NaN or infinite entries."""
    if not torch.isfinite(x).all():
        raise ValueError(f"{argument}: contains NaN or infinite values")
    return x


def finite_float64(x: object, argument: str) -> torch.Tensor:
    """``x`` as a detached float64 tensor with no NaN or infinite entries."""
    return finite(tensor(x, argument).detach().to(torch.float64), argument)


def columns(x: object, rows: int, argument: str) -> torch.Tensor:
    """``x`` of shape (rows,) or (rows, O) as a finite float64 (rows, O) matrix (targets,
    prior means: (rows,) becomes one column)."""
    x = finite_float64(x, argument)
    if x.dim() not in (1, 2) or x.shape[0] != rows:
        raise ValueError(f"{argument}: expected ({rows},) or ({rows}, O), got {tuple(x.shape)}")
    return x.reshape(rows, -1)


def columns_like(x: object, like: torch.Tensor, argument: str) -> torch.Tensor:
    """`columns` of ``x`` that must have the (rows, O) shape of ``like``."""
    x = columns(x, like.shape[0], argument)
    if x.shape != like.shape:
        raise ValueError(f"{argument}: expected shape {tuple(like.shape)}, got {tuple(x.shape)}")
    return x


def finite_batch(x: object, argument: str, *, min_dim: int = 2) -> torch.Tensor:
    """A floating tensor of shape (N, ...) with N >= 1, at least `min_dim` dims, no NaN/inf."""
    x = tensor(x, argument)
    if x.dim() < min_dim:
        raise ValueError(
            f"{argument}: expected a batch with at least {min_dim} dimensions "
            f"(N, features...), got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{argument}: the batch is empty (shape {tuple(x.shape)})")
    if not x.is_floating_point():
        raise TypeError(f"{argument}: expected a floating-point tensor, got {x.dtype}")
    return finite(x, argument)


_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def memory_bytes(value: int | float | str, argument: str) -> int:
    """Parse a memory size: a number of bytes or a string such as "2GB", "512MiB"."""
    if isinstance(value, bool):
        raise TypeError(f"{argument}: expected bytes or a string such as '2GB', got a bool")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"{argument}: expected a positive size, got {value!r}")
        size = int(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", value)
        unit = match.group(2).upper() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(
                f"{argument}: expected a size such as '2GB', '512MiB' or a number of bytes, "
                f"got {value!r}"
            )
        size = int(float(match.group(1)) * _UNITS[unit])
    else:
        raise TypeError(f"{argument}: expected bytes or a string such as '2GB', got {value!r}")
    if size <= 0:
        raise ValueError(f"{argument}: expected a positive size, got {value!r}")
    return size


def boolean(value: object, argument: str) -> bool:
    """True or False (not 1, "yes" or a tensor)."""
    if not isinstance(value, bool):
        raise TypeError(f"{argument}: expected True or False, got {value!r}")
    return value


def integer(value: object, argument: str) -> int:
    """Any int, such as a seed (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{argument}: expected an int, got {type(value).__name__}")
    return value


def floating_dtype(value: object, argument: str) -> torch.dtype:
    """A floating-point torch.dtype."""
    if not (isinstance(value, torch.dtype) and value.is_floating_point):
        raise TypeError(f"{argument}: expected a floating torch.dtype, got {value!r}")
    return value


def existing_path(value: str | PathLike[str], argument: str) -> Path:
    """``value`` as a Path, if a file or folder exists there."""
    if not isinstance(value, str | PathLike):
        raise TypeError(f"{argument}: expected a path, got {type(value).__name__}")
    path = Path(value)
    if not path.exists():
        raise FileNotFoundError(f"{argument}: no such file or folder: {str(path)!r}")
    return path
