"""Studies by name: the built-in ones, or any importable module path.

A sweep, a stored run and ``ntkscope study run`` name a study by a string. A registered name
(``names()``) resolves to ``ntkscope.studies.<name>``; any other string is imported as a module
path (``mypackage.my_study``), so users' studies need no registration, and worker processes
(local or Dask) import a study from the same string. The study's name in the store is that
string.
"""

from __future__ import annotations

import importlib
from functools import cache

from ntkscope.studies._base import Study

_BUILTIN = (
    "width_convergence",
    "init_fluctuations",
    "phase_diagram",
    "scaling_laws",
    "kernel_over_time",
    "width_effect",
    "optimization",
    "uncertainty",
    "continual",
)


def names() -> tuple[str, ...]:
    """The registered (built-in) studies, which ``ntkscope reproduce`` runs."""
    return _BUILTIN


@cache
def get(name: str) -> Study:
    """The study called ``name``: a registered name or an importable module path.

    Raises:
        ValueError: naming ``study`` when no such study exists or the module is not a study.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"study: expected a study name, got {name!r}")
    path = f"ntkscope.studies.{name}" if name in _BUILTIN else name
    try:
        module = importlib.import_module(path)
    except ModuleNotFoundError as error:
        if error.name is None or not (path + ".").startswith(error.name + "."):
            raise
        known = ", ".join(repr(n) for n in _BUILTIN)
        raise ValueError(
            f"study: unknown study {name!r} (registered: {known}; "
            "or an importable module path such as 'mypackage.my_study')"
        ) from None
    return Study.from_module(name, module)
