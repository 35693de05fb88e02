import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ntkscope.data import load_task, synthetic_task
from ntkscope.data.synthetic import hermite, single_index_link, teacher_direction


def _quadrature(points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss–Hermite nodes and weights of E_{z ~ N(0, 1)}, exact to degree 2·points − 1."""
    nodes, weights = (torch.from_numpy(a) for a in np.polynomial.hermite_e.hermegauss(points))
    return nodes, weights / weights.sum()


def test_hermite_polynomials_are_orthogonal_with_norm_factorial():
    # Gauss–Hermite quadrature with 20 nodes integrates polynomials of degree ≤ 39 exactly
    # under exp(−z²/2), so the Gram matrix of He_0..He_5 is diag(k!) to rounding (1e-9).
    nodes, weights = _quadrature(20)
    values = torch.stack([hermite(nodes, k) for k in range(6)])
    gram = (values * weights) @ values.T
    expected = torch.diag(torch.tensor([math.factorial(k) for k in range(6)], dtype=gram.dtype))
    torch.testing.assert_close(gram, expected, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("degrees", [(1,), (2,), (3,), (1, 2), (1, 2, 3)])
def test_single_index_link_has_mean_zero_and_variance_one(degrees):
    nodes, weights = _quadrature(30)
    y = single_index_link(nodes, degrees)
    # exact Gaussian expectations by quadrature (degree ≤ 6 polynomials): tolerance rounding
    assert float((weights * y).sum()) == pytest.approx(0.0, abs=1e-10)
    assert float((weights * y * y).sum()) == pytest.approx(1.0, abs=1e-10)


def test_single_index_sample_statistics():
    train, _, _ = synthetic_task("single_index", n_train=20_000, n_val=10, n_test=10,
                                      seed=3, d=32)  # fmt: skip
    y = train.y.double()
    # y has fourth moment ≈ 12 for degrees (1, 2), so the sd of the sample variance over
    # 20,000 draws is √(11/20,000) ≈ 0.023 and of the mean 0.007: 5 sd tolerances.
    assert abs(float(y.mean())) < 0.035 and abs(float(y.var()) - 1) < 0.12
    assert train.n_classes is None and train.x.shape == (20_000, 32)
    torch.testing.assert_close(
        train.y, single_index_link(train.x.double() @ teacher_direction(32), (1, 2)).float()
    )


def test_sparse_parity_labels_are_the_parity_of_the_first_k_bits():
    train, _, _ = synthetic_task("sparse_parity", n_train=4000, n_val=10, n_test=500,
                                    seed=0, d=16, k=3)  # fmt: skip
    assert set(train.x.unique().tolist()) == {-1.0, 1.0} and train.n_classes == 2
    assert torch.equal(train.y, (train.x[:, :3].prod(dim=1) > 0).long())
    # balanced labels: sd of the class-1 fraction over 4,000 draws is 0.008; 0.04 is 5 sd
    assert abs(float(train.y.double().mean()) - 0.5) < 0.04


@pytest.mark.parametrize("name", ["single_index", "sparse_parity"])
def test_teacher_and_test_set_are_fixed_across_seeds_and_train_is_a_prefix(name):
    a = synthetic_task(name, n_train=300, n_val=50, n_test=80, seed=1, d=12)
    b = synthetic_task(name, n_train=700, n_val=50, n_test=80, seed=2, d=12)
    c = synthetic_task(name, n_train=100, n_val=50, n_test=80, seed=1, d=12)
    assert torch.equal(a[2].x, b[2].x) and torch.equal(a[2].y, b[2].y)
    assert not torch.equal(a[0].x[:100], b[0].x[:100])
    assert torch.equal(c[0].x, a[0].x[:100]) and torch.equal(c[1].x, a[1].x)


def _rows(x: torch.Tensor) -> set:
    return {tuple(row) for row in x.tolist()}


@settings(max_examples=10)
@given(name=st.sampled_from(["single_index", "sparse_parity"]), seed=st.integers(0, 10**6),
       d=st.integers(6, 12))  # fmt: skip
def test_splits_are_disjoint(name, seed, d):
    # d ≥ 6: 64+ hypercube points, so that the hash leaves each split some; at d = 6 the
    # sets below cover most of the cube, so a collision would show.
    train, val, test = synthetic_task(name, n_train=200, n_val=40, n_test=40, seed=seed, d=d)
    rows = [_rows(s.x) for s in (train, val, test)]
    assert not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"name": "spiral"}, "name"), ({"d": 0}, "d"), ({"degrees": ()}, "degrees"),
     ({"degrees": (0, 2)}, "degrees"), ({"name": "sparse_parity", "k": 9, "d": 8}, "k"),
     ({"n_val": -1}, "n_val")],
)  # fmt: skip
def test_bad_arguments_are_named(kwargs, match):
    arguments = {"name": "single_index", "n_train": 10, "n_val": 5, "n_test": 5, "d": 8} | kwargs
    with pytest.raises(ValueError, match=match):
        synthetic_task(arguments.pop("name"), **arguments)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"seed": 1.0}, "seed"), ({"dtype": torch.int64}, "dtype")]
)
def test_bad_seed_and_dtype_types_are_named(kwargs, match):
    arguments = {"n_train": 10, "n_val": 5, "n_test": 5, "d": 8} | kwargs
    with pytest.raises(TypeError, match=match):
        synthetic_task("single_index", **arguments)


@pytest.mark.parametrize("d", [1, 4])
def test_a_hypercube_with_no_point_in_a_split_is_refused_naming_d(d):
    # At d = 1 and d = 4 the split hash leaves the validation split no point of {±1}^d
    # (it drew forever before); with n_val = 0 the task is still served.
    with pytest.raises(ValueError, match=rf"d: none of the {2**d} points .* \(n_val = 5\)"):
        synthetic_task("sparse_parity", n_train=10, n_val=5, n_test=5, d=d, k=1)
    train, val, test = synthetic_task("sparse_parity", n_train=10, n_val=0, n_test=5, d=d, k=1)
    assert (len(train), len(val), len(test)) == (10, 0, 5)


def test_load_task_serves_the_synthetic_tasks():
    task = load_task("sparse_parity", n_train=50, n_val=0, n_test=20, seed=4, d=10, k=3)
    train, _, test = synthetic_task("sparse_parity", n_train=50, n_val=0, n_test=20, seed=4,
                                      d=10, k=3)  # fmt: skip
    assert torch.equal(task.train.x, train.x) and torch.equal(task.test.y, test.y)
    assert len(task.val) == 0 and task.n_classes == 2 and "sparse_parity" in task.description
    with pytest.raises(ValueError, match="n_train"):
        load_task("single_index")
    with pytest.raises(TypeError, match="degrees"):
        load_task("digits", n_train=10, degrees=(2,))
