"""`ntkscope.integrations.hf.NTKMonitorCallback` in a real Hugging Face ``Trainer`` (CPU).

A 1-layer BERT classifier from a config (random weights, nothing downloaded) on a token data
set made here, trained full batch by SGD: by the ``Trainer`` with the callback and by
`ntkscope.train` on the same dict batches. Their records agree to 1e-9 relative in float64
(the ``Trainer`` shuffles the examples inside the batch, which changes only the order of
summation, ~1e-16 per step). The Trainer's TensorBoard integration receives every record.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import ntkscope as ns
from tiny_transformers import tiny_transformer

transformers = pytest.importorskip("transformers")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
from ntkscope.integrations.hf import NTKMonitorCallback  # noqa: E402

N, LENGTH, VOCAB, STEPS, EVERY, LR = 16, 8, 20, 5, 2, 0.5


def _tokens() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, VOCAB, (N, LENGTH), generator=generator)
    mask = torch.ones(N, LENGTH, dtype=torch.long)
    mask[N // 2 :, LENGTH - 3 :] = 0  # padded examples
    return {"input_ids": ids, "attention_mask": mask}, torch.randint(
        0, 2, (N,), generator=generator
    )


def _trainer(model, x, y, out: Path) -> transformers.Trainer:
    rows = [{"input_ids": x["input_ids"][i], "attention_mask": x["attention_mask"][i],
             "labels": y[i]} for i in range(N)]  # fmt: skip
    args = transformers.TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=N, max_steps=STEPS, learning_rate=LR,
        max_grad_norm=0.0, use_cpu=True, report_to=["tensorboard"], save_strategy="no",
        logging_steps=1000, disable_tqdm=True, dataloader_num_workers=0, seed=0,
    )  # fmt: skip
    sgd = torch.optim.SGD(model.parameters(), lr=LR)
    constant = torch.optim.lr_scheduler.LambdaLR(sgd, lambda _: 1.0)
    return transformers.Trainer(
        model=model, args=args, train_dataset=rows, optimizers=(sgd, constant)
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hf")
    x, y = _tokens()
    model = tiny_transformer("bert", VOCAB, LENGTH).double()
    reference = copy.deepcopy(model)
    probe = {k: v[:8] for k, v in x.items()}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TENSORBOARD_LOGGING_DIR", str(out / "tb"))
        trainer = _trainer(model, x, y, out)
        callback = NTKMonitorCallback(probe, every=EVERY).attach(trainer)
        trainer.train()
    trajectory = ns.train(
        reference, (x, y), loss="cross_entropy", lr=LR, steps=STEPS,
        recorders=[ns.KernelRecorder(probe, EVERY), ns.ParameterRecorder(EVERY)],
    )  # fmt: skip
    return callback, trajectory, out


def test_records_equal_those_of_ntkscope_train(run):
    callback, trajectory, _ = run
    frame, expected = callback.frame(), trajectory.frame()
    assert list(frame.index) == list(expected.index) == [0, 2, 4, 5]
    assert list(frame.columns) == list(expected.columns)
    assert frame["kernel_change"].iloc[-1] > 1e-3  # the kernel moved: a comparison, not zeros
    torch.testing.assert_close(
        torch.tensor(frame.to_numpy()), torch.tensor(expected.to_numpy()),
        rtol=1e-9, atol=1e-12, equal_nan=True,
    )  # fmt: skip


def test_the_trainer_logs_every_record(run):
    callback, _, out = run
    frame = callback.frame()
    events = event_accumulator.EventAccumulator(
        str(out / "tb"), size_guidance={event_accumulator.SCALARS: 0}
    ).Reload()
    for name in frame.columns:
        recorded = frame[name].dropna()
        scalars = events.Scalars(f"train/ntk/{name}")  # the Trainer prefixes "train/"
        assert [s.step for s in scalars] == list(recorded.index)
        assert [s.value for s in scalars] == pytest.approx(list(recorded), rel=1e-6)  # float32
    history = callback.trainer.state.log_history
    assert [h["step"] for h in history if "ntk/kernel_change" in h] == list(frame.index)


def test_the_diagnosis_report_is_written(run):
    callback, _, out = run
    assert (out / "ntkscope" / "index.html").exists()
    assert callback.diagnosis.numbers["kernel_change"] == callback.frame()["kernel_change"].iloc[-1]


def test_without_attach_the_records_go_to_the_log_history(tmp_path):
    x, y = _tokens()
    trainer = _trainer(tiny_transformer("bert", VOCAB, LENGTH).double(), x, y, tmp_path)
    trainer.args.report_to = []
    callback = NTKMonitorCallback({k: v[:4] for k, v in x.items()}, every=EVERY, report_dir=False)
    trainer.add_callback(callback)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "ntk/kernel_change" in h]
    assert [h["step"] for h in logged] == [0, 2, 4, 5]
    assert callback.diagnosis is not None and not (tmp_path / "ntkscope").exists()
