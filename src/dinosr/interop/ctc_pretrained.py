"""Fine-tuned CTC models on disk: the ``dinosr-ctc`` directory format, and loading from fine-tuning runs.

A fine-tuned model directory holds::

    config.json         {"format": "dinosr-ctc", "version": 1, "model": ModelConfig, "ctc": CTCConfig,
                         "symbols": [every dictionary symbol in index order, specials first]}
    model.safetensors   DinoSRForCTC.state_dict() (student encoder + head)
    dict.ltr.txt        the fairseq dictionary (``symbol count`` lines), for fairseq-style tools

``config.json`` is written last, so a directory interrupted while saving has no config and is refused.
``model`` is the architecture as the CTC model runs it (``DinoSRForCTC.cfg``, fine-tuning dropouts included).

:func:`load_ctc_model` also reads a fine-tuning checkpoint (``{"model": state dict, "config": {"model": ...,
"ctc": ..., ...}, "dictionary": [symbols]}``, read with ``weights_only=True``) or the run directory holding
it (``checkpoints/best.pt``, else the newest ``checkpoints/checkpoint_*.pt``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dinosr.data.labels import DICT_NAME, SPECIAL_SYMBOLS, Dictionary
from dinosr.errors import CheckpointError, DinosrError, LabelError
from dinosr.fileio import atomic_write
from dinosr.model.config import ModelConfig
from dinosr.model.ctc import CTCConfig, DinoSRForCTC

__all__ = [
    "CTC_FORMAT",
    "ctc_model_from_checkpoint",
    "find_ctc_checkpoint",
    "is_ctc_model_dir",
    "is_ctc_source",
    "load_ctc_model",
    "save_ctc_model",
]

CTC_FORMAT = "dinosr-ctc"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_ctc_model(model: DinoSRForCTC, dictionary: Dictionary, directory: str | os.PathLike) -> Path:
    """Write ``model`` and ``dictionary`` as a ``dinosr-ctc`` directory (created); returns it.

    Every file is written to a temporary name and renamed; ``config.json`` comes last.
    """
    from safetensors.torch import save

    from dinosr.config import to_plain

    if len(dictionary) != model.vocab_size:
        raise ValueError(
            f"the dictionary has {len(dictionary)} symbols but the model {model.vocab_size} outputs"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_write(directory / WEIGHTS_NAME, fsync=True) as f:
        f.write(save(state, metadata={"format": "pt"}))
    dictionary.save(directory / DICT_NAME)
    config = {
        "format": CTC_FORMAT,
        "version": FORMAT_VERSION,
        "model": to_plain(model.cfg),
        "ctc": to_plain(model.ctc_cfg),
        "symbols": list(dictionary.symbols),
    }
    with atomic_write(directory / CONFIG_NAME, binary=False, fsync=True) as f:
        f.write(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return directory


# ----------------------------------------------------------------------------- loading


def _dictionary_from_symbols(symbols: Any, source: str) -> Dictionary:
    """Our symbol list (specials first, or without them) -> Dictionary."""
    if (
        not isinstance(symbols, Sequence)
        or isinstance(symbols, str)
        or not all(isinstance(s, str) for s in symbols)
    ):
        raise CheckpointError(f"{source}: the dictionary must be a list of symbols")
    symbols = list(symbols)
    if tuple(symbols[: len(SPECIAL_SYMBOLS)]) == SPECIAL_SYMBOLS:
        symbols = symbols[len(SPECIAL_SYMBOLS) :]
    try:
        return Dictionary(symbols)
    except ValueError as err:
        raise CheckpointError(f"{source}: bad dictionary: {err}") from None


def ctc_model_from_checkpoint(
    state: Mapping[str, Tensor],
    config: Mapping[str, Any],
    symbols: Sequence[str],
    *,
    source: str,
) -> tuple[DinoSRForCTC, Dictionary]:
    """Build the CTC model (eval mode) from its state dict, ``{"model", "ctc"}`` config and symbols.

    ``source`` names the file in errors. A state dict that does not fit is a CheckpointError.
    """
    from dinosr.config import from_plain

    dictionary = _dictionary_from_symbols(symbols, source)
    try:
        model_cfg = from_plain(ModelConfig, dict(config["model"]), source=f"{source}:model")
        ctc_cfg = from_plain(CTCConfig, dict(config["ctc"]), source=f"{source}:ctc")
    except DinosrError as err:
        raise CheckpointError(str(err)) from None
    model = DinoSRForCTC(model_cfg, len(dictionary), ctc_cfg)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not fit the CTC model of its config: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    bad = [
        f"{k} {tuple(v.shape)} != {tuple(expected[k].shape)}"
        for k, v in state.items()
        if v.shape != expected[k].shape
    ]
    if bad:
        hint = (
            " (the dictionary does not match the output layer)"
            if any(b.startswith("head.") for b in bad)
            else ""
        )
        raise CheckpointError(f"{source}: weight shapes do not fit the config{hint}: {bad[:3]}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval(), dictionary


def _config_of(path: Path) -> dict | None:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def is_ctc_model_dir(path: str | os.PathLike) -> bool:
    """True for a directory written by :func:`save_ctc_model`."""
    config = _config_of(Path(path) / CONFIG_NAME)
    return config is not None and config.get("format") == CTC_FORMAT


def is_ctc_source(path: str | os.PathLike) -> bool:
    """True when :func:`load_ctc_model` would find a CTC model at ``path`` (cheap: reads configs only,
    except for a checkpoint file outside a run directory, which is opened)."""
    path = Path(path)
    if path.is_dir():
        if is_ctc_model_dir(path):
            return True
        run_config = _config_of(path / CONFIG_NAME)  # a fine-tuning run writes [ctc] into RUN/config.json
        return (path / "checkpoints").is_dir() and run_config is not None and "ctc" in run_config
    if not path.is_file():
        return False
    run_config = _config_of(path.parent.parent / CONFIG_NAME)  # RUN/checkpoints/FILE.pt
    if run_config is not None and path.parent.name == "checkpoints":
        return "ctc" in run_config
    try:
        checkpoint = torch.load(path, map_location="meta", weights_only=True)
    except Exception:  # not one of our plain checkpoints (e.g. the official dinosr.ckpt)
        return False
    config = checkpoint.get("config") if isinstance(checkpoint, Mapping) else None
    return isinstance(config, Mapping) and "ctc" in config and "dictionary" in checkpoint


def find_ctc_checkpoint(run_dir: str | os.PathLike) -> Path:
    """``RUN/checkpoints/best.pt`` if it exists, else the newest ``RUN/checkpoints/checkpoint_*.pt``."""
    from dinosr.train.checkpoint import BEST_NAME, latest_checkpoint

    checkpoints = Path(run_dir) / "checkpoints"
    if (checkpoints / BEST_NAME).is_file():
        return checkpoints / BEST_NAME
    newest = latest_checkpoint(checkpoints)
    if newest is None:
        raise CheckpointError(
            f"{checkpoints}: no best.pt and no checkpoint_*.pt (no fine-tuning step saved yet?)"
        )
    return newest


def _load_directory(directory: Path, map_location: str | torch.device) -> tuple[DinoSRForCTC, Dictionary]:
    from safetensors.torch import load_file

    config_path = directory / CONFIG_NAME
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{config_path}: unreadable model config ({type(err).__name__})") from None
    kind = config.get("format") if isinstance(config, dict) else None
    if kind == "dinosr":
        raise CheckpointError(
            f"{directory} is a pretrained DinoSR encoder without a CTC head: fine-tune it first "
            "(dinosr finetune) to get a speech recogniser"
        )
    if kind != CTC_FORMAT:
        raise CheckpointError(f"{config_path}: not a fine-tuned dinosr CTC model (format {kind!r})")
    if config.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{config_path}: unsupported {CTC_FORMAT} version {config.get('version')!r}")
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    try:
        state = load_file(str(weights), device=str(map_location))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{weights}: unreadable weights ({' '.join(str(err).split())[:120]})") from None
    model, dictionary = ctc_model_from_checkpoint(
        state, config, config.get("symbols"), source=str(config_path)
    )
    dict_path = directory / DICT_NAME
    if dict_path.is_file():  # it carries the counts; its symbols must be the config's
        try:
            on_disk = Dictionary.load(dict_path)
        except LabelError as err:
            raise CheckpointError(str(err)) from None
        if on_disk.symbols != dictionary.symbols:
            raise CheckpointError(f"{dict_path}: symbols differ from those in {config_path}")
        dictionary = on_disk
    return model, dictionary


def _load_checkpoint_file(path: Path, map_location: str | torch.device) -> tuple[DinoSRForCTC, Dictionary]:
    from dinosr.train.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(path, map_location=map_location)  # weights_only; CheckpointError if damaged
    config = checkpoint.get("config")
    state = checkpoint.get("model")
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: no model state dict (checkpoint['model'])")
    if not isinstance(config, Mapping) or "ctc" not in config or "dictionary" not in checkpoint:
        raise CheckpointError(
            f"{path}: not a CTC fine-tuning checkpoint (no 'ctc' config or dictionary): a pretraining "
            "checkpoint must be fine-tuned first (dinosr finetune)"
        )
    if "model" not in config:
        raise CheckpointError(f"{path}: the checkpoint's config has no 'model' section")
    return ctc_model_from_checkpoint(state, config, checkpoint["dictionary"], source=str(path))


def load_ctc_model(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> tuple[DinoSRForCTC, Dictionary]:
    """A fine-tuned CTC model (eval mode) and its dictionary.

    Args:
        path: a :func:`save_ctc_model` directory, a fine-tuning run directory (``checkpoints/best.pt``,
            else the newest ``checkpoints/checkpoint_*.pt``) or one such checkpoint file.
    Raises:
        CheckpointError (one line naming the file) for a missing, damaged or non-CTC model.
    """
    path = Path(path)
    if path.is_dir():
        if is_ctc_model_dir(path):
            return _load_directory(path, map_location)
        if (path / "checkpoints").is_dir():  # a run directory (its config.json is the run's config)
            return _load_checkpoint_file(find_ctc_checkpoint(path), map_location)
        if (path / CONFIG_NAME).is_file():  # another kind of model directory: _load_directory says which
            return _load_directory(path, map_location)
        raise CheckpointError(
            f"{path}: neither a fine-tuned model directory (config.json) nor a run directory (checkpoints/)"
        )
    if not path.exists():
        raise CheckpointError(f"{path}: no such model file or directory")
    return _load_checkpoint_file(path, map_location)
