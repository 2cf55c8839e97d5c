"""LR schedules (official tri-stage numbers, cosine, constant) and the optimizer's parameter groups."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from dinosr.model.config import tiny_model_config
from dinosr.model.dinosr import DinoSR
from dinosr.train.config import OptimConfig
from dinosr.train.optim import build_optimizer, drop_group, has_group, set_lr
from dinosr.train.schedule import lr_at, tri_stage_lr


def test_tri_stage_matches_the_official_recipe():
    cfg = OptimConfig()  # peak 5e-4, 3/47/50 %, init and final scale 0.01
    total = 400_000
    assert lr_at(0, cfg, total) == pytest.approx(5e-6)
    assert lr_at(6_000, cfg, total) == pytest.approx(5e-6 + (5e-4 - 5e-6) / 2)
    assert lr_at(12_000, cfg, total) == pytest.approx(5e-4)  # 12k warm-up
    assert lr_at(199_999, cfg, total) == pytest.approx(5e-4)  # 188k hold
    assert lr_at(300_000, cfg, total) == pytest.approx(5e-4 * math.sqrt(0.01))  # exponential: halfway in log
    assert lr_at(400_000, cfg, total) == pytest.approx(5e-6)
    assert lr_at(500_000, cfg, total) == pytest.approx(5e-6)  # stays at the final LR
    values = [lr_at(s, cfg, total) for s in range(0, total, 997)]
    peak_at = values.index(max(values))
    assert all(a <= b for a, b in itertools.pairwise(values[: peak_at + 1]))
    assert all(a >= b for a, b in itertools.pairwise(values[peak_at:]))


def test_tri_stage_without_warmup_or_decay():
    lr = tri_stage_lr(0, peak=1.0, max_steps=10, phase_ratio=(0.0, 1.0, 0.0), init_scale=0.1, final_scale=0.1)
    assert lr == 1.0
    assert (
        tri_stage_lr(10, peak=1.0, max_steps=10, phase_ratio=(0.0, 1.0, 0.0), init_scale=0.1, final_scale=0.1)
        == 0.1
    )


def test_cosine_and_constant():
    cos = OptimConfig(scheduler="cosine", warmup_steps=10, init_lr_scale=0.0, final_lr_scale=0.1, lr=1.0)
    assert lr_at(0, cos, 110) == 0.0
    assert lr_at(5, cos, 110) == pytest.approx(0.5)
    assert lr_at(10, cos, 110) == pytest.approx(1.0)
    assert lr_at(60, cos, 110) == pytest.approx(0.55)
    assert lr_at(110, cos, 110) == pytest.approx(0.1)
    const = OptimConfig(scheduler="constant", lr=2.0, init_lr_scale=0.5)  # warm-up 0 -> 3% of the run
    assert lr_at(0, const, 100) == pytest.approx(1.0)
    assert lr_at(3, const, 100) == 2.0
    assert lr_at(99, const, 100) == 2.0


def test_optimizer_groups_hyperparameters_and_freeze():
    model = DinoSR(tiny_model_config())
    opt = build_optimizer(model, OptimConfig())
    assert [g["name"] for g in opt.param_groups] == ["extractor", "main"]
    for g in opt.param_groups:
        assert g["betas"] == (0.9, 0.98)
        assert g["eps"] == 1e-6
        assert g["weight_decay"] == 0.01
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    # The teacher and the codebooks are never optimised; every trainable student parameter is.
    assert not in_opt & {id(p) for p in model.teacher.parameters()}
    assert in_opt == {id(p) for p in model.parameters() if p.requires_grad}

    for p in model.parameters():
        p.grad = torch.ones_like(p) if p.requires_grad else None
    set_lr(opt, 1e-3)
    opt.step()
    extractor = opt.param_groups[0]["params"]
    assert all(p in opt.state for p in extractor)
    drop_group(opt, "extractor")
    assert not has_group(opt, "extractor")
    assert has_group(opt, "main")
    assert not any(p in opt.state for p in extractor)
    frozen = build_optimizer(model, OptimConfig(), frozen=True)
    assert [g["name"] for g in frozen.param_groups] == ["main"]
    # A state saved after the drop loads into an optimizer built with frozen=True.
    frozen.load_state_dict(opt.state_dict())
