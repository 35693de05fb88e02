"""`ntkscope.integrations.lightning.NTKMonitor` in a real Lightning ``Trainer`` (CPU).

The same MLP, digits, mini-batch order and SGD steps trained by Lightning with the callback
and by `ntkscope.train`: the records agree to 1e-9 relative in float64 (the same
operations in the same order; the slack covers a different summation order in any fused
kernel). TensorBoard event files read back hold every logged scalar.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import ntkscope as ns

pl = pytest.importorskip("lightning.pytorch")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
from ntkscope.integrations.lightning import NTKMonitor  # noqa: E402

N, BATCH, EPOCHS, EVERY, LR, SEED = 128, 32, 2, 3, 0.5, 0


class Classifier(pl.LightningModule):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)


class SeededEpochs(torch.utils.data.Sampler):
    """`ntkscope.train`'s mini-batch order: a seeded permutation per epoch."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.generator = n, torch.Generator().manual_seed(seed)

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=self.generator).tolist())

    def __len__(self) -> int:
        return self.n


def _fit(net, data, callback, tmp_path, logger=True):
    dataset = torch.utils.data.TensorDataset(data.x.double(), data.y)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=BATCH, sampler=SeededEpochs(len(dataset), SEED)
    )
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        devices=1,
        callbacks=[callback],
        logger=pl.loggers.TensorBoardLogger(tmp_path, name="tb") if logger else False,
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.fit(Classifier(net), loader)
    return trainer


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("lightning")
    data = ns.data.load("digits", N, seed=0)
    net = ns.models.mlp(64, 64, 2, 10, seed=0).double()
    reference = copy.deepcopy(net)
    probe = data.x[:32].double()
    callback = NTKMonitor(probe, every=EVERY, targets=data.y[:32])
    trainer = _fit(net, data, callback, tmp_path)
    trajectory = ns.train(
        reference, (data.x.double(), data.y), loss="cross_entropy", lr=LR, epochs=EPOCHS,
        batch_size=BATCH, seed=SEED,
        recorders=[ns.KernelRecorder(probe, EVERY, probe_y=data.y[:32]),
                   ns.ParameterRecorder(EVERY)],
    )  # fmt: skip
    return callback, trainer, trajectory


def test_records_equal_those_of_ntkscope_train(run):
    callback, _, trajectory = run
    frame, expected = callback.frame(), trajectory.frame()
    frame = frame.rename(columns=lambda c: c.replace("/net.", "/"))  # layers inside the module
    assert list(frame.index) == list(expected.index) == [0, 3, 6, 8]
    assert list(frame.columns) == list(expected.columns)
    assert frame["kernel_change"].iloc[-1] > 1e-3  # the kernel moved: a comparison, not zeros
    torch.testing.assert_close(
        torch.tensor(frame.to_numpy()),
        torch.tensor(expected.to_numpy()),
        rtol=1e-9,
        atol=1e-12,
        equal_nan=True,
    )
    assert callback.monitor.trajectory.losses == pytest.approx(trajectory.losses, rel=1e-9)


def test_tensorboard_holds_every_scalar_and_the_report(run):
    callback, trainer, _ = run
    events = event_accumulator.EventAccumulator(
        trainer.logger.log_dir, size_guidance={event_accumulator.SCALARS: 0}
    ).Reload()
    frame = callback.frame()
    tags = events.Tags()
    for name in frame.columns:
        scalars = events.Scalars(f"ntk/{name}")
        recorded = frame[name].dropna()
        assert [s.step for s in scalars] == list(recorded.index)
        assert [s.value for s in scalars] == pytest.approx(list(recorded), rel=1e-6)  # float32
    assert "ntk/spectrum" in tags["histograms"]
    assert {"ntk/figures/kernel", "ntk/figures/spectrum"} <= set(tags["images"])
    assert "ntk/verdict/text_summary" in tags["tensors"]  # how add_text stores text


def test_the_diagnosis_report_is_written(run):
    callback, trainer, _ = run
    page = __import__("pathlib").Path(trainer.log_dir) / "ntkscope" / "index.html"
    assert page.exists() and "kernel change" in page.read_text()
    assert callback.diagnosis.numbers["kernel_change"] == callback.frame()["kernel_change"].iloc[-1]
