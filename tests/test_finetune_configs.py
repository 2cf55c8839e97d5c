"""The fine-tuning presets equal fairseq's published wav2vec 2.0 BASE fine-tuning recipes, the packaged copies
equal configs/finetune/, and the tri-stage LR follows a hand-computed curve."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from dinosr.train.finetune_config import PRESETS, FinetuneOptimConfig, load_finetune_config, preset_path
from dinosr.train.schedule import lr_at

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "finetune"

# facebookresearch/fairseq examples/wav2vec/config/finetuning/base_{10m,1h,10h,100h}.yaml
# (read at commits 5856cd1f (10m, 10h), 325daafe (1h), 99b364a2 (100h)):
#   optimization.max_update, optimization.lr, model.freeze_finetune_updates, model.mask_prob,
#   model.mask_channel_prob, model.mask_channel_length, model.layerdrop
FAIRSEQ = {
    "base_10m": dict(
        max_update=13000, lr=5e-5, freeze=10000, mask_prob=0.65, channel_prob=0.25, layerdrop=0.1
    ),
    "base_1h": dict(
        max_update=13000, lr=5e-5, freeze=10000, mask_prob=0.65, channel_prob=0.25, layerdrop=0.1
    ),
    "base_10h": dict(
        max_update=20000, lr=5e-5, freeze=10000, mask_prob=0.65, channel_prob=0.5, layerdrop=0.05
    ),
    "base_100h": dict(max_update=80000, lr=3e-5, freeze=0, mask_prob=0.65, channel_prob=0.5, layerdrop=0.1),
}
# Shared by the four yaml files: mask_channel_length 64, activation_dropout 0.1, dataset.max_tokens 3200000,
# adam_betas (0.9, 0.98), adam_eps 1e-08, tri_stage phase_ratio [0.1, 0.4, 0.5], final_lr_scale 0.05
# (init_lr_scale: fairseq's tri_stage default 0.01), distributed_world_size 2 x update_freq [4],
# task.labels ltr, best_checkpoint_metric wer; mask_length: Wav2Vec2AsrConfig default 10; adam without
# weight decay (fairseq's default 0).


@pytest.mark.parametrize("name", sorted(FAIRSEQ))
def test_presets_equal_fairseq_yaml(name):
    want = FAIRSEQ[name]
    cfg = load_finetune_config(name)
    assert cfg.run.max_steps == want["max_update"]
    assert cfg.optim.lr == want["lr"]
    assert cfg.finetune.freeze_finetune_updates == want["freeze"]
    assert cfg.ctc.mask_prob == want["mask_prob"]
    assert cfg.ctc.mask_channel_prob == want["channel_prob"]
    assert cfg.ctc.layerdrop == want["layerdrop"]
    assert cfg.ctc.mask_channel_length == 64
    assert cfg.ctc.mask_length == 10
    assert cfg.ctc.activation_dropout == 0.1
    assert (cfg.ctc.dropout, cfg.ctc.attention_dropout, cfg.ctc.final_dropout) == (0.0, 0.0, 0.0)
    assert cfg.data.max_tokens == 3_200_000
    assert cfg.data.batching == "pad"
    assert cfg.data.normalize is True  # DinoSR: task.normalize=True (official README)
    assert cfg.run.grad_accum == 8  # 2 GPUs x update_freq 4 on one process
    assert cfg.optim.betas == (0.9, 0.98)
    assert cfg.optim.eps == 1e-8
    assert cfg.optim.weight_decay == 0.0
    assert cfg.optim.scheduler == "tri_stage"
    assert cfg.optim.phase_ratio == (0.1, 0.4, 0.5)
    assert cfg.optim.init_lr_scale == 0.01
    assert cfg.optim.final_lr_scale == 0.05
    assert cfg.finetune.labels == "ltr"


@pytest.mark.parametrize("name", PRESETS)
def test_packaged_presets_are_copies(name):
    assert preset_path(name).read_text() == (REPO_CONFIGS / f"{name}.toml").read_text()


def test_cpu_small_is_a_small_cpu_recipe():
    cfg = load_finetune_config("cpu_small")
    assert cfg.model.embed_dim == 256
    assert cfg.model.num_layers == 4
    # Chosen on AN4 (docs/finetuning.md): no encoder freeze and a 1e-3 peak beat fairseq's freeze here.
    assert cfg.finetune.freeze_finetune_updates == 0
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert 16 * 16000 <= cfg.data.max_tokens <= 32 * 16000
    assert cfg.data.manifest == ""  # the bundled corpus


def test_cpu_quick_is_cpu_small_with_its_documented_changes():
    """cpu_quick (the bundled quick path) differs from cpu_small in exactly the fields its header lists."""
    small, quick = load_finetune_config("cpu_small"), load_finetune_config("cpu_quick")
    changed = {
        ("model", "logmel_cmn"): True,
        ("ctc", "mask_prob"): 0.2,
        ("data", "speed_perturb"): (0.8, 1.25),
        ("run", "max_steps"): 1000,
        ("run", "workdir"): "runs/ft_quick",
    }
    for section in ("model", "ctc", "finetune", "data", "optim", "run"):
        for key, small_value in dataclasses.asdict(getattr(small, section)).items():
            quick_value = getattr(getattr(quick, section), key)
            if (section, key) in changed:
                assert quick_value == changed[section, key], (section, key)
                assert quick_value != small_value, (section, key)
            else:
                assert quick_value == small_value, (section, key)


def test_tri_stage_fine_tuning_curve_by_hand():
    """100 updates: 10 warm-up from 0.01 to 1, 40 hold at 1, 50 exponential decay to 0.05, then 0.05."""
    cfg = FinetuneOptimConfig(lr=1.0)
    expected = {
        0: 0.01,
        5: 0.01 + 0.99 * 5 / 10,
        9: 0.01 + 0.99 * 9 / 10,
        10: 1.0,
        49: 1.0,
        50: 1.0,
        75: math.sqrt(0.05),  # halfway through the decay: exp(ln(0.05) / 2)
        100: 0.05,
        130: 0.05,
    }
    for step, lr in expected.items():
        assert lr_at(step, cfg, 100) == pytest.approx(lr, rel=1e-12), step
