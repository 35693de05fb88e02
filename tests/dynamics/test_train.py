"""`ntkscope.train`: the loop against hand-written torch training, stopping, and errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import ntkscope as ns
from ntkscope.dynamics import Recorder


def problem(width: int = 16, n: int = 24, n_out: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    y = torch.randn(n, n_out, generator=g, dtype=torch.float64)
    return ns.models.mlp(5, width, 2, n_out, seed=seed).double(), x, y


@pytest.mark.parametrize(
    ("optimizer", "momentum", "batch_size"), [("sgd", 0.0, None), ("sgd", 0.9, 8), ("adam", 0.0, 5)]
)
def test_losses_equal_a_hand_written_torch_loop(optimizer, momentum, batch_size):
    """Same optimizer, same seeded batch order, float64: the batch losses agree to 1e-12
    (identical operations; only summation order could differ)."""
    model, x, y = problem()
    reference = copy.deepcopy(model)
    trajectory = ns.train(model, (x, y), optimizer=optimizer, lr=0.05, momentum=momentum,
                          steps=12, batch_size=batch_size, seed=3)  # fmt: skip
    params = list(reference.parameters())
    opt = (torch.optim.Adam(params, lr=0.05) if optimizer == "adam"
           else torch.optim.SGD(params, lr=0.05, momentum=momentum))  # fmt: skip
    g, order, losses = torch.Generator().manual_seed(3), [], []
    for _ in range(12):
        if batch_size is None:
            index = torch.arange(len(x))
        else:
            if not order:
                order = list(torch.randperm(len(x), generator=g).split(batch_size))
            index = order.pop(0)
        opt.zero_grad()
        loss = 0.5 * (reference(x[index]) - y[index]).pow(2).sum() / len(index)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert trajectory.losses == pytest.approx(losses, rel=1e-12)
    assert trajectory.stopped is None and trajectory.model is model


def test_cross_entropy_with_labels_and_epochs():
    data = ns.data.load("digits", 64, seed=1)
    model = ns.models.mlp(64, 32, 1, 10, seed=0)
    trajectory = ns.train(model, data, loss="cross_entropy", optimizer="adam", lr=1e-2,
                          epochs=3, batch_size=16, test=ns.data.load("digits", 32, seed=2),
                          recorders=[ns.LossRecorder(every=4)])  # fmt: skip
    assert len(trajectory.losses) == 12  # 3 epochs × 4 batches
    frame = trajectory.frame()
    assert list(frame.index) == [0, 4, 8, 12]
    assert {"train_loss", "train_accuracy", "test_loss", "test_accuracy"} <= set(frame.columns)
    assert frame["train_loss"].iloc[-1] < frame["train_loss"].iloc[0]


class StopAt(Recorder):
    def __init__(self, step: int, error: type[BaseException]):
        self.step, self.error, self.every = step, error, 1

    def record(self, state):
        if state.step == self.step:
            raise self.error
        return {"seen": float(state.step)}


def test_ctrl_c_keeps_every_record_so_far():
    model, x, y = problem()
    trajectory = ns.train(
        model, (x, y), lr=0.01, steps=50, recorders=[StopAt(7, KeyboardInterrupt)]
    )
    assert trajectory.stopped == "interrupted"
    assert trajectory.series("seen")[0] == list(range(7))


def test_divergence_stops_the_run_without_raising():
    model, x, y = problem()
    recorder = ns.ParameterRecorder()
    trajectory = ns.train(model, (x, y * 1e3), lr=1e3, steps=200, recorders=[recorder])
    assert trajectory.stopped == "diverged"
    assert len(trajectory.losses) < 200
    assert all(v == v for v in trajectory.series("param_change")[1])  # no NaN recorded


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(steps=3, epochs=2), "steps, epochs: give exactly one"),
        (dict(steps=3, lr=0.0), "lr: expected a positive"),
        (dict(steps=3, momentum=1.0), "momentum"),
        (dict(steps=3, loss="hinge"), "loss: expected one of"),
        (dict(steps=3, optimizer="lbfgs"), "optimizer: expected one of"),
        (dict(steps=0), "steps: expected a positive int"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    model, x, y = problem()
    kwargs = {"lr": 0.1, **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        ns.train(model, (x, y), **kwargs)


def test_bad_data_is_named():
    model, x, y = problem()
    with pytest.raises(ValueError, match="data: the model cannot be applied to inputs"):
        ns.train(model, (torch.randn(4, 7, dtype=torch.float64), y[:4]), lr=0.1, steps=1)
    with pytest.raises(ValueError, match="data: y has 2 columns but the model has 3 outputs"):
        ns.train(model, (x, y[:, :2]), lr=0.1, steps=1)
    with pytest.raises(ValueError, match="class labels must be"):
        ns.train(model, (x, torch.full((len(x),), 5)), lr=0.1, steps=1)
    with pytest.raises(ValueError, match="cross_entropy needs int64 class labels"):
        ns.train(model, (x, y), loss="cross_entropy", lr=0.1, steps=1)
    with pytest.raises(ValueError, match="data x: contains NaN"):
        ns.train(model, (x * float("nan"), y), lr=0.1, steps=1)


def test_non_finite_outputs_at_initialization_are_an_error():
    model, x, y = problem()
    with torch.no_grad():
        model[0].weight.fill_(float("inf"))
    with pytest.raises(ValueError, match="model: the loss at initialization is"):
        ns.train(model, (x, y), lr=0.1, steps=1)


def test_adam_with_a_sparse_embedding_is_refused_naming_optimizer():
    """torch's Adam takes dense gradients only: refused before training, naming the
    argument and the layer; SGD trains the same model."""
    model = nn.Sequential(nn.Embedding(10, 4, sparse=True), nn.Flatten(), nn.Linear(12, 2))
    ids, y = torch.randint(0, 10, (6, 3)), torch.randn(6, 2)
    with pytest.raises(ValueError, match="optimizer: 'adam' takes dense gradients, and '0'"):
        ns.train(model, (ids, y), optimizer="adam", lr=0.01, steps=2)
    assert ns.train(model, (ids, y), optimizer="sgd", lr=0.01, steps=2).stopped is None
