"""`ntkscope.Monitor` driven by a hand-written loop: the records of `ntkscope.train`, errors.

The same model, batches and SGD steps in float64 give the same records to 1e-10 relative:
the loop below repeats `ntkscope.train`'s operations (its seeded batch order), so only the
order of summation in a reduction could differ.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import ntkscope as ns

STEPS, EVERY, BATCH, LR, SEED = 10, 3, 8, 0.1, 2


def problem(n: int = 24):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    y = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return ns.models.mlp(5, 32, 2, 3, seed=0).double(), x, y


def recorders(x=None):
    return [
        ns.KernelRecorder(x, EVERY),
        ns.ParameterRecorder(EVERY),
        ns.LossRecorder(EVERY),
        ns.LinearizedRecorder(every=EVERY),
    ]


def test_a_plain_loop_records_what_ntkscope_train_records():
    model, x, y = problem()
    reference = copy.deepcopy(model)
    monitor = ns.Monitor(model, x, recorders(x), targets=y, optimizer="sgd", lr=LR)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    generator, order = torch.Generator().manual_seed(SEED), []
    monitor.start()
    for step in range(1, STEPS + 1):
        if not order:
            order = list(torch.randperm(len(x), generator=generator).split(BATCH))
        index = order.pop(0)
        optimizer.zero_grad()
        loss = 0.5 * (model(x[index]) - y[index]).pow(2).sum() / len(index)
        loss.backward()
        optimizer.step()
        monitor.step(step, loss=loss.item(), batch=(x[index], y[index]))
    assert monitor.finish()["step"] == STEPS and monitor.finish() == {}  # once
    trajectory = ns.train(reference, (x, y), lr=LR, steps=STEPS, batch_size=BATCH, seed=SEED,
                          recorders=recorders(x))  # fmt: skip
    frame, expected = monitor.frame(), trajectory.frame()
    assert list(frame.index) == list(expected.index) == [0, 3, 6, 9, 10]
    assert list(frame.columns) == list(expected.columns)
    assert frame["kernel_change"].iloc[-1] > 1e-3 and frame["linear_gap"].iloc[-1] > 0
    torch.testing.assert_close(
        torch.tensor(frame.to_numpy()), torch.tensor(expected.to_numpy()),
        rtol=1e-10, atol=1e-14, equal_nan=True,
    )  # fmt: skip
    assert monitor.trajectory.losses == pytest.approx(trajectory.losses, rel=1e-12)


def test_defaults_record_kernel_and_parameter_change_and_judge_them():
    model, x, _ = problem()
    monitor = ns.Monitor(model, x, every=2)
    assert set(monitor.start()) == {"step", "kernel_change", "kernel_distance"}
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    for step in (1, 2, 3):
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()
        row = monitor.step(step)
        assert bool(row) == (step == 2)
    assert "param_change/0" in monitor.frame()
    monitor.finish()
    diagnosis = monitor.diagnosis()
    assert diagnosis.numbers["kernel_change"] == monitor.frame()["kernel_change"].iloc[-1]
    statuses = {c.name: c.status for c in diagnosis.criteria}
    assert statuses["init dispersion"] == statuses["linearization gap"] == "not measured"
    assert monitor.verdict() in (ns.Verdict.INCOMPLETE, ns.Verdict.FEATURE_LEARNING)


def test_recording_happens_in_eval_mode_and_restores_the_modes():
    """Dropout in training mode makes the eNTK random (refused); the monitor measures in
    eval mode and leaves every module as it found it."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2))
    model[2].eval()
    monitor = ns.Monitor(model, torch.randn(6, 4), every=1)
    monitor.start()
    assert [m.training for m in model.modules()] == [True, True, True, False]


def test_a_non_finite_parameter_stops_the_records():
    model, x, _ = problem()
    monitor = ns.Monitor(model, x, every=1)
    monitor.start()
    with torch.no_grad():
        next(model.parameters())[0, 0] = math.nan
    assert monitor.step(1) == {} and monitor.stopped == "diverged"
    assert monitor.step(2) == {} and len(monitor.frame()) == 1


def test_dict_batches_of_token_ids_are_probes():
    class Tokens(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.head = torch.nn.Embedding(10, 4), torch.nn.Linear(4, 2)

        def forward(self, input_ids, attention_mask):
            h = (self.embed(input_ids) * attention_mask[..., None]).sum(1)
            return self.head(h)

    ids = torch.randint(0, 10, (5, 3), generator=torch.Generator().manual_seed(0))
    probe = {"input_ids": ids, "attention_mask": torch.ones(5, 3, dtype=torch.long)}
    row = ns.Monitor(Tokens(), probe).start()
    assert row["kernel_change"] == 0.0


@pytest.mark.parametrize(
    ("make", "kwargs", "match"),
    [
        (lambda x: [ns.LossRecorder()], {}, "LossRecorder needs targets"),
        (lambda x: [ns.LinearizedRecorder()], {"targets": True}, "needs optimizer, lr"),
        (lambda x: [ns.PredictionRecorder()], {"targets": True}, "needs train_set, steps"),
        (lambda x: [object()], {}, "recorders: expected Recorder objects"),
    ],
)
def test_recorders_whose_needs_the_loop_does_not_give_are_refused(make, kwargs, match):
    model, x, y = problem()
    kwargs = {k: y for k in kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        ns.Monitor(model, x, make(x), **kwargs)


def test_misuse_is_refused_with_the_argument_named():
    model, x, y = problem()
    with pytest.raises(TypeError, match=r"model: expected a torch\.nn\.Module"):
        ns.Monitor(lambda t: t, x)
    with pytest.raises(TypeError, match="probe"):
        ns.Monitor(model, [1, 2, 3])
    with pytest.raises(ValueError, match="targets: x has 24 examples but y has 3"):
        ns.Monitor(model, x, targets=y[:3])
    monitor = ns.Monitor(model, x)
    with pytest.raises(RuntimeError, match="call start"):
        monitor.step(1)
    monitor.start()
    with pytest.raises(RuntimeError, match="already started"):
        monitor.start()
    linear = ns.Monitor(model, x, [ns.LinearizedRecorder()], targets=y, optimizer="sgd", lr=LR)
    linear.start()
    with pytest.raises(ValueError, match="batch: LinearizedRecorder trains a model alongside"):
        linear.step(1)
