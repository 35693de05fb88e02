import hashlib
import re
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ntkscope import studies
from ntkscope.cli import app
from ntkscope.runner import config_hash, expand, load_sweep, parse_assignments

WIDTH = "width_convergence"


def values(sweep, field):
    return [getattr(c, field) for c in sweep.configs]


def test_product_and_zip_cross():
    spec = {
        "study": WIDTH,
        "fixed": {"n": 8},
        "product": {"depth": [1, 2]},
        "zip": [{"activation": ["relu", "erf"], "sigma_w": [1.0, 2.0]}],
    }
    sweep = expand(spec)
    assert len(sweep.configs) == 4
    assert set(values(sweep, "n")) == {8}
    pairs = {(c.depth, c.activation, c.sigma_w) for c in sweep.configs}
    assert pairs == {(d, a, s) for d in (1, 2) for a, s in (("relu", 1.0), ("erf", 2.0))}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"range": [1, 7, 2]}, [1, 3, 5]),
        ({"range": [0, 3]}, [0, 1, 2]),
        ({"linspace": [0.0, 1.0, 3]}, [0.0, 0.5, 1.0]),
        ({"geomspace": [1.0, 4.0, 3]}, [1.0, 2.0, 4.0]),
    ],
)
def test_ranges(spec, expected):
    field = "sigma_b" if "range" not in spec else "depth"
    sweep = expand({"study": WIDTH, "product": {field: spec}})
    # exact: numpy's linspace/geomspace hit these binary-exact values
    assert values(sweep, field) == expected


def test_duplicate_points_run_once():
    sweep = expand({"study": WIDTH, "product": {"depth": [2, 2, 1]}})
    assert values(sweep, "depth") == [2, 1]


def test_hash_is_sha256_of_canonical_json(toy):
    # The identity written out by hand: sorted keys, no spaces, every field (defaults too),
    # so it is the same on every machine, Python version and run.
    canonical = b'{"config":{"fail":false,"sleep":0.0,"value":3},"study":"_toy_study"}'
    expected = hashlib.sha256(canonical).hexdigest()
    assert expand({"study": toy, "fixed": {"value": 3}}).hashes() == [expected]
    assert config_hash(toy, studies.get(toy).config(value=3)) == expected
    assert config_hash("other", studies.get(toy).config(value=3)) != expected


def test_toml_file(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('study = "width_convergence"\n[product]\nseed = { range = [0, 3] }\n')
    assert values(load_sweep(path), "seed") == [0, 1, 2]


S = 'study = "width_convergence"\n'
BAD_SWEEPS = [
    ('study = "nope"', "study: unknown study 'nope'"),
    ("[fixed]\nn = 4", "study: expected the name of a study"),
    (S + "[fixed]\ndepthh = 2", "fixed.depthh: unknown field"),
    (S + "[product]\nwidth = [2]", "product.width: unknown field"),
    (S + '[product]\ndepth = ["a"]', "product.depth: Input should be a valid integer (got 'a')"),
    (S + "[fixed]\nn = 1.5", "fixed.n: Input should be a valid integer"),
    (S + "[fixed]\nn = 0", "fixed.n: Input should be greater than 0"),
    (S + '[fixed]\nactivation = "swish"', "fixed.activation: Input should be"),
    (S + '[fixed]\nwidths = [8, "x"]', "fixed.widths[1]: Input should be a valid integer"),
    (S + "[product]\ndepth = []", "product.depth: no values (the grid would be empty)"),
    (S + "[product]\ndepth = { range = [3, 1] }", "product.depth: no values"),
    (S + "[product]\ndepth = 2", "product.depth: expected a list"),
    (S + "[product]\ndepth = { steps = [1] }", "product.depth: a range table"),
    (S + "[[zip]]\ndepth = [1, 2]\nn = [4]", "zip[0]: lists of different lengths"),
    (S + "[fixed]\ndepth = 1\n[product]\ndepth = [2]", "product.depth: already set in fixed"),
    (S + "[grid]\ndepth = [1]", "grid: unknown section"),
    ("study = ", "sweep: bad.toml is not valid TOML"),
]


@pytest.mark.parametrize(("toml", "message"), BAD_SWEEPS)
def test_bad_sweep_is_rejected_before_running(tmp_path, toml, message):
    path = tmp_path / "bad.toml"
    path.write_text(toml + "\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["sweep", str(path), "--out", str(out), "--workers", "1"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists()  # nothing ran, nothing was written


def test_assignments_parse_toml_values():
    parsed = parse_assignments(["depth=3", "activation=erf", "widths=[8, 16]", "sigma_b=0.5"])
    assert parsed == {"depth": 3, "activation": "erf", "widths": [8, 16], "sigma_b": 0.5}
    with pytest.raises(ValueError, match="set: expected field=value"):
        parse_assignments(["depth"])


def test_readme_and_example_sweeps_expand():
    root = Path(__file__).resolve().parents[2]
    blocks = re.findall(r"```toml\n(.*?)```", (root / "README.md").read_text(), flags=re.S)
    [block] = [b for b in blocks if '"width_convergence"' in b]
    from_readme = expand(tomllib.loads(block))
    from_file = load_sweep(root / "examples" / "width_convergence.toml")
    assert len(from_readme.configs) == len(from_file.configs) == 4
