"""Saving and loading DinoSR models: our pretrained directories, our training checkpoints, and imports
of the official fairseq ``dinosr.ckpt`` and spidr ``.pt`` files.

A pretrained directory holds ``config.json`` (``{"format": "dinosr", "model": {...}, "masking": {...}}``)
and ``model.safetensors`` (the full ``DinoSR.state_dict()``: student, teacher, heads, codebooks).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dinosr.errors import CheckpointError, UnsafeCheckpointError
from dinosr.fileio import atomic_write
from dinosr.interop.convert import (
    ConversionError,
    detect_layout,
    fairseq_to_dinosr,
    infer_model_config,
    spidr_to_dinosr,
)
from dinosr.interop.safe_pickle import PickleStub, safe_torch_load
from dinosr.model.config import MaskingConfig, ModelConfig
from dinosr.model.dinosr import DinoSR

log = logging.getLogger(__name__)

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "load_model",
    "load_pretrained",
    "save_pretrained",
    "state_to_model",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1


def _configs_to_dict(model_cfg: ModelConfig, masking_cfg: MaskingConfig) -> dict[str, Any]:
    from dinosr.config import to_plain

    return {
        "format": "dinosr",
        "version": FORMAT_VERSION,
        "model": to_plain(model_cfg),
        "masking": to_plain(masking_cfg),
    }


def configs_from_dict(data: Mapping[str, Any], *, source: str) -> tuple[ModelConfig, MaskingConfig]:
    """``{"model": {...}, "masking": {...}}`` (ours or a training checkpoint's config) -> dataclasses."""
    from dinosr.config import from_plain

    model_cfg = from_plain(ModelConfig, dict(data.get("model", {})), source=f"{source}:model")
    masking_cfg = from_plain(MaskingConfig, dict(data.get("masking", {})), source=f"{source}:masking")
    return model_cfg, masking_cfg


def save_pretrained(model: DinoSR, directory: str | os.PathLike) -> Path:
    """Write ``config.json`` + ``model.safetensors`` to ``directory`` (created); returns it."""
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_write(directory / WEIGHTS_NAME) as f:  # the umask's permissions, as any file the user makes
        f.write(save(state, metadata={"format": "pt"}))
    config = _configs_to_dict(model.cfg, model.masking_cfg)
    with atomic_write(directory / CONFIG_NAME, binary=False) as f:
        f.write(json.dumps(config, indent=2) + "\n")
    return directory


def load_pretrained(directory: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> DinoSR:
    """Build the model saved by :func:`save_pretrained` (eval mode)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"{path}: not found ({directory} is not a complete pretrained directory)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{config_path}: unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(config, Mapping) or config.get("format") != "dinosr":
        raise CheckpointError(f"{config_path}: not a dinosr pretrained directory")
    model_cfg, masking_cfg = configs_from_dict(config, source=str(config_path))
    try:
        state = load_file(str(weights_path), device=str(map_location))
    except Exception as err:  # safetensors raises its own error types for cut or garbage files
        raise CheckpointError(f"{weights_path}: truncated or corrupt safetensors file ({err})") from None
    return state_to_model(state, model_cfg, masking_cfg)


def state_to_model(
    state: Mapping[str, Tensor], model_cfg: ModelConfig, masking_cfg: MaskingConfig | None = None
) -> DinoSR:
    """A DinoSR with ``state`` loaded strictly (missing/unexpected keys raise ConversionError), eval mode."""
    with torch.device("meta"):
        model = DinoSR(model_cfg, masking_cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ConversionError(
            f"state dict does not fit the model: missing {missing}, unexpected {unexpected}"
        )
    bad = [
        f"{k}: {tuple(v.shape)} != {tuple(expected[k].shape)}"
        for k, v in state.items()
        if v.shape != expected[k].shape
    ]
    if bad:
        raise ConversionError(f"shape mismatch: {bad}")
    # assign=True takes the loaded tensors as they are (no meta -> real copy); fp16 -> fp32 first.
    model.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, assign=True
    )
    model.teacher.requires_grad_(False)
    return model.eval()


# ----------------------------------------------------------------------------- foreign checkpoints

# fairseq DinosrAudioConfig fields we honour when the checkpoint's cfg is readable (else defaults).
_FAIRSEQ_MODEL_FIELDS = {
    "encoder_layerdrop": "layerdrop",
    "dropout": "dropout",
    "attention_dropout": "attention_dropout",
    "activation_dropout": "activation_dropout",
    "dropout_input": "dropout_input",
    "ema_decay": "ema_decay",
    "ema_end_decay": "ema_end_decay",
    "ema_anneal_end_step": "ema_anneal_end_step",
    "freeze_teacher_step": "freeze_teacher_step",
}
_FAIRSEQ_MASK_FIELDS = {
    "mask_prob": "mask_prob",
    "mask_length": "mask_length",
    "require_same_masks": "require_same_masks",
}


def _as_mapping(obj: Any) -> Mapping[str, Any] | None:
    """A dict view of a plain dict or of a stubbed object (argparse.Namespace, omegaconf DictConfig)."""
    if isinstance(obj, Mapping):
        return obj
    if isinstance(obj, PickleStub):
        state = obj._state
        if isinstance(state, Mapping):
            content = state.get("_content")  # omegaconf keeps children in "_content"
            return content if isinstance(content, Mapping) else state
        if isinstance(state, tuple) and state and isinstance(state[0], Mapping):
            return state[0]
    return None


def _plain_value(obj: Any) -> Any:
    """Unwrap omegaconf value nodes (stubs whose state holds ``_val``)."""
    if isinstance(obj, PickleStub) and isinstance(obj._state, Mapping) and "_val" in obj._state:
        return obj._state["_val"]
    return obj


def _fairseq_model_section(checkpoint: Mapping[str, Any]) -> Mapping[str, Any]:
    for top in ("cfg", "args"):
        section = _as_mapping(checkpoint.get(top))
        if section is None:
            continue
        model = _as_mapping(_plain_value(section.get("model")))
        return model if model is not None else section  # fairseq <0.10 args: one flat namespace
    return {}


def _override(cfg: Any, section: Mapping[str, Any], fields: Mapping[str, str]) -> Any:
    updates = {}
    for src, dst in fields.items():
        value = _plain_value(section.get(src))
        default = getattr(cfg, dst)
        if isinstance(value, (int, float)) and isinstance(default, (int, float)):
            updates[dst] = type(default)(value)
    try:
        return replace(cfg, **updates)
    except ValueError as err:
        log.warning("ignoring the checkpoint's config values %s: %s", updates, err)
        return cfg


def _import_fairseq(checkpoint: Mapping[str, Any], num_heads: int | None) -> DinoSR:
    state = fairseq_to_dinosr(checkpoint["model"])
    section = _fairseq_model_section(checkpoint)
    base = _override(ModelConfig(), section, _FAIRSEQ_MODEL_FIELDS)
    masking = _override(MaskingConfig(), section, _FAIRSEQ_MASK_FIELDS)
    heads = _plain_value(section.get("encoder_attention_heads"))
    if num_heads is None and isinstance(heads, int) and not isinstance(heads, bool):
        num_heads = heads
    return state_to_model(state, infer_model_config(state, base=base, num_heads=num_heads), masking)


def _import_spidr(model_state: Mapping[str, Tensor], num_heads: int | None, head_placement: str) -> DinoSR:
    state = spidr_to_dinosr(model_state)
    # spidr defaults (spec 12.2 / 1.1): re-initialised teacher, freeze at 200k, min_masks 2.
    base = ModelConfig(
        teacher_init="reinit", freeze_teacher_step=200000, head_placement=head_placement, layerdrop=0.0
    )
    cfg = infer_model_config(state, base=base, num_heads=num_heads)
    return state_to_model(state, cfg, MaskingConfig(min_masks=2))


def load_model(
    path: str | os.PathLike,
    *,
    map_location: str | torch.device = "cpu",
    num_heads: int | None = None,
    head_placement: str = "final",
    model_config: ModelConfig | None = None,
) -> DinoSR:
    """Load any supported checkpoint as a DinoSR in eval mode.

    Args:
        path: a :func:`save_pretrained` directory; one of our training checkpoints
            (``{"model", "config", ...}``) or a training run directory (its newest checkpoint); the
            official fairseq ``dinosr.ckpt``; a spidr ``.pt`` (``{"model": state_dict}``), or a bare
            state dict of ours.
        num_heads: attention heads for imported checkpoints (not visible in weights; default
            ``embed_dim // 64``, or the fairseq cfg's value).
        head_placement: for spidr files: "final" (DinoSR) or "intermediate" (SpidR): same key sets.
        model_config: the architecture of a bare state dict of ours (``torch.save(model.state_dict())``);
            without it, it is inferred from the shapes or taken from the packaged preset that fits.

    Raises:
        CheckpointError: a missing, truncated or corrupt file (named), or a state dict that fits no model;
            UnsafeCheckpointError (a CheckpointError) for a pickle that would run code.
    """
    path = Path(path)
    if path.is_dir() and not (path / WEIGHTS_NAME).exists() and (path / "checkpoints").is_dir():
        from dinosr.train.checkpoint import newest_run_checkpoint

        path = newest_run_checkpoint(path)
    if path.is_dir():
        return load_pretrained(path, map_location=map_location)
    checkpoint = _read_checkpoint_file(path, map_location)
    if not isinstance(checkpoint, Mapping):
        raise ConversionError(f"{path}: expected a dict checkpoint, got {type(checkpoint).__name__}")
    state = checkpoint.get("model", checkpoint)
    if not isinstance(state, Mapping):
        raise ConversionError(f"{path}: checkpoint['model'] is {type(state).__name__}, not a state dict")
    layout = detect_layout(state)
    if layout == "fairseq":
        return _import_fairseq(checkpoint, num_heads)
    if layout == "spidr":
        return _import_spidr(state, num_heads, head_placement)
    config = checkpoint.get("config")
    if model_config is not None:
        model_cfg, masking_cfg = model_config, MaskingConfig()
    elif isinstance(config, Mapping) and "model" in config:
        model_cfg, masking_cfg = configs_from_dict(config, source=str(path))
    else:
        log.warning("%s has no config: inferring the architecture from tensor shapes", path)
        model_cfg, masking_cfg = _bare_state_config(state, path, num_heads=num_heads), MaskingConfig()
    return state_to_model(state, model_cfg, masking_cfg)


def _read_checkpoint_file(path: Path, map_location: str | torch.device) -> Any:
    """torch.load with weights_only, else the restricted unpickler; damage is a CheckpointError naming it."""
    from dinosr.train.checkpoint import check_readable, describe_load_error

    check_readable(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # weights_only refuses pickled classes: fairseq cfg objects, ...
        log.info(
            "%s is not a plain checkpoint (%s); reading it with the restricted unpickler",
            path,
            type(err).__name__,
        )
    try:
        return safe_torch_load(path, map_location=map_location)
    except UnsafeCheckpointError as err:
        raise UnsafeCheckpointError(f"{path}: {err}") from None
    except Exception as err:  # a cut or garbage file makes torch/pickle raise almost anything
        raise CheckpointError(f"{path}: {describe_load_error(err, path)}") from None


def _fits(state: Mapping[str, Tensor], model_cfg: ModelConfig) -> bool:
    """Whether a DinoSR built from ``model_cfg`` has exactly the keys and shapes of ``state``."""
    try:
        with torch.device("meta"):
            expected = DinoSR(model_cfg).state_dict()
    except ValueError:
        return False
    return set(expected) == set(state) and all(expected[k].shape == state[k].shape for k in state)


def _bare_state_config(state: Mapping[str, Tensor], path: Path, *, num_heads: int | None) -> ModelConfig:
    """The architecture of a bare state dict: inferred from the shapes, else a packaged preset that fits."""
    from dinosr.config import load_config
    from dinosr.configs import PRESETS, preset_path

    reason = "the shapes fit no inferred architecture"
    candidates = []
    try:
        candidates.append(infer_model_config(state, num_heads=num_heads))
    except (ConversionError, ValueError) as err:  # e.g. the log-mel front end has no conv layers
        reason = str(err)
    # The recipes' options (log-mel front end, anchor, codebook upkeep) are not all visible in shapes.
    candidates += [load_config(preset_path(name)).model for name in PRESETS]
    for cfg in candidates:
        if num_heads is not None:
            cfg = replace(cfg, num_heads=num_heads)
        if _fits(state, cfg):
            return cfg
    raise CheckpointError(
        f"{path}: a bare state dict without its config, whose architecture neither follows from the tensor "
        f"shapes ({reason}) nor matches a packaged preset ({', '.join(PRESETS)}); pass the model config: "
        "load_model(path, model_config=ModelConfig(...)), or save the model with save_pretrained"
    )
