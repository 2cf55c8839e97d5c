"""Training checkpoints: atomic writes, keep the last K, find the newest, safe loading.

A checkpoint is a plain dict of tensors and Python containers/scalars (no pickled classes), so
``torch.load(path, weights_only=True)`` reads it. Files are ``<dir>/checkpoint_<step>.pt``;
writing goes to a temporary file in the same directory followed by ``os.replace``, so a crash
mid-write never leaves a truncated checkpoint under the final name (only a ``.checkpoint_*.pt.*.tmp``
file, which the next run removes). A checkpoint damaged anyway (a full disk, a killed copy) raises
:class:`CheckpointError` naming it; a resuming run falls back to the newest *complete* checkpoint.
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from dinosr.errors import CheckpointError
from dinosr.fileio import atomic_write

log = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint_(\d+)\.pt$")
BEST_NAME = "best.pt"  # the best checkpoint by the task's best_metric (Trainer.save_best)
# What atomic_write leaves behind when killed mid-write (fileio.temp_name_prefix): ours, safe to delete.
_TEMP_NAME = re.compile(r"^\.checkpoint_\d+\.pt\..+\.tmp$")


def checkpoint_path(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"checkpoint_{step:08d}.pt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoints in ``directory`` sorted by step (oldest first); temp files are ignored."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest checkpoint in ``directory``, or None."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


def newest_run_checkpoint(run_dir: str | Path) -> Path:
    """The newest checkpoint of a training run directory (``RUN/checkpoints/``); raises if it has none."""
    ckpt = latest_checkpoint(Path(run_dir) / "checkpoints")
    if ckpt is None:
        raise FileNotFoundError(f"{Path(run_dir) / 'checkpoints'} holds no checkpoint yet")
    return ckpt


def save_checkpoint(state: dict[str, Any], directory: str | Path, step: int, *, keep_last: int) -> Path:
    """Write ``state`` atomically as the checkpoint of ``step`` and delete all but the last ``keep_last``.

    Returns:
        The path written.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(directory, step)
    with atomic_write(path, fsync=True) as f:
        torch.save(state, f)
    for old in list_checkpoints(directory)[:-keep_last]:
        old.unlink(missing_ok=True)
    log.info("saved checkpoint %s", path)
    return path


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (tensors and plain containers only).

    Raises:
        CheckpointError: the file is missing, empty, truncated, corrupt or holds pickled objects,
            named in the message.
    """
    path = Path(path)
    check_readable(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refused a global: not one of our checkpoints
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: not a plain dinosr checkpoint (it holds pickled objects: {first})"
        ) from None
    except Exception as err:  # garbage bytes make torch/pickle raise almost anything
        raise CheckpointError(f"{path}: {describe_load_error(err, path)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, found {type(state).__name__}")
    return state


def check_readable(path: Path) -> None:
    """Raise CheckpointError for a missing, directory or zero-byte checkpoint path (before torch sees it)."""
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes): the checkpoint was not written completely")


def describe_load_error(err: BaseException, path: Path) -> str:
    """A short reason for torch.load's failure on a damaged file (torch's own text names no file and
    differs between versions, so the file itself is inspected)."""
    text = " ".join(str(err).split())[:160]
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):  # torch.save's zip, without its end
        return "truncated or incomplete checkpoint (the file ends early: a full disk or an unfinished copy?)"
    if isinstance(err, EOFError):  # legacy (non-zip) torch.save format cut short
        return "truncated or incomplete checkpoint (the file ends early: a full disk or an unfinished copy?)"
    if head[:2] != b"PK" and head[:1] != b"\x80":  # neither torch's zip nor a pickle
        return f"corrupt checkpoint: not a torch.save file ({type(err).__name__}: {text})"
    return f"corrupt checkpoint ({type(err).__name__}: {text})"


def clean_stale_temp_files(directory: str | Path) -> list[Path]:
    """Delete the temporary files a killed save left behind (only our ``.checkpoint_*.pt.*.tmp`` names)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = sorted(p for p in directory.iterdir() if _TEMP_NAME.match(p.name) and p.is_file())
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        log.info("removed %d unfinished checkpoint temp file(s) in %s", len(stale), directory)
    return stale


def set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint to ``<name>.damaged[.N]``: kept for inspection, but no longer a
    checkpoint name, so neither a resume nor the keep-last rotation nor a new save of that step touches it."""
    target = path.with_name(path.name + ".damaged")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.damaged.{n}")
        n += 1
    path.rename(target)
    return target


def load_newest_complete(
    directory: str | Path, *, map_location: str | torch.device = "cpu", tidy: bool = True
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of ``directory`` that loads, as ``(path, state)``; None if there is none.

    A damaged newer checkpoint is skipped with a warning naming it; it is never deleted. With ``tidy``
    (pass it on one process of a job only) stale temporary files are removed first and, once an older
    complete checkpoint was found, the damaged newer ones are renamed aside (:func:`set_aside`).

    Raises:
        CheckpointError: checkpoints exist but none of them loads.
    """
    if tidy:
        clean_stale_temp_files(directory)
    found = list_checkpoints(directory)
    damaged = []
    for path in reversed(found):
        try:
            state = load_checkpoint(path, map_location=map_location)
        except CheckpointError as err:
            log.warning("DAMAGED CHECKPOINT skipped: %s", err)
            damaged.append(path)
            continue
        for bad in damaged:
            if tidy and bad.exists():
                log.warning("damaged checkpoint %s kept as %s", bad, set_aside(bad))
        if damaged:
            log.warning(
                "RESUMING FROM AN OLDER CHECKPOINT: %s (step %s) instead of the damaged %s",
                path,
                state.get("step"),
                ", ".join(p.name for p in damaged),
            )
        return path, state
    if damaged:
        raise CheckpointError(
            f"{Path(directory)}: none of the {len(damaged)} checkpoint(s) is readable "
            "(see the warnings above); move them away to start this run from scratch"
        )
    return None


def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch CPU, CUDA, NumPy global, Python) as tensors/plain values."""
    import random

    import numpy as np

    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (saving the global state is the point)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    import random

    import numpy as np

    torch.set_rng_state(state["torch"].cpu())
    npy = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            npy["name"],
            npy["keys"].cpu().numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


def config_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``"section.key: old -> new"`` for every value that differs between two config dicts."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(config_diff(a, b, f"{prefix}{key}."))
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out
