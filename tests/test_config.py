"""Config files and the config loader: round trips, shipped presets, and clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dinosr.config import Config, ConfigError, load_config
from dinosr.configs import PRESETS, load_preset, preset_path
from dinosr.model.config import ModelConfig, tiny_model_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted((ROOT / "configs").glob("*.toml"))


def test_config_files_exist():
    assert {p.stem for p in CONFIG_FILES} >= set(PRESETS)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_config_loads_and_round_trips(path):
    cfg = load_config(path)
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # as in config.json / checkpoints


@pytest.mark.parametrize("name", PRESETS)
def test_packaged_presets_are_the_repository_files(name):
    assert preset_path(name).read_bytes() == (ROOT / "configs" / f"{name}.toml").read_bytes()
    assert load_preset(name) == load_config(ROOT / "configs" / f"{name}.toml")


def test_base_reproduces_the_official_recipe():
    cfg = load_preset("base")
    assert cfg.model == ModelConfig()
    assert (cfg.data.max_tokens, cfg.data.min_sample_size, cfg.data.max_sample_size) == (
        3_800_000,
        32000,
        320000,
    )
    assert cfg.data.batching == "crop"
    assert (cfg.optim.lr, cfg.optim.betas, cfg.optim.eps, cfg.optim.weight_decay) == (
        5e-4,
        (0.9, 0.98),
        1e-6,
        0.01,
    )
    assert cfg.optim.scheduler == "tri_stage"
    assert cfg.optim.phase_ratio == (0.03, 0.47, 0.50)
    assert (cfg.run.max_steps, cfg.run.precision, cfg.run.grad_accum) == (400_000, "fp16", 1)


def test_tiny_uses_the_tiny_architecture():
    cfg = load_preset("tiny")
    tiny = tiny_model_config()
    for field in (
        "conv_layers",
        "embed_dim",
        "num_layers",
        "num_heads",
        "ffn_dim",
        "num_codebook_layers",
        "codebook_size",
        "pos_conv_groups",
    ):
        assert getattr(cfg.model, field) == getattr(tiny, field), field
    assert cfg.run.max_steps < cfg.model.freeze_teacher_step * 4
    assert cfg.model.ema_anneal_end_step < cfg.run.max_steps


def test_tiny_model_config_is_the_recipe_without_its_small_batch_options():
    """What tiny_model_config()'s docstring promises: only these recipe fields differ."""
    from dataclasses import fields, replace

    recipe, tiny = load_preset("tiny").model, tiny_model_config()
    recipe_only = {
        "frontend", "anchor_units", "anchor_weight", "anchor_frames", "codebook_init",
        "codebook_restart_steps", "ema_decay", "ema_end_decay", "ema_anneal_end_step", "freeze_teacher_step",
    }
    assert {f.name for f in fields(tiny) if getattr(tiny, f.name) != getattr(recipe, f.name)} == recipe_only
    assert replace(tiny, **{k: getattr(recipe, k) for k in recipe_only}) == recipe


def test_removed_model_options_load_when_off_and_fail_clearly_when_on():
    from dinosr.config import from_plain

    old = {"embed_dim": 256, "num_heads": 4, "target_assignment": "nearest", "sinkhorn_iters": 3,
           "sinkhorn_temperature": 0.05, "anchor_until_step": 0}
    assert from_plain(ModelConfig, old, source="c.json:model") == ModelConfig(embed_dim=256, num_heads=4)
    with pytest.raises(ConfigError, match=r"c.json:model.target_assignment = 'sinkhorn': this option was"):
        from_plain(ModelConfig, {**old, "target_assignment": "sinkhorn"}, source="c.json:model")
    with pytest.raises(ConfigError, match="anchor_until_step = 5"):
        from_plain(ModelConfig, {**old, "anchor_until_step": 5}, source="config.json:model")


def test_overrides_are_typed():
    cfg = load_preset(
        "tiny", ["optim.lr=3e-4", "run.max_steps=7", "data.manifest=/x/train.tsv", "run.tensorboard=true"]
    )
    assert (cfg.optim.lr, cfg.run.max_steps, cfg.data.manifest, cfg.run.tensorboard) == (
        3e-4,
        7,
        "/x/train.tsv",
        True,
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=-1", "lr must be > 0"),
        ("optim.scheduler=linear", "not one of"),
        ("run.precision=fp8", "not one of"),
        ("run.max_steps=many", "expected an integer"),
        ("optim.phase_ratio=[0.5, 0.5, 0.5]", "phase_ratio must sum to 1"),
        ("run.grad_accum=0", "grad_accum must be >= 1"),
        ("optim.learning_rate=1", "unknown key(s) ['learning_rate']"),
        ("trainer.lr=1", "unknown section 'trainer'"),
        ("lr=1", "section.key"),
        ("model.embed_dim=258", "divisible by num_heads"),
        ("run.num_threads=-1", "num_threads must be >= 0"),
    ],
)
def test_bad_values_are_rejected_with_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_preset("tiny", [override])
    assert message in str(err.value)


def test_unknown_keys_in_a_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[optim]\nlr = 1e-3\nwarmup = 10\n")
    with pytest.raises(ConfigError, match=r"bad.toml.*unknown key\(s\) \['warmup'\].*valid keys"):
        load_config(path)
    path.write_text("[optimizer]\nlr = 1e-3\n")
    with pytest.raises(ConfigError, match="optimizer"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
