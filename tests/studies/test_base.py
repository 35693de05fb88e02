import types

import numpy as np
import pandas as pd
import pytest

from ntkscope import studies
from ntkscope.runner import expand
from ntkscope.studies import Preset, Result, Results, StudyConfig
from ntkscope.studies._base import settings


@pytest.mark.parametrize("name", studies.names())
def test_registered_study_is_complete(name):
    study = studies.get(name)
    for field, info in study.config.model_fields.items():
        assert info.description, f"{name}.Config.{field} has no docstring"
    assert study.config() is not None  # defaults are valid
    for preset in Preset:
        assert expand(study.presets[preset], name).configs  # presets validate


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"metrics": {"a": "x"}}, TypeError, r"metrics\['a'\]: expected a real number"),
        ({"metrics": {"a": True}}, TypeError, "expected a real number"),
        ({"metrics": {"a b": 1.0}}, TypeError, "metrics: names are strings"),
        ({"tables": {"t": [1]}}, TypeError, r"tables\['t'\]: expected DataFrame"),
        ({"arrays": {"a": [1]}}, TypeError, r"arrays\['a'\]: expected ndarray"),
        ({"tables": {"../x": pd.DataFrame()}}, TypeError, "tables: names are strings"),
    ],
)
def test_result_refuses_bad_parts(kwargs, error, message):
    with pytest.raises(error, match=message):
        Result(**kwargs)


def test_result_metrics_become_floats():
    result = Result(metrics={"n": np.int64(3)}, arrays={"a": np.zeros(2)})
    assert result.metrics == {"n": 3.0} and type(result.metrics["n"]) is float


def test_module_that_is_not_a_study():
    with pytest.raises(ValueError, match="study: module 'json' lacks Config, run, figures"):
        studies.get("json")
    with pytest.raises(ValueError, match="study: unknown study 'no_such_module'"):
        studies.get("no_such_module")


def test_presets_are_required():
    class Config(StudyConfig):
        pass

    module = types.ModuleType("m", "M.")
    module.Config, module.run, module.figures = Config, None, None
    for presets in (
        {"paper": {}},
        {"quick": {}, "huge": {}},
        {"quick": {}, "full": {}, "paper": {}},
    ):
        module.PRESETS = presets
        with pytest.raises(ValueError, match="PRESETS must name presets among quick, standard, "
                           "paper, quick included"):  # fmt: skip
            studies.Study.from_module("m", module)
    module.PRESETS = {"quick": {"fixed": {}}, "full": {}}  # "full": the former name of paper
    assert set(studies.Study.from_module("m", module).presets) == {Preset.QUICK, Preset.PAPER}


def test_every_registered_study_has_every_preset_and_a_cost_model():
    for name in studies.names():
        study = studies.get(name)
        assert set(study.presets) == set(Preset), name
        assert study.cost is not None, name


def test_labels_name_the_varying_fields():
    runs = pd.DataFrame({"config.a": [1, 2], "config.b": ["x", "x"], "metrics.m": [0.0, 1.0]})
    assert list(Results(runs, {}, dict).labels()) == ["a=1", "a=2"]
    assert list(Results(runs.iloc[:1], {}, dict).labels()) == ["run"]


def test_labels_and_settings_show_stored_integers_as_integers():
    # a store column holding NaN for other studies' runs comes back as float64
    runs = pd.DataFrame({"config.n": [256.0, 1000.0], "config.lr": [0.5, 0.25],
                         "config.seed": [0.0, 0.0], "hash": ["a", "b"]})  # fmt: skip
    assert list(Results(runs, {}, dict).labels()) == ["n=256, lr=0.5", "n=1000, lr=0.25"]
    labels = [label for label, _ in settings(runs, ("lr",))]
    assert labels == ["n=256", "n=1000"]
