"""Shared helpers of the fine-tuning tests: a synthetic labelled corpus (train + valid) and a micro config."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from dinosr.config import from_plain, to_plain
from dinosr.train.ctc_task import CTCTask, load_init
from dinosr.train.finetune_config import FinetuneConfig
from dinosr.train.trainer import Trainer
from train_utils import MICRO_MODEL, write_corpus

LETTERS = "ABCDE"


def _write_letters(manifest: Path, num: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(num):
        words = ["".join(rng.choice(list(LETTERS), size=int(rng.integers(1, 4)))) for _ in range(2)]
        lines.append(" ".join(" ".join(w) + " |" for w in words))
    manifest.with_suffix(".ltr").write_text("\n".join(lines) + "\n")


def write_labelled_corpus(root: Path, *, num_train: int = 8, num_valid: int = 4) -> Path:
    """``root/train.tsv`` + ``train.ltr`` and ``root/valid.tsv`` + ``valid.ltr`` (returns train.tsv)."""
    train = write_corpus(root, num_files=num_train, seed=0)
    _write_letters(train, num_train, seed=1)
    other = write_corpus(root / "held_out", num_files=num_valid, seed=5)
    valid = root / "valid.tsv"
    shutil.copy(other, valid)  # absolute root line: the audio stays in held_out/audio
    _write_letters(valid, num_valid, seed=2)
    return train


DETERMINISTIC_CTC = {
    "mask_prob": 0.0,
    "mask_channel_prob": 0.0,
    "layerdrop": 0.0,
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
}


def ft_config(workdir: Path, manifest: Path | str, **sections: dict) -> FinetuneConfig:
    """A micro fine-tuning config (from scratch unless ``finetune={"init": ...}``)."""
    data = {
        "model": dict(MICRO_MODEL),
        "ctc": {
            "mask_prob": 0.3,
            "mask_length": 2,
            "mask_channel_prob": 0.2,
            "mask_channel_length": 4,
            "layerdrop": 0.2,
            "dropout": 0.1,
        },
        "finetune": {"from_scratch": True, "freeze_finetune_updates": 2, "valid_batch_seconds": 3.0},
        "data": {"manifest": str(manifest), "max_tokens": 48000, "max_sample_size": 48000, "num_workers": 0},
        "optim": {"lr": 2e-3},
        "run": {
            "workdir": str(workdir),
            "max_steps": 6,
            "log_every": 2,
            "save_every": 1000,
            "progress": False,
            "device": "cpu",
        },
    }
    for name, values in sections.items():
        data[name].update(values)
        if name == "finetune" and values.get("init"):
            data[name]["from_scratch"] = False
    return from_plain(
        FinetuneConfig, to_plain(from_plain(FinetuneConfig, data, source="test")), source="test"
    )


def ft_trainer(cfg: FinetuneConfig, **kwargs) -> Trainer:
    cfg, init = load_init(cfg)
    return Trainer(cfg, task=CTCTask(cfg, init_model=init), **kwargs)
