"""Damaged checkpoints (truncated, zero-byte, garbage), stale temp files, metrics rows after a resume,
file permissions of atomic writes: each made for real on disk."""

from __future__ import annotations

import json
import logging
import os
import stat

import pytest
import torch

from dinosr.errors import CheckpointError, DinosrError
from dinosr.fileio import atomic_write
from dinosr.train.checkpoint import (
    clean_stale_temp_files,
    list_checkpoints,
    load_checkpoint,
    load_newest_complete,
    save_checkpoint,
)
from dinosr.train.metrics_log import MetricsLogger
from dinosr.train.trainer import Trainer
from train_utils import micro_config, write_corpus


def _truncate(path, fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def _state(step):
    return {"step": step, "w": torch.arange(2000, dtype=torch.float32) * step}


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda p: _truncate(p, 0.5), "truncated or incomplete"),
        (lambda p: _truncate(p, 0.0), "empty file (0 bytes)"),
        (lambda p: _truncate(p, 0.999), "truncated or incomplete"),
        (lambda p: p.write_bytes(b"this is not a checkpoint at all" * 10), "corrupt checkpoint"),
        (lambda p: p.unlink(), "checkpoint not found"),
    ],
)
def test_damaged_checkpoint_raises_naming_the_file(tmp_path, damage, expected):
    path = save_checkpoint(_state(3), tmp_path, 3, keep_last=3)
    damage(path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)
    assert isinstance(info.value, DinosrError)


def test_pickled_objects_are_a_checkpoint_error(tmp_path):
    path = tmp_path / "checkpoint_00000001.pt"
    torch.save({"step": 1, "cfg": logging.Formatter()}, path)  # a class: weights_only refuses it
    with pytest.raises(CheckpointError, match="not a plain dinosr checkpoint"):
        load_checkpoint(path)


def test_newest_complete_falls_back_and_keeps_the_damaged_file(tmp_path, caplog):
    for step in (2, 4, 6):
        save_checkpoint(_state(step), tmp_path, step, keep_last=5)
    newest = list_checkpoints(tmp_path)[-1]
    _truncate(newest)
    damaged_bytes = newest.read_bytes()
    with caplog.at_level(logging.WARNING):
        path, state = load_newest_complete(tmp_path)
    assert path.name == "checkpoint_00000004.pt"
    assert state["step"] == 4
    assert torch.equal(state["w"], _state(4)["w"])
    assert "DAMAGED CHECKPOINT" in caplog.text
    assert newest.name in caplog.text
    # Not deleted: renamed aside so neither a resume nor the rotation nor a new save of step 6 touches it.
    aside = tmp_path / "checkpoint_00000006.pt.damaged"
    assert aside.read_bytes() == damaged_bytes
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["checkpoint_00000002.pt", "checkpoint_00000004.pt"]
    save_checkpoint(_state(6), tmp_path, 6, keep_last=1)
    assert aside.exists()


def test_without_tidy_nothing_is_renamed(tmp_path):
    for step in (1, 2):
        save_checkpoint(_state(step), tmp_path, step, keep_last=5)
    _truncate(list_checkpoints(tmp_path)[-1], 0.0)
    path, _ = load_newest_complete(tmp_path, tidy=False)
    assert path.name == "checkpoint_00000001.pt"
    assert len(list_checkpoints(tmp_path)) == 2  # other ranks only read


def test_all_damaged_is_an_error_and_renames_nothing(tmp_path):
    for step in (1, 2):
        save_checkpoint(_state(step), tmp_path, step, keep_last=5)
    for p in list_checkpoints(tmp_path):
        _truncate(p)
    with pytest.raises(CheckpointError, match="none of the 2 checkpoint"):
        load_newest_complete(tmp_path)
    assert len(list_checkpoints(tmp_path)) == 2  # a rerun must not silently start from scratch
    assert load_newest_complete(tmp_path / "missing") is None


def test_stale_temp_files_only_ours_are_removed(tmp_path):
    save_checkpoint(_state(1), tmp_path, 1, keep_last=5)
    ours = tmp_path / ".checkpoint_00000002.pt.k3j_x9.tmp"  # what mkstemp leaves when killed mid-save
    ours.write_bytes(b"half a checkpoint")
    foreign = [tmp_path / n for n in ("notes.tmp", ".other.pt.abc.tmp", "checkpoint_00000003.pt.tmp")]
    for p in foreign:
        p.write_text("keep me")
    assert clean_stale_temp_files(tmp_path) == [ours]
    assert not ours.exists()
    assert all(p.exists() for p in foreign)


def test_atomic_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        path = save_checkpoint(_state(1), tmp_path, 1, keep_last=2)
        with atomic_write(tmp_path / "x.bin") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o664  # mkstemp alone would give 0600
    assert stat.S_IMODE((tmp_path / "x.bin").stat().st_mode) == 0o664


def test_metrics_rows_past_the_checkpoint_are_dropped(tmp_path):
    logger = MetricsLogger(tmp_path)
    for step in (2, 4, 6, 8):
        logger.log(step, {"loss": float(step)})
    logger._file.write('{"step": 10, "lo')  # a row cut by kill -9
    logger.close()
    logger = MetricsLogger(tmp_path)
    assert logger.truncate_after(4) == 3
    logger.log(6, {"loss": 0.5})
    logger.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert rows[-1]["loss"] == 0.5


def test_metrics_truncation_sets_the_tensorboard_purge_step(tmp_path, monkeypatch):
    made = []

    class FakeWriter:
        def __init__(self, log_dir, purge_step=None):
            made.append(purge_step)

        def close(self):
            pass

    import torch.utils.tensorboard as tb

    monkeypatch.setattr(tb, "SummaryWriter", FakeWriter)
    logger = MetricsLogger(tmp_path, tensorboard=True)
    logger.truncate_after(10)
    logger.close()
    assert made == [None, 11]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"), num_files=6)


def test_trainer_resumes_from_the_previous_checkpoint(tmp_path, corpus, caplog):
    run = {"max_steps": 4, "save_every": 2, "log_every": 1, "keep_last": 5}
    cfg = micro_config(tmp_path, corpus, run=run)
    trainer = Trainer(cfg)
    trainer.fit()
    trainer.close()
    ckpts = tmp_path / "checkpoints"
    _truncate(ckpts / "checkpoint_00000004.pt")  # the newest, cut like a full disk would
    (ckpts / ".checkpoint_00000006.pt.abcd.tmp").write_bytes(b"killed")
    with caplog.at_level(logging.WARNING):
        trainer = Trainer(micro_config(tmp_path, corpus, run={**run, "max_steps": 5}))
        assert trainer.fit() == 5
        trainer.close()
    assert "checkpoint_00000004.pt" in caplog.text
    assert "RESUMING FROM AN OLDER CHECKPOINT" in caplog.text
    assert (ckpts / "checkpoint_00000004.pt.damaged").exists()
    assert not list(ckpts.glob("*.tmp"))
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]  # steps 3 and 4 retrained once and logged once
