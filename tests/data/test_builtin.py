import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ntkscope.data import Dataset, load

N_DIGITS = 1797


def test_digits_shapes_and_standardization():
    data = load("digits")
    assert isinstance(data, Dataset) and len(data) == N_DIGITS
    assert data.x.shape == (N_DIGITS, 64) and data.x.dtype == torch.float32
    assert data.y.dtype == torch.int64 and set(data.y.tolist()) == set(range(10))
    assert (data.n_classes, data.image_shape) == (10, (1, 8, 8))
    assert data.as_images().shape == (N_DIGITS, 1, 8, 8)
    x = data.x.double()
    torch.testing.assert_close(x.mean(dim=1), torch.zeros(N_DIGITS, dtype=torch.float64))
    torch.testing.assert_close(x.square().sum(dim=1), torch.full((N_DIGITS,), 64.0).double())


@settings(max_examples=20)
@given(n=st.integers(1, N_DIGITS), seed=st.integers(0, 2**31 - 1))
def test_digits_subset_draws_distinct_examples_with_their_labels(n, seed):
    full = load("digits", dtype=torch.float64)
    index = {tuple(row): i for i, row in enumerate(full.x.tolist())}  # the images are distinct
    sub = load("digits", n, seed=seed, dtype=torch.float64)
    assert len(sub) == n and sub.x.dtype == torch.float64
    match = torch.tensor([index[tuple(row)] for row in sub.x.tolist()])
    assert len(set(match.tolist())) == n and torch.equal(full.y[match], sub.y)
    again = load("digits", n, seed=seed, dtype=torch.float64)
    assert torch.equal(again.x, sub.x) and torch.equal(again.y, sub.y)


def test_digits_subsets_nest_and_depend_on_seed():
    small, large = load("digits", 50, seed=1), load("digits", 200, seed=1)
    assert torch.equal(small.x, large.x[:50]) and torch.equal(small.y, large.y[:50])
    assert not torch.equal(small.x, load("digits", 50, seed=2).x)


def test_gaussian_sample_and_fixed_teacher():
    a, b = load("gaussian", 400, seed=0, d=8), load("gaussian", 400, seed=1, d=8)
    assert a.x.shape == (400, 8) and a.y.shape == (400,) and a.y.dtype == torch.float32
    assert (a.n_classes, a.image_shape) == (None, None)
    assert torch.equal(a.x, load("gaussian", 400, seed=0, d=8).x)
    assert not torch.equal(a.x, b.x)
    # one unit-norm linear teacher, whatever the seed: exact targets, so lstsq recovers it
    teachers = [torch.linalg.lstsq(s.x.double(), s.y.double()[:, None]).solution for s in (a, b)]
    torch.testing.assert_close(teachers[0], teachers[1], atol=1e-5, rtol=0)
    assert float(teachers[0].norm()) == pytest.approx(1.0, abs=1e-5)
    assert load("gaussian").x.shape == (1024, 16)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "argument"),
    [
        (("mnist",), {}, ValueError, "name:"),
        (("digits", 0), {}, ValueError, "n:"),
        (("gaussian", -3), {}, ValueError, "n:"),
        (("digits", N_DIGITS + 1), {}, ValueError, "n:"),
        (("digits", 2.5), {}, TypeError, "n:"),
        (("digits",), {"d": 4}, ValueError, "d:"),
        (("gaussian", 10), {"d": 0}, ValueError, "d:"),
        (("digits",), {"dtype": torch.int64}, TypeError, "dtype:"),
        (("digits",), {"seed": "0"}, TypeError, "seed:"),
    ],
)
def test_errors_name_the_argument(args, kwargs, error, argument):
    with pytest.raises(error, match=f"^{argument}"):
        load(*args, **kwargs)


def test_vectors_have_no_image_view():
    with pytest.raises(ValueError, match="no image shape"):
        load("gaussian", 4).as_images()


def test_returned_tensors_are_the_callers_own():
    load("digits", dtype=torch.float64).x.zero_()
    assert load("digits", dtype=torch.float64).x.abs().sum() > 0


def test_targets_follow_the_task_kind():
    from ntkscope.data import Dataset, targets

    digits = load("digits", 20)
    one_hot = targets(digits)
    assert one_hot.shape == (20, 10) and torch.equal(one_hot.argmax(1), digits.y)
    binary = Dataset(digits.x, digits.y % 2, "parity", 2, (1, 8, 8))
    signs = targets(binary, torch.float32)
    assert signs.dtype == torch.float32 and torch.equal(signs[:, 0] > 0, digits.y % 2 == 1)
    real = load("gaussian", 5)
    assert torch.equal(targets(real)[:, 0], real.y.double())
