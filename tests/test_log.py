"""`ntkscope.log`: TensorBoard event files and an offline W&B run hold what was recorded."""

from __future__ import annotations

import pytest
import torch

import ntkscope as ns
from wandb_records import history

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
SummaryWriter = pytest.importorskip("torch.utils.tensorboard").SummaryWriter

STEPS, EVERY = 6, 2


@pytest.fixture(scope="module")
def trajectory():
    data = ns.data.load("digits", 64, seed=0)
    model = ns.models.mlp(64, 32, 1, 10, seed=0)
    recorders = [ns.KernelRecorder(data.x[:16], EVERY), ns.ParameterRecorder(EVERY),
                 ns.LossRecorder(EVERY)]  # fmt: skip
    return ns.train(model, data, lr=0.5, steps=STEPS, batch_size=16, recorders=recorders)


def _events(folder):
    return event_accumulator.EventAccumulator(
        str(folder), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.HISTOGRAMS: 0}
    ).Reload()


def test_a_trajectory_in_tensorboard_holds_every_scalar_and_the_spectra(trajectory, tmp_path):
    writer = SummaryWriter(tmp_path)
    ns.log.to_tensorboard(writer).trajectory(trajectory)
    writer.close()
    events, frame = _events(tmp_path), trajectory.frame()
    for name in frame.columns:
        recorded = frame[name].dropna()
        scalars = events.Scalars(f"ntk/{name}")
        assert [s.step for s in scalars] == list(recorded.index)
        assert [s.value for s in scalars] == pytest.approx(list(recorded), rel=1e-6)  # float32
    histograms = events.Histograms("ntk/spectrum")
    assert [h.step for h in histograms] == [0, STEPS]
    kernel = trajectory.recorders[0]
    assert histograms[-1].histogram_value.num == len(kernel.latest)
    assert histograms[-1].histogram_value.sum == pytest.approx(float(kernel.latest.trace()))


def test_a_live_monitor_and_its_report_in_tensorboard(tmp_path):
    model, x = ns.models.mlp(4, 16, 1, 2, seed=0), torch.randn(8, 4)
    writer = SummaryWriter(tmp_path)
    logger = ns.log.to_tensorboard(writer)
    monitor = ns.Monitor(model, x, every=1, loggers=[logger])
    monitor.start()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in (1, 2):
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()
        monitor.step(step)
    logger.report(monitor.diagnosis())
    writer.close()
    events = _events(tmp_path)
    assert [s.step for s in events.Scalars("ntk/kernel_change")] == [0, 1, 2]
    assert [h.step for h in events.Histograms("ntk/spectrum")] == [0, 1, 2]
    tags = events.Tags()
    assert {"ntk/spectrum_init", "ntk/spectrum_end"} <= set(tags["histograms"])
    assert {f"ntk/figures/{n}" for n in ("loss", "kernel", "linearized", "spectrum")} <= set(
        tags["images"]
    )
    text = events.Tensors("ntk/verdict/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "kernel change" in text and "init dispersion: not measured" in text


def test_an_offline_wandb_run_holds_every_record_and_the_report(trajectory, tmp_path, monkeypatch):
    """W&B offline (nothing leaves the machine); the run's file read back holds every
    scalar at its step, the spectra and figures, and the verdict in the summary."""
    wandb = pytest.importorskip("wandb")
    for key, value in {
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path),
        "WANDB_SILENT": "true",
        "WANDB_CONFIG_DIR": str(tmp_path),
    }.items():
        monkeypatch.setenv(key, value)  # fmt: skip
    run = wandb.init(project="ntkscope-test", dir=tmp_path, mode="offline")
    try:
        logger = ns.log.to_wandb(run)
        logger.trajectory(trajectory)
        monitor = ns.Monitor(trajectory.model, trajectory.recorders[0].probe_x, every=1)
        monitor.start()
        logger.report(monitor.diagnosis(), step=STEPS)
        assert "init dispersion: not measured" in run.summary["ntk/verdict"]
    finally:
        run.finish()
        wandb.teardown()  # waits for W&B's service to write the run's file
    [path] = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    rows = {row["_step"]: row for row in history(path)}
    frame = trajectory.frame()
    assert sorted(rows) == list(frame.index)
    for step, recorded in frame.iterrows():
        for name, value in recorded.dropna().items():
            assert rows[step][f"ntk/{name}"] == pytest.approx(value, rel=1e-12), (step, name)
    assert rows[0]["ntk/spectrum/_type"] == "histogram"  # W&B splits nested values by key
    assert rows[STEPS]["ntk/figures/kernel/_type"] == "image-file"
    assert rows[STEPS]["ntk/spectrum_end/_type"] == "histogram"


def test_loggers_refuse_what_is_not_a_writer_or_a_run():
    with pytest.raises(TypeError, match="writer: expected a TensorBoard SummaryWriter"):
        ns.log.to_tensorboard(object())
    with pytest.raises(TypeError, match="run: expected a wandb run"):
        ns.log.to_wandb(object())
