"""What a study is: a config, a run that returns a `Result`, figures drawn from stored results.

A study is a module (see `ntkscope.studies` for the registry) defining:

- ``Config``: a `StudyConfig` subclass; every field documented, defaults that run in seconds.
- ``run(config, progress) -> Result``: the computation; never draws.
- ``figures(results: Results) -> dict[str, Figure]``: matplotlib figures drawn only from stored
  results (the runs of one study in a result store).
- ``captions(results: Results) -> dict[str, str]`` (optional): one line per figure that states
  what the data say, computed from the stored results (e.g. "fitted slope −0.52, theory −1/2").
- ``claims(results: Results) -> list[Claim]`` (optional): the published claims the study
  tests, each with its measured numbers and a verdict by a stated rule
  (`ntkscope.studies.Claim`); the report's findings table lists them.
- ``PRESETS``: ``{"quick": sweep, "standard": sweep, "paper": sweep}``, the published-finding
  sweeps that ``ntkscope reproduce`` runs, written as sweep tables (see
  `ntkscope.runner.sweep`); ``"full"`` is read as ``"paper"`` (its former name). A user's
  study needs only ``"quick"``; the registered ones define all three.
- ``cost(config) -> Cost`` (optional): the estimated time and peak memory of one run
  (`ntkscope.studies.Cost`), which ``--plan`` prints and the runner checks against the
  workers' memory before anything runs.

`Study` is the checked view of such a module that the runner and the report use.
"""

from __future__ import annotations

import inspect
import numbers
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ntkscope.studies._claims import Claim
    from ntkscope.studies._cost import Cost

Progress = Callable[[int, int], None]
"""Called by a study as ``progress(steps_done, steps_total)``."""

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class Preset(StrEnum):
    """The published-finding sweeps that every study declares.

    QUICK: a smoke run: every study in minutes on 2 cores; numbers that illustrate.
    STANDARD: the evidence on one ordinary machine: each claim decided (reproduced or not,
        non-overlapping intervals) in ≤ 2 hours on 2 cores, ≤ 10 GB per worker.
    PAPER: the seed papers' own scale, for a GPU or a Dask cluster; every run fits 16 GB.
        ``"full"``, its former name, is still accepted.
    """

    QUICK = "quick"
    STANDARD = "standard"
    PAPER = "paper"

    @classmethod
    def _missing_(cls, value: object) -> Preset | None:
        return cls.PAPER if value == "full" else None

    @property
    def worker_memory(self) -> int:
        """Bytes of memory a worker is assumed to have: 10 GB (quick, standard), 16 GB
        (paper); runs estimated above it are refused unless told otherwise."""
        return (16 if self is Preset.PAPER else 10) * 10**9


def extended(preset: Mapping[str, Any], **product: Any) -> dict[str, Any]:
    """``preset`` (a sweep table) with more, or other, ``product`` axes: a standard preset
    that repeats a quick grid over more seeds is ``extended(quick, seed=[0, 1, 2])``."""
    return {**preset, "product": {**preset.get("product", {}), **product}}


class StudyConfig(BaseModel):
    """Base of every study's ``Config``: frozen, unknown fields refused, fields documented.

    Document a field with a docstring under it (``use_attribute_docstrings``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


EXECUTION = {"execution": True}
"""``json_schema_extra`` of a config field that says how a run is computed, not what it
measures (e.g. ``kernel_cluster``): kept out of the config's stored JSON and hash."""


def execution_fields(config_type: type[StudyConfig]) -> set[str]:
    """Names of the `EXECUTION` fields of a config class."""
    return {
        name
        for name, info in config_type.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("execution")
    }


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise TypeError(
            f"{what}: names are strings of letters, digits, '_', '.', '-'; got {name!r}"
        )
    return name


@dataclass(frozen=True)
class Result:
    """What one run of a study returns; the store keeps every part of it.

    Attributes:
        metrics: named scalars (stored as SQLite REAL; one column each in `ntkscope.store.load`).
        tables: named pandas DataFrames (stored as Parquet).
        arrays: named NumPy arrays (stored in one ``.npz``).
    """

    metrics: Mapping[str, float] = field(default_factory=dict)
    tables: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in self.metrics.items():
            _check_name(name, "metrics")
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"metrics[{name!r}]: expected a real number, got {value!r}")
        _check_entries(self.tables, "tables", pd.DataFrame)
        _check_entries(self.arrays, "arrays", np.ndarray)
        object.__setattr__(self, "metrics", {k: float(v) for k, v in self.metrics.items()})


def _check_entries(entries: Mapping[str, object], what: str, kind: type) -> None:
    for name, value in entries.items():
        _check_name(name, what)
        if not isinstance(value, kind):
            raise TypeError(
                f"{what}[{name!r}]: expected {kind.__name__}, got {type(value).__name__}"
            )


@dataclass(frozen=True)
class Results:
    """The stored runs of one study, as `figures` sees them (`ntkscope.store.results`).

    In Jupyter they render as their runs and figures; `plot` and `to_frame` give them.

    Attributes:
        runs: one row per finished run: ``hash``, ``config.<field>`` and ``metrics.<name>``
            columns (the format of `ntkscope.store.load`).
        tables: each table name -> the tables of all runs, concatenated, with a ``hash`` column.
        arrays: ``arrays(hash)`` loads the named arrays of one run.
    """

    runs: pd.DataFrame
    tables: Mapping[str, pd.DataFrame]
    arrays: Callable[[str], Mapping[str, np.ndarray]]

    def to_frame(self) -> pd.DataFrame:
        """The runs, one row each (``runs``)."""
        return self.runs

    def plot(self) -> dict[str, Figure]:
        """The study's figures of these runs (the study named in ``runs.study``)."""
        from ntkscope.report.notebook import results_figures  # the report layer, on use

        return results_figures(self)

    def _repr_html_(self) -> str:
        """Jupyter: the study, its runs and its figures."""
        from ntkscope.report.notebook import results_html

        return results_html(self)

    def labels(self) -> pd.Series:
        """A legend label per run: the config fields that differ between runs ("run" if none)."""
        columns = [c for c in self.runs.columns if c.startswith("config.")]
        varying = [c for c in columns if self.runs[c].astype(str).nunique() > 1]
        if not varying:
            return pd.Series("run", index=self.runs.index)
        return self.runs[varying].apply(lambda row: _describe(varying, row.tolist()), axis=1)


def _describe(columns: list[str], values: list[object]) -> str:
    """``"field=value, ..."`` with integral floats as integers: a store column holding NaN
    for other studies' runs comes back as floats (256.0), which a legend should not show."""

    def text(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.0f}" if value.is_integer() else f"{value:g}"
        return str(value)

    return ", ".join(
        f"{c.removeprefix('config.')}={text(v)}" for c, v in zip(columns, values, strict=True)
    )


def settings(
    runs: pd.DataFrame, axes: tuple[str, ...], alone: str = ""
) -> list[tuple[str, pd.DataFrame]]:
    """The runs split by setting: one (label, runs) per combination of the config fields that
    vary between runs, other than the plotted ``axes`` (field names such as "width"); each
    group sorted by the first axis. One group labelled ``alone`` when nothing else varies."""
    columns = {f"config.{a}" for a in axes}
    varying = [c for c in runs.columns if c.startswith("config.") and c not in columns
               and runs[c].astype(str).nunique() > 1]  # fmt: skip
    first = f"config.{axes[0]}" if axes else None
    ordered = (lambda r: r.sort_values(first)) if first in runs.columns else (lambda r: r)
    if not varying:
        return [(alone, ordered(runs))]
    groups = runs.groupby(varying, sort=True)
    return [(_describe(varying, list(key)), ordered(group)) for key, group in groups]


@dataclass(frozen=True)
class Study:
    """The checked view of a study module (see the module docstring for what it defines).

    Attributes:
        name: what sweeps and the store call it: the registry name, or the module path.
        description: the module docstring (its first line is the summary).
        config: the pydantic ``Config`` class.
        run: ``run(config, progress) -> Result``.
        figures: ``figures(results) -> {name: Figure}``.
        presets: ``{Preset: sweep table}``.
        captions: ``captions(results) -> {figure name: one line}``; none by default.
        claims: ``claims(results) -> [Claim]``; none by default.
        cost: ``cost(config) -> Cost``, or None when the study has no cost model.
    """

    name: str
    description: str
    config: type[StudyConfig]
    run: Callable[[StudyConfig, Progress], Result]
    figures: Callable[[Results], dict[str, Figure]]
    presets: Mapping[Preset, Mapping[str, Any]]
    captions: Callable[[Results], dict[str, str]] = lambda results: {}
    claims: Callable[[Results], list[Claim]] = lambda results: []
    cost: Callable[[StudyConfig], Cost] | None = None

    @property
    def summary(self) -> str:
        """First line of the description."""
        return self.description.splitlines()[0]

    @classmethod
    def from_module(cls, name: str, module: ModuleType) -> Study:
        """Check that ``module`` defines a study and wrap it."""
        missing = [a for a in ("Config", "run", "figures", "PRESETS") if not hasattr(module, a)]
        if missing:
            raise ValueError(f"study: module {module.__name__!r} lacks {', '.join(missing)}")
        if not (inspect.isclass(module.Config) and issubclass(module.Config, StudyConfig)):
            raise TypeError(f"study: {module.__name__}.Config must subclass StudyConfig")
        presets = _presets(module)
        doc = inspect.getdoc(module) or name
        return cls(
            name=name,
            description=doc,
            config=module.Config,
            run=module.run,
            figures=module.figures,
            presets=presets,
            captions=getattr(module, "captions", lambda results: {}),
            claims=getattr(module, "claims", lambda results: []),
            cost=getattr(module, "cost", None),
        )


def _presets(module: ModuleType) -> dict[Preset, Mapping[str, Any]]:
    """``module.PRESETS`` by `Preset`: names among quick, standard, paper (or its old name
    full), quick among them; the registered studies define all three."""
    names = [p.value for p in Preset]
    try:
        presets = {Preset(k): v for k, v in module.PRESETS.items()}
    except ValueError:
        presets = {}
    if Preset.QUICK not in presets or len(presets) != len(module.PRESETS):
        raise ValueError(
            f"study: {module.__name__}.PRESETS must name presets among {', '.join(names)}, "
            f"quick included; got {', '.join(map(repr, module.PRESETS))}"
        )
    return presets
