"""The training loop: exact resume, accumulation, NaN guard, empty batches, freeze, logs, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from dinosr.cli import main
from dinosr.data.dataset import Batch
from dinosr.train.checkpoint import latest_checkpoint
from dinosr.train.trainer import Trainer, TrainingDiverged
from train_utils import micro_config, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"), num_files=12)


def _final_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    state = {f"model.{k}": v.clone() for k, v in trainer.model.state_dict().items()}
    for i, s in enumerate(trainer.optimizer.state_dict()["state"].values()):
        state.update({f"optim.{i}.{k}": v.clone() for k, v in s.items()})
    return state


@pytest.mark.parametrize("num_workers", [0, 1])
def test_resume_is_exact(tmp_path, corpus, num_workers):
    # Dropout, LayerDrop and random masks all on; the freeze (step 2) falls before the interruption
    # (step 3), so resuming must also rebuild the optimizer without the extractor group.
    sections = {
        "data": {"num_workers": num_workers},
        "model": {"freeze_teacher_step": 2, "layerdrop": 0.2},
        "run": {"max_steps": 6},
    }
    straight = Trainer(micro_config(tmp_path / "a", corpus, **sections))
    assert straight.fit() == 6
    expected = _final_state(straight)
    straight.close()

    first = Trainer(micro_config(tmp_path / "b", corpus, **sections))
    assert first.fit(until_step=3) == 3
    first.close()
    second = Trainer(micro_config(tmp_path / "b", corpus, **sections))
    steps_run = []
    train_step = second.train_step
    second.train_step = lambda *args, **kwargs: steps_run.append(1) or train_step(*args, **kwargs)
    assert second.fit() == 6
    assert len(steps_run) == 3  # it continued from the checkpoint instead of starting over
    got = _final_state(second)
    second.close()
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    # An epoch has 4 batches here, so the run crossed an epoch boundary after resuming.
    assert second.loader.epoch == 1


def _batch(waveforms: torch.Tensor) -> Batch:
    b, n = waveforms.shape
    return Batch(waveforms, torch.full((b,), n), [f"u{i}" for i in range(b)])


def _fixed_inputs(model, batch_size=4, seconds=1.0):
    g = torch.Generator().manual_seed(0)
    wav = torch.randn(batch_size, int(16000 * seconds), generator=g)
    frames = int(model.frame_lengths(torch.tensor([wav.shape[1]]))[0])
    mask = torch.rand(batch_size, frames, generator=g) < 0.5
    return wav, mask


def test_grad_accumulation_equals_one_big_batch(tmp_path, corpus):
    deterministic = {"dropout": 0.0, "attention_dropout": 0.0, "layerdrop": 0.0}
    whole = Trainer(micro_config(tmp_path / "a", corpus, model=deterministic))
    split = Trainer(micro_config(tmp_path / "b", corpus, model=deterministic, run={"grad_accum": 2}))
    wav, mask = _fixed_inputs(whole.model)
    r1 = whole.train_step([_batch(wav)], masks=[mask])
    r2 = split.train_step([_batch(wav[:2]), _batch(wav[2:])], masks=[mask[:2], mask[2:]])
    assert r1["updated"]
    assert r2["updated"]
    assert r1["num_masked"] == r2["num_masked"] == int(mask.sum())
    assert r1["loss_sum"] == pytest.approx(r2["loss_sum"], rel=1e-5)
    for (name, p1), p2 in zip(whole.model.named_parameters(), split.model.parameters()):
        if p1.grad is not None or p2.grad is not None:
            torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-4, atol=1e-7, msg=name)
    # One codebook EMA update with the statistics of the whole effective batch.
    torch.testing.assert_close(whole.model.codebooks.sums, split.model.codebooks.sums)
    torch.testing.assert_close(whole.model.codebooks.counts, split.model.codebooks.counts)
    # The loss is the per-frame mean: its gradient does not depend on how many frames were masked.
    assert whole.step == split.step == 1


def test_nan_guard_skips_then_stops(tmp_path, corpus):
    trainer = Trainer(micro_config(tmp_path, corpus, run={"max_bad_steps": 3}))
    forward = trainer.model.forward

    def poisoned(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.losses = out.losses * float("nan")
        return out

    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.ddp_model = poisoned  # one process: ddp_model is the bare model
    with pytest.raises(TrainingDiverged, match="3 non-finite steps"):
        trainer.fit()
    after = trainer.model.state_dict()
    assert trainer.step == 0
    assert all(torch.equal(before[k], after[k]) for k in before)  # no update, no EMA, no codebook change


def test_empty_batches_are_skipped(tmp_path, corpus):
    trainer = Trainer(micro_config(tmp_path, corpus, run={"grad_accum": 2}))
    empty = Batch(torch.zeros(0, 16000), torch.zeros(0, dtype=torch.long), [], num_skipped=3)
    wav, _ = _fixed_inputs(trainer.model, batch_size=2)
    assert trainer.train_step([empty, empty]) == {"updated": False, "reason": "empty", "bad_files": 6}
    result = trainer.train_step([_batch(wav), empty])
    assert result["updated"]
    assert result["bad_files"] == 3
    assert result["utterances"] == 2


def test_freeze_drops_the_extractor(tmp_path, corpus):
    trainer = Trainer(micro_config(tmp_path, corpus, model={"freeze_teacher_step": 2}, run={"max_steps": 4}))
    trainer.fit(until_step=2)
    extractor = {k: v.clone() for k, v in trainer.model.feature_extractor.state_dict().items()}
    teacher = {k: v.clone() for k, v in trainer.model.teacher.state_dict().items()}
    assert [g["name"] for g in trainer.optimizer.param_groups] == ["main"]
    trainer.fit()
    assert trainer.step == 4
    for k, v in trainer.model.feature_extractor.state_dict().items():
        assert torch.equal(v, extractor[k])
    for k, v in trainer.model.teacher.state_dict().items():
        assert torch.equal(v, teacher[k])
    trainer.close()


def test_metrics_log_and_wall_time_budget(tmp_path, corpus):
    trainer = Trainer(micro_config(tmp_path, corpus, run={"max_minutes": 1e-9, "max_steps": 50}))
    assert trainer.fit() == 1  # the budget is spent after the first step, which is checkpointed
    trainer.close()
    assert latest_checkpoint(tmp_path / "checkpoints").name == "checkpoint_00000001.pt"
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    for key in (
        "loss",
        "target_ppl",
        "active_codewords",
        "pred_ppl",
        "lr",
        "ema_decay",
        "grad_norm",
        "audio_seconds_per_second",
        "batch_seconds",
        "masked_frames_per_step",
        "warnings",
    ):
        assert key in record, key
    assert len(record["target_ppl"]) == len(record["active_codewords"]) == 2


def test_collapse_warning(tmp_path, corpus, caplog):
    trainer = Trainer(micro_config(tmp_path, corpus, run={"collapse_min_active": 1.0, "log_every": 1}))
    with caplog.at_level("WARNING"):
        trainer.fit(until_step=1)
    trainer.close()
    assert "codebook collapse" in caplog.text


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps(tmp_path, corpus, precision):
    trainer = Trainer(micro_config(tmp_path, corpus, run={"precision": precision, "max_steps": 2}))
    trainer.fit()
    trainer.close()
    assert trainer.model.codebooks.sums.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


def test_cli_pretrain_end_to_end(tmp_path, corpus):
    cfg = micro_config(tmp_path, corpus)
    config_file = tmp_path / "micro.toml"
    lines = []
    for section, values in cfg.to_dict().items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    config_file.write_text("\n".join(lines) + "\n")
    common = ["pretrain", str(config_file), "--set", f"run.workdir={json.dumps(str(tmp_path / 'w'))}"]
    assert main([*common, "--set", "run.max_steps=3"]) == 0
    assert latest_checkpoint(tmp_path / "w" / "checkpoints").name == "checkpoint_00000003.pt"
    # Running the command again resumes; with a larger budget it continues from step 3.
    assert main([*common, "--set", "run.max_steps=4"]) == 0
    steps = [json.loads(line)["step"] for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 3, 4]  # logged every 2 steps + the partial window at each stop; no restart
    assert main(["pretrain", str(config_file), "--set", "optim.lr=-1"]) == 2
