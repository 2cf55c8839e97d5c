"""The loop with a second task: a toy regression shaped like CTC fine-tuning (per-utterance summed loss
averaged over utterances, a frozen encoder for the first steps, validation and the best checkpoint,
checkpoint extras, a model class that is not DinoSR); StepStats; the zero-masked-frames guard."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import Tensor, nn

from dinosr.data.dataset import Batch
from dinosr.train.checkpoint import latest_checkpoint, load_checkpoint
from dinosr.train.task import StepStats, Task
from dinosr.train.trainer import Trainer, TrainingDiverged
from train_utils import micro_config, write_corpus

FREEZE = 2  # the encoder trains from the update after this many steps (like freeze_finetune_updates)


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.head = nn.Linear(4, 1)

    def forward(self, x: Tensor, *, frozen: bool) -> Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            h = torch.tanh(self.encoder(x))
        return self.head(h).squeeze(-1)


@dataclasses.dataclass
class ToyBatch:
    x: Tensor
    y: Tensor
    num_skipped: int = 0

    @property
    def lengths(self) -> Tensor:
        return torch.ones(len(self.y), dtype=torch.long)

    def to(self, device, non_blocking=False):
        return ToyBatch(self.x.to(device), self.y.to(device), self.num_skipped)


def toy_batch(seed: int, size: int = 3) -> ToyBatch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(size, 4, generator=g)
    return ToyBatch(x, x.sum(-1).sin())


class ToyLoader:
    """Four batches per epoch, a pure function of (epoch, index); resumable like TrainLoader."""

    def __init__(self) -> None:
        self.epoch, self.start_batch = 0, 0

    def __len__(self) -> int:
        return 4

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "start_batch": self.start_batch}

    def load_state_dict(self, state: dict) -> None:
        self.set_epoch(state["epoch"], state["start_batch"])

    def __iter__(self):
        while self.start_batch < len(self):
            self.start_batch += 1
            yield toy_batch(100 * self.epoch + self.start_batch)


@dataclasses.dataclass(kw_only=True)
class ToyStats(StepStats):
    loss_sum: Tensor | float
    utterances: float

    def total_loss(self) -> float:
        return float(self.loss_sum)

    def normaliser(self) -> float:
        return float(self.utterances)


class ToyTask(Task):
    best_metric = ("mse", "min")
    loss_norm = 3.0  # about the utterances of one micro-batch

    def __init__(self) -> None:
        self.post_steps = 0
        self.symbols = ["<blank>", "|", "A"]

    def build_model(self) -> nn.Module:
        return Toy()

    def build_loader(self, *, rank: int, world_size: int):
        return ToyLoader()

    def param_groups(self, model, step):
        groups = [{"name": "head", "params": list(model.head.parameters())}]
        if step >= FREEZE:
            groups.append({"name": "encoder", "params": list(model.encoder.parameters())})
        return groups

    def forward(self, model, batch, *, step, mask=None):
        pred = model(batch.x, frozen=step < FREEZE)
        loss = ((pred - batch.y) ** 2).sum()  # summed per utterance, averaged by the loop
        return loss, ToyStats(loss_sum=loss.detach().double(), utterances=float(len(batch.y)))

    def post_step(self, model, step, stats):
        self.post_steps += 1

    def metrics(self, model, stats, *, steps, seconds, step):
        return {"loss": float(stats.loss_sum) / max(float(stats.utterances), 1)}

    def validate(self, model):
        assert not model.training
        assert not torch.is_grad_enabled()
        batch = toy_batch(12345, size=16)
        return {"mse": float(((model(batch.x, frozen=True) - batch.y) ** 2).mean())}

    def checkpoint_extras(self):
        return {"symbols": list(self.symbols), "toy": {"post_steps": self.post_steps}}

    def load_checkpoint_extras(self, state):
        self.symbols = list(state["symbols"])
        self.post_steps = int(state["toy"]["post_steps"])


def _toy_config(workdir, **run):
    return micro_config(
        workdir,
        "unused.tsv",
        optim={"lr": 0.05, "scheduler": "constant", "warmup_steps": 1},
        run={"max_steps": 6, "log_every": 1, "validate_every": 2, **run},
    )


def test_stepstats_add_flatten_unflatten():
    a = ToyStats(loss_sum=torch.tensor(2.5, dtype=torch.float64), utterances=3, bad_files=1)
    b = ToyStats(loss_sum=torch.tensor(0.5, dtype=torch.float64), utterances=2)
    total = a + b
    assert float(total.loss_sum) == 3.0
    assert total.utterances == 5
    assert total.bad_files == 1
    flat = total.flatten()
    assert flat.dtype == torch.float64
    assert flat.tolist() == [1.0, 3.0, 5.0]  # field order: bad_files, loss_sum, utterances
    back = total.unflatten(flat * 2)
    assert float(back.loss_sum) == 6.0
    assert back.utterances == 10.0
    assert back.bad_files == 2.0
    with pytest.raises(ValueError, match="flat vector"):
        total.unflatten(torch.zeros(4, dtype=torch.float64))


def test_second_task_freeze_validation_best_checkpoint_and_extras(tmp_path):
    task = ToyTask()
    trainer = Trainer(_toy_config(tmp_path), task=task)
    encoder = {k: v.clone() for k, v in trainer.model.encoder.state_dict().items()}
    head = trainer.model.head.weight.detach().clone()
    assert trainer.fit(until_step=FREEZE) == FREEZE
    # Only the output layer trained while the encoder was frozen; the encoder joins after step FREEZE.
    assert all(torch.equal(v, encoder[k]) for k, v in trainer.model.encoder.state_dict().items())
    assert not torch.equal(trainer.model.head.weight, head)
    assert [g["name"] for g in trainer.optimizer.param_groups] == ["head", "encoder"]
    assert all(p.requires_grad for p in trainer.model.encoder.parameters())
    trainer.fit()
    trainer.close()
    assert not torch.equal(trainer.model.encoder.weight, encoder["weight"])
    assert task.post_steps == 6

    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in rows if "valid_mse" in r]
    assert [r["step"] for r in valid] == [2, 4, 6]
    best_row = min(valid, key=lambda r: r["valid_mse"])
    assert valid[-1]["best_valid_mse"] == best_row["valid_mse"]
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["step"] == best_row["step"]
    expected = {"metric": "mse", "mode": "min", "value": best_row["valid_mse"], "step": best["step"]}
    assert best["best"] == expected
    assert best["symbols"] == ["<blank>", "|", "A"]
    last = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert last["step"] == 6
    assert last["toy"] == {"post_steps": 6}
    assert last["best"]["step"] == best["step"]


def test_second_task_resumes_exactly(tmp_path):
    straight = Trainer(_toy_config(tmp_path / "a"), task=ToyTask())
    straight.fit()
    straight.close()
    # Interrupted while the encoder is frozen (step 1) and after it joined (step 3).
    for stop in (1, 3):
        workdir = tmp_path / f"b{stop}"
        first = Trainer(_toy_config(workdir), task=ToyTask())
        first.fit(until_step=stop)
        first.close()
        task = ToyTask()
        task.symbols = []
        second = Trainer(_toy_config(workdir), task=task)
        assert second.fit() == 6
        second.close()
        for key, value in straight.model.state_dict().items():
            assert torch.equal(second.model.state_dict()[key], value), (stop, key)
        assert task.symbols == ["<blank>", "|", "A"]  # restored from the checkpoint extras
        assert task.post_steps == 6
        assert second.best == straight.best
        assert [g["name"] for g in second.optimizer.param_groups] == ["head", "encoder"]


def test_checkpoint_extras_may_not_reuse_loop_keys(tmp_path):
    class Clashing(ToyTask):
        def checkpoint_extras(self):
            return {"model": {}}

    trainer = Trainer(_toy_config(tmp_path), task=Clashing())
    with pytest.raises(ValueError, match="model"):
        trainer.state_dict()


def test_zero_masked_frames_are_not_divergence(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", num_files=4)
    trainer = Trainer(micro_config(tmp_path / "run", corpus, run={"max_bad_steps": 1}))
    wav = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    frames = int(trainer.model.frame_lengths(torch.tensor([16000]))[0])
    batch = Batch(wav, torch.full((2,), 16000), ["a", "b"])
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    for _ in range(3):  # max_bad_steps = 1: a non-finite step would raise at once
        result = trainer.train_step([batch], masks=[torch.zeros(2, frames, dtype=torch.bool)])
        assert result["updated"] is False
        assert result["reason"] == "no_targets"
        assert result["num_masked"] == 0
        trainer._on_skipped(result)
    assert trainer.bad_steps == 0
    assert trainer.step == 0
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    # A NaN loss still counts.
    forward = trainer.model.forward

    def poisoned(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.losses = out.losses * float("nan")
        return out

    trainer.ddp_model = poisoned
    result = trainer.train_step([batch])
    assert result["reason"] == "nonfinite"
    with pytest.raises(TrainingDiverged):
        trainer._on_skipped(result)
