"""Sweep files: a study, fixed fields and swept fields, expanded into validated configs.

A sweep is a TOML file (or the same table in Python, as the studies' presets are)::

    study = "width_convergence"          # a registered name or an importable module path

    [fixed]                              # set in every run
    n = 32

    [product]                            # every combination of these lists
    depth = [1, 2, 3]
    seed = { range = [0, 4] }            # 0, 1, 2, 3: Python's range(start, stop[, step])
    sigma_w = { linspace = [1.0, 2.0, 3] }   # also { geomspace = [start, stop, num] }

    [[zip]]                              # lists advanced together (equal lengths);
    activation = ["relu", "erf"]         # each zip group is crossed with the product
    sigma_b = [0.0, 0.1]

Every config is validated against the study's ``Config`` (strict types: no string for a
number) before anything runs; an error names the section and the field. A config's identity
is `config_hash`: SHA-256 of the canonical JSON of the study name and the validated config
(every field, defaults included), the same on every machine and Python version.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from ntkscope import studies
from ntkscope.studies import Study, StudyConfig, execution_fields

_SECTIONS = ("study", "fixed", "product", "zip")
_RANGES = {"range": 2, "linspace": 3, "geomspace": 3}
"""Range tables: name -> minimal number of arguments."""


@dataclass(frozen=True)
class Sweep:
    """A study and its validated configs, in expansion order (duplicates removed)."""

    study: Study
    configs: tuple[StudyConfig, ...]

    def hashes(self) -> list[str]:
        """The identity of every config (see `config_hash`)."""
        return [config_hash(self.study.name, c) for c in self.configs]


def canonical_json(config: StudyConfig) -> str:
    """The config as JSON with sorted keys and no spaces: its identity (every field,
    defaults included, except the execution settings of `ntkscope.studies.execution_fields`,
    which a worker receives through `ntkscope.runner.task.Task`)."""
    dumped = config.model_dump(mode="json", exclude=execution_fields(type(config)))
    return json.dumps(dumped, sort_keys=True, separators=(",", ":"))


def config_hash(study: str, config: StudyConfig) -> str:
    """SHA-256 hex digest of ``{"config": ..., "study": ...}`` in canonical JSON."""
    payload = json.dumps({"config": json.loads(canonical_json(config)), "study": study},
                         sort_keys=True, separators=(",", ":"))  # fmt: skip
    return hashlib.sha256(payload.encode()).hexdigest()


def validate(
    study: Study, values: Mapping[str, Any], where: Mapping[str, str] | None = None
) -> StudyConfig:
    """``study.config`` from ``values`` in strict JSON mode; errors name ``where[field]``.

    Raises:
        ValueError: ``"<section.field>: <reason>"`` for the first invalid field.
    """
    try:
        return study.config.model_validate_json(json.dumps(values), strict=True)
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "config"
        detail = "".join(f"[{part}]" for part in first["loc"][1:])
        got = f" (got {first['input']!r})" if first["type"] != "missing" else ""
        raise ValueError(f"{(where or {}).get(name, name)}{detail}: {first['msg']}{got}") from None
    except TypeError as error:  # values json cannot encode
        raise ValueError(f"config: {error}") from None


def _values(spec: object, where: str) -> list[Any]:
    """A swept field's values: a non-empty list, or a range table."""
    if isinstance(spec, Mapping):
        if len(spec) != 1 or next(iter(spec)) not in _RANGES:
            raise ValueError(
                f"{where}: a range table is one of {{range|linspace|geomspace = [...]}}"
            )
        kind, args = next(iter(spec.items()))
        values = _range(kind, args, where)
    elif isinstance(spec, list):
        values = spec
    else:
        raise ValueError(f"{where}: expected a list of values or a range table, got {spec!r}")
    if not values:
        raise ValueError(f"{where}: no values (the grid would be empty)")
    return values


def _range(kind: str, args: object, where: str) -> list[Any]:
    arity = _RANGES[kind]
    if not isinstance(args, list) or not arity <= len(args) <= 3:
        raise ValueError(
            f"{where}: {kind} takes [start, stop{', num' if arity == 3 else '[, step]'}]"
        )
    if kind == "range":
        if not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
            raise ValueError(f"{where}: range takes integers, got {args}")
        return list(range(*args))
    start, stop, num = args
    if isinstance(num, bool) or not isinstance(num, int):
        raise ValueError(f"{where}: {kind} num must be an integer, got {num!r}")
    try:
        return getattr(np, kind)(start, stop, num).tolist()
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {kind}{args}: {error}") from None


def _zip_rows(group: object, index: int) -> list[dict[str, Any]]:
    where = f"zip[{index}]"
    if not isinstance(group, Mapping) or not group:
        raise ValueError(f"{where}: expected a table of equal-length lists")
    columns = {k: _values(v, f"{where}.{k}") for k, v in group.items()}
    lengths = {k: len(v) for k, v in columns.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{where}: lists of different lengths {lengths}")
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def _zip_groups(spec: Mapping[str, Any]) -> list[object]:
    """The zip groups: ``[[zip]]`` tables, or one ``[zip]`` table."""
    zips = spec.get("zip", [])
    return zips if isinstance(zips, list) else [zips]


def _locations(spec: Mapping[str, Any], study: Study) -> dict[str, str]:
    """field -> the section that sets it; each field in one section, every field known."""
    where: dict[str, str] = {}
    tables = [("fixed", spec.get("fixed", {})), ("product", spec.get("product", {}))]
    tables += [(f"zip[{i}]", z) for i, z in enumerate(_zip_groups(spec))]
    for section, table in tables:
        if not isinstance(table, Mapping):
            raise ValueError(f"{section}: expected a table, got {table!r}")
        for name in table:
            if name not in study.config.model_fields:
                fields = ", ".join(study.config.model_fields)
                raise ValueError(
                    f"{section}.{name}: unknown field of study {study.name!r} (fields: {fields})"
                )
            if name in where:
                raise ValueError(f"{section}.{name}: already set in {where[name]}")
            where[name] = f"{section}.{name}"
    return where


def _points(spec: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every combination: the product of the product lists and of the zip groups' rows."""
    product = spec.get("product", {})
    axes = [[{k: v} for v in _values(s, f"product.{k}")] for k, s in product.items()]
    axes += [_zip_rows(group, i) for i, group in enumerate(_zip_groups(spec))]
    for combination in itertools.product(*axes):
        yield {k: v for part in combination for k, v in part.items()}


def expand(spec: Mapping[str, Any], study: str | None = None) -> Sweep:
    """Validate a sweep table and expand it into configs; nothing runs.

    Args:
        spec: the parsed sweep (see the module docstring).
        study: the study, when ``spec`` has no ``study`` key (the studies' presets).

    Raises:
        ValueError: naming the section and field at fault (unknown study or field, wrong
            type, empty grid, a field set twice).
    """
    unknown = set(spec) - set(_SECTIONS)
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]}: unknown section (expected {', '.join(_SECTIONS)})")
    name = spec.get("study", study)
    if not isinstance(name, str):
        raise ValueError('study: expected the name of a study, e.g. study = "width_convergence"')
    target = studies.get(name)
    where = _locations(spec, target)
    fixed = dict(spec.get("fixed", {}))
    configs = [validate(target, fixed | point, where) for point in _points(spec)]
    unique = {canonical_json(c): c for c in configs}
    return Sweep(target, tuple(unique.values()))


def load_sweep(path: str | Path) -> Sweep:
    """Read, validate and expand a TOML sweep file (errors are prefixed with the file name)."""
    path = Path(path)
    try:
        spec = tomllib.loads(path.read_text())
    except OSError as error:
        raise ValueError(f"sweep: cannot read {str(path)!r}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"sweep: {str(path)!r} is not a text (UTF-8 TOML) file") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"sweep: {path.name} is not valid TOML: {error}") from None
    try:
        return expand(spec)
    except ValueError as error:
        raise ValueError(f"{path.name}: {error}") from None


def parse_assignments(assignments: Sequence[str]) -> dict[str, Any]:
    """``["width=128", "act=erf"]`` -> values, each parsed as a TOML value, else a string."""
    values: dict[str, Any] = {}
    for item in assignments:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"set: expected field=value, got {item!r}")
        if name.strip() in values:
            raise ValueError(f"set: {name.strip()!r} is given twice; give each field once")
        try:
            values[name.strip()] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            values[name.strip()] = text
    return values
