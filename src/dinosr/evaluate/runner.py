"""Files in, files out: resolve what to evaluate, run `evaluate`, write metrics.json, counts.npz, the report.

Used by `dinosr evaluate` (``dinosr.evaluate.cli``) and `dinosr demo` (``dinosr.demo``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dinosr.evaluate.corpus import EvalCorpus
from dinosr.evaluate.evaluate import EvalSettings, evaluate
from dinosr.evaluate.sources import FeatureDirSource, ModelSource

log = logging.getLogger(__name__)

__all__ = ["is_feature_dir", "open_source", "resolve_model_path", "run_evaluation"]


def resolve_model_path(path: str | Path) -> tuple[Path, Path | None]:
    """(checkpoint or pretrained dir, training log or None) for a model argument.

    A training run directory (``checkpoints/`` inside) resolves to its newest checkpoint and its
    ``metrics.jsonl``; a checkpoint inside ``RUN/checkpoints/`` finds ``RUN/metrics.jsonl`` too.
    """
    from dinosr.train.checkpoint import newest_run_checkpoint

    path = Path(path)
    if path.is_dir() and (path / "checkpoints").is_dir():
        ckpt = newest_run_checkpoint(path)
        log_path = path / "metrics.jsonl"
        return ckpt, log_path if log_path.exists() else None
    if path.is_file() and path.parent.name == "checkpoints":
        log_path = path.parent.parent / "metrics.jsonl"
        return path, log_path if log_path.exists() else None
    return path, None


def is_feature_dir(path: str | Path) -> bool:
    """Whether ``path`` is a directory written by ``dinosr extract``."""
    path = Path(path)
    return path.is_dir() and ((path / "extract.json").exists() or any(path.glob("layer*/*.npy")))


def open_source(
    path: str | Path,
    *,
    codebook_size: int | None = None,
    feature_kind: str = "hidden",
    unit_source: str = "codebook",
    batch_seconds: float = 60.0,
) -> tuple[ModelSource | FeatureDirSource, Path, Path | None]:
    """(source, resolved model path, training log or None) for a model or feature-directory argument."""
    if is_feature_dir(path):
        return FeatureDirSource(path, codebook_size=codebook_size), Path(path), None
    from dinosr.interop import load_model

    ckpt, train_log = resolve_model_path(path)
    model = load_model(ckpt)
    source = ModelSource(
        model, feature_kind=feature_kind, unit_source=unit_source, batch_seconds=batch_seconds
    )
    return source, ckpt, train_log


def _json_clean(obj: Any) -> Any:
    """NaN -> None (strict JSON), numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def run_evaluation(
    source: ModelSource | FeatureDirSource,
    corpus: EvalCorpus,
    train: EvalCorpus | None,
    out_dir: str | Path,
    *,
    settings: EvalSettings | None = None,
    train_log: str | Path | None = None,
    title: str = "DinoSR evaluation",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`evaluate`, then write ``metrics.json``, ``counts.npz`` and the HTML report into ``out_dir``.

    Returns the metrics dict (with ``report`` = path of ``report.html``).
    """
    from dinosr.evaluate.report import write_report

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics, counts = evaluate(source, corpus, train, settings)
    if extra:
        metrics.update(extra)
    if train_log is not None:
        metrics["train_log"] = str(train_log)
    metrics["title"] = title
    metrics = _json_clean(metrics)
    tmp = out_dir / "counts.npz.tmp"
    with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to the temporary name
        np.savez_compressed(f, **{k.replace("/", "_L"): v for k, v in counts.items()})
    tmp.replace(out_dir / "counts.npz")
    report = write_report(out_dir, metrics, counts, train_log=train_log, title=title)
    metrics["report"] = str(report)
    tmp = out_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=1, allow_nan=False) + "\n")
    tmp.replace(out_dir / "metrics.json")
    return metrics
