"""Every preset of every registered study, expanded and checked without running a study.

A preset config is valid when it passes its study's ``Config`` (types, ranges, cross-field
rules), when its images pool as the network needs (a CNN built at width 1 with the same
depth and pooling takes one image of the preset's size), and when its estimated peak
memory (the study's cost model) fits the preset's worker memory (10 GB for quick and
standard, 16 GB for paper).
"""

import math

import pytest
import torch

from ntkscope import models, studies
from ntkscope.runner import expand
from ntkscope.studies import Preset
from ntkscope.studies._cost import task_shape
from ntkscope.studies._training import pool_after

NATIVE = {"digits": 8, "mnist": 28}
"""Native side of the built-in image data sets (by the task's first word)."""


def _image(config) -> tuple[int, int] | None:
    """(channels, side) of the images a CNN of ``config`` takes; None for an MLP."""
    if str(getattr(config, "architecture", "mlp")) != "cnn":
        return None
    task = getattr(config, "task", "digits")
    if str(task) in ("regression", "classification"):  # optimization: the digits
        return 1, 8
    channels, side, _ = task_shape(task, getattr(config, "d", 64), config.image_size)
    return channels, side


def _check_images(config) -> None:
    size = getattr(config, "image_size", None)
    family = str(getattr(config, "task", getattr(config, "data", ""))).split("_")[0]
    if size is not None and family in NATIVE:  # average pooling of k×k blocks
        assert NATIVE[family] % size == 0, f"image_size {size} does not divide {NATIVE[family]}"
    image = _image(config)
    if image is not None:
        channels, side = image
        network = models.cnn(channels, 1, config.depth, 1,
                             pool_after=pool_after(side, config.depth))  # fmt: skip
        assert network(torch.zeros(1, channels, side, side)).shape == (1, 1)


@pytest.mark.parametrize("preset", list(Preset))
@pytest.mark.parametrize("name", studies.names())
def test_every_config_of_every_preset_is_valid_and_fits_its_worker(name, preset):
    study = studies.get(name)
    sweep = expand(study.presets[preset], name)  # validates every config (types, rules)
    assert sweep.configs
    for config, run in zip(sweep.configs, sweep.hashes(), strict=True):
        _check_images(config)
        cost = study.cost(config)
        assert 0 < cost.seconds < math.inf, (run, cost)
        assert cost.memory <= preset.worker_memory, (name, preset, config, cost)


def test_the_14_pixel_mnist_cnn_of_scaling_laws_pools_once():
    """Regression: the paper preset's CNN (3 blocks) on 14×14 MNIST pooled twice, and
    14 is not divisible by 4. It now pools once, to 7×7; the network and its infinite
    kernel take the images."""
    config = next(c for c in expand(studies.get("scaling_laws").presets[Preset.PAPER],
                                    "scaling_laws").configs if c.model == "cnn")  # fmt: skip
    assert (config.image_size, config.depth) == (14, 3)
    assert pool_after(14, 3) == [0]
    _check_images(config)


def test_full_is_the_former_name_of_paper():
    assert Preset("full") is Preset.PAPER
