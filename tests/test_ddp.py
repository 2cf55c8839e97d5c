"""Distributed training on CPU (gloo, 2 processes) and the launcher-environment parsing."""

from __future__ import annotations

import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from dinosr.data.dataset import Batch
from dinosr.data.manifest import read_manifest
from dinosr.train import distributed as dist
from dinosr.train.anchor_fit import fit_anchor
from dinosr.train.checkpoint import latest_checkpoint, load_checkpoint
from dinosr.train.trainer import Trainer
from train_utils import micro_config, write_corpus

DETERMINISTIC = {"dropout": 0.0, "attention_dropout": 0.0, "layerdrop": 0.0, "freeze_teacher_step": 1}


class StubLoader:
    """The loader interface the trainer needs when tests feed batches to ``train_step`` themselves."""

    epoch = 0

    def set_epoch(self, epoch, start_batch=0):
        self.epoch = epoch

    def state_dict(self):
        return {"epoch": self.epoch, "start_batch": 0}

    def load_state_dict(self, state):
        self.epoch = state["epoch"]

    def __len__(self):
        return 1

    def __iter__(self):
        return iter(())


def _batch(waveforms: torch.Tensor) -> Batch:
    b, n = waveforms.shape
    return Batch(waveforms, torch.full((b,), n), [f"u{i}" for i in range(b)])


EMPTY = Batch(torch.zeros(0, 16000), torch.zeros(0, dtype=torch.long), [], num_skipped=1)


def _inputs(model):
    g = torch.Generator().manual_seed(0)
    wav = torch.randn(4, 16000, generator=g)
    frames = int(model.frame_lengths(torch.tensor([16000]))[0])
    return wav, torch.rand(4, frames, generator=g) < 0.5


def _snapshot(trainer: Trainer, result: dict) -> dict:
    return {
        "grads": {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None},
        "sums": trainer.model.codebooks.sums.clone(),
        "counts": trainer.model.codebooks.counts.clone(),
        "teacher": {k: v.clone() for k, v in trainer.model.teacher.state_dict().items()},
        "loss_sum": result["loss_sum"],
        "num_masked": result["num_masked"],
        "target_counts": result["counts"].clone(),
    }


def _worker(rank: int, world: int, port: int, workdir: str) -> None:
    torch.set_num_threads(1)
    env = dist.DistEnv(rank=rank, world_size=world, master_port=port)
    dist.init_distributed(env, torch.device("cpu"), backend="gloo")
    try:
        trainer = Trainer(micro_config(workdir, "unused.tsv", model=DETERMINISTIC), loader=StubLoader())
        wav, mask = _inputs(trainer.model)
        half = slice(2 * rank, 2 * rank + 2)  # each rank gets a disjoint half of the batch
        result = trainer.train_step([_batch(wav[half])], masks=[mask[half]])
        if rank == 0:
            torch.save(_snapshot(trainer, result), f"{workdir}/ddp_step.pt")
        # Step 2 runs on the DDP wrapper rebuilt at the freeze. Rank 1's second micro-batch is empty:
        # both ranks must skip that micro-batch together (a one-sided skip would hang the all-reduce).
        second = [_batch(wav[half]), EMPTY if rank == 1 else _batch(wav[half])]
        assert trainer.train_step(second, masks=[mask[half], None])["utterances"] == 4
        # Everything empty on one rank: the whole step is skipped everywhere.
        assert not trainer.train_step([EMPTY if rank == 1 else _batch(wav[half])])["updated"]
        trainer.save()
    finally:
        dist.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_processes(worker, *args) -> None:
    """Run ``worker(rank, 2, port, *args)`` in two spawned processes; fail (not hang) after 150 s."""
    context = mp.start_processes(
        worker, args=(2, _free_port(), *args), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 150
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for p in context.processes:
                p.kill()
            pytest.fail("DDP workers hung")


def test_two_process_step_equals_one_process(tmp_path):
    _run_two_processes(_worker, str(tmp_path))
    ddp = torch.load(tmp_path / "ddp_step.pt", weights_only=True)

    single = Trainer(
        micro_config(tmp_path / "single", "unused.tsv", model=DETERMINISTIC), loader=StubLoader()
    )
    wav, mask = _inputs(single.model)
    ref = _snapshot(single, single.train_step([_batch(wav)], masks=[mask]))

    assert ddp["num_masked"] == ref["num_masked"] == int(mask.sum())
    assert ddp["loss_sum"] == pytest.approx(ref["loss_sum"], rel=1e-5)
    assert ddp["grads"].keys() == ref["grads"].keys()
    for name, grad in ref["grads"].items():
        torch.testing.assert_close(ddp["grads"][name], grad, rtol=1e-4, atol=1e-7, msg=name)
    torch.testing.assert_close(ddp["target_counts"], ref["target_counts"])  # logged metrics: global sums
    torch.testing.assert_close(ddp["counts"], ref["counts"])
    torch.testing.assert_close(ddp["sums"], ref["sums"], rtol=1e-5, atol=1e-6)
    for key, value in ref["teacher"].items():
        torch.testing.assert_close(ddp["teacher"][key], value, rtol=1e-5, atol=1e-6)

    state = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert state["step"] == 2
    assert state["world_size"] == 2
    assert len(state["rng"]) == 2  # one RNG state per rank
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])


def test_torchrun_environment():
    env = dist.detect_environment(
        {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "node7", "MASTER_PORT": "1234"}
    )
    assert env == dist.DistEnv(3, 8, 1, "node7", 1234, "torchrun")


def test_slurm_environment():
    env = dist.detect_environment(
        {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1", "SLURM_NODELIST": "gpu[007-008,12]"}
    )
    assert env == dist.DistEnv(5, 16, 1, "gpu007", dist.DEFAULT_PORT, "slurm")
    # torchrun inside an srun allocation: torchrun's variables win.
    both = dist.detect_environment({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "RANK": "1", "WORLD_SIZE": "4"})
    assert both.launcher == "torchrun"
    # A single SLURM task (e.g. the batch script itself) is a plain single process.
    assert dist.detect_environment({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == dist.DistEnv()
    assert dist.detect_environment({}) == dist.DistEnv()


@pytest.mark.parametrize(
    ("nodelist", "first"),
    [
        ("node1", "node1"),
        ("a1,a2", "a1"),
        ("gpu[03-05,9]", "gpu03"),
        ("x[1,3],y2", "x1"),
        ("n-[10-12]", "n-10"),
    ],
)
def test_first_slurm_host(nodelist, first):
    assert dist.first_slurm_host(nodelist) == first


def test_collectives_are_noops_without_a_group():
    t = torch.tensor([1.0, 2.0])
    assert dist.all_reduce_sum(t) is t
    assert dist.any_rank(True)
    assert not dist.any_rank(False)
    assert dist.all_gather_object({"a": 1}) == [{"a": 1}]


ANCHOR = {**DETERMINISTIC, "anchor_units": 4, "anchor_mels": 8, "anchor_frames": "all"}


def _anchor_worker(rank: int, world: int, port: int, workdir: str, manifest: str) -> None:
    torch.set_num_threads(1)
    env = dist.DistEnv(rank=rank, world_size=world, master_port=port)
    dist.init_distributed(env, torch.device("cpu"), backend="gloo")
    try:
        cfg = micro_config(workdir, manifest, model=ANCHOR)
        trainer = Trainer(cfg, loader=StubLoader())
        # Only rank 0 reads audio: rank 1 gets no entries and must receive the centroids by broadcast.
        entries = read_manifest(manifest) if rank == 0 else []
        fit_anchor(trainer.model, entries, cfg.data, seed=cfg.run.seed)
        wav, mask = _inputs(trainer.model)
        half = slice(2 * rank, 2 * rank + 2)
        result = trainer.train_step([_batch(wav[half])], masks=[mask[half]])
        snap = _snapshot(trainer, result)
        snap["centroids"] = trainer.model.anchor.centroids.clone()
        snap["anchor_loss_sum"] = result["anchor_loss_sum"]
        torch.save(snap, f"{workdir}/anchor_rank{rank}.pt")
    finally:
        dist.shutdown()


def test_two_process_anchor_fit_and_step_equal_one_process(tmp_path):
    manifest = str(write_corpus(tmp_path / "corpus", num_files=4))
    _run_two_processes(_anchor_worker, str(tmp_path), manifest)
    ranks = [torch.load(tmp_path / f"anchor_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert torch.equal(ranks[0]["centroids"], ranks[1]["centroids"])

    cfg = micro_config(tmp_path / "single", manifest, model=ANCHOR)
    single = Trainer(cfg, loader=StubLoader())
    fit_anchor(single.model, read_manifest(manifest), cfg.data, seed=cfg.run.seed)
    torch.testing.assert_close(ranks[0]["centroids"], single.model.anchor.centroids, rtol=0, atol=0)
    wav, mask = _inputs(single.model)
    result = single.train_step([_batch(wav)], masks=[mask])
    ref = _snapshot(single, result)
    assert ranks[0]["anchor_loss_sum"] == pytest.approx(result["anchor_loss_sum"], rel=1e-5)
    for name, grad in ref["grads"].items():
        torch.testing.assert_close(ranks[0]["grads"][name], grad, rtol=1e-4, atol=1e-7, msg=name)
    assert any(name.startswith("anchor.head") for name in ref["grads"])
