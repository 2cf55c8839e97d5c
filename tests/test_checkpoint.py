"""Checkpoint files: atomic write, keep-last-K, newest lookup, weights_only loading, RNG round trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from dinosr.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from dinosr.train.trainer import Trainer
from train_utils import micro_config, write_corpus


def test_keep_last_and_latest(tmp_path):
    for step in (5, 10, 20, 15):
        save_checkpoint({"step": step, "w": torch.full((2,), float(step))}, tmp_path, step, keep_last=2)
    names = [p.name for p in list_checkpoints(tmp_path)]
    # Sorted by step, not by write order; the two newest steps survive.
    assert names == ["checkpoint_00000015.pt", "checkpoint_00000020.pt"]
    assert latest_checkpoint(tmp_path).name == "checkpoint_00000020.pt"
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 20
    assert latest_checkpoint(tmp_path / "missing") is None


def test_failed_write_leaves_nothing(tmp_path):
    save_checkpoint({"step": 1}, tmp_path, 1, keep_last=3)
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever pickling raises
        save_checkpoint({"step": 2, "bad": lambda: None}, tmp_path, 2, keep_last=3)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_00000001.pt"]  # no temp file, no partial file


def test_rng_round_trip():
    torch.manual_seed(3)
    np.random.seed(3)  # noqa: NPY002
    random.seed(3)
    state = rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert torch.equal(a[0], b[0])
    assert np.array_equal(a[1], b[1])
    assert a[2] == b[2]


def test_trainer_checkpoint_is_weights_only_loadable(tmp_path):
    manifest = write_corpus(tmp_path / "corpus", num_files=6)
    cfg = micro_config(tmp_path / "run", manifest, run={"max_steps": 2})
    trainer = Trainer(cfg)
    trainer.fit()
    trainer.close()
    path = latest_checkpoint(tmp_path / "run" / "checkpoints")
    state = torch.load(path, weights_only=True)  # plain containers and tensors only
    assert state["step"] == 2
    assert set(state) >= {"model", "optimizer", "scheduler", "scaler", "data", "rng", "config", "step"}
    assert "codebooks.sums" in state["model"]
    assert any(k.startswith("teacher.") for k in state["model"])
    assert state["config"] == cfg.to_dict()
    assert state["data"] == {"epoch": 0, "start_batch": 2}
    assert len(state["rng"]) == 1
    assert {"torch", "numpy", "python"} <= set(state["rng"][0])
    assert (tmp_path / "run" / "config.json").is_file()
