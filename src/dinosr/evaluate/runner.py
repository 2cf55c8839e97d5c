"""Files in, files out: resolve what to evaluate, run `evaluate`, write metrics.json, counts.npz, the report.

Used by `dinosr evaluate` (``dinosr.evaluate.cli``) and `dinosr demo` (``dinosr.demo``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dinosr.errors import ConfigError
from dinosr.evaluate.corpus import (
    EvalCorpus,
    base_voices,
    corpus_files,
    heldout_split,
    load_eval_corpus,
    manifest_speakers,
)
from dinosr.evaluate.evaluate import EvalSettings, evaluate
from dinosr.evaluate.sources import FeatureDirSource, ModelSource
from dinosr.fileio import atomic_write_text

log = logging.getLogger(__name__)

__all__ = [
    "EvalInputs",
    "SplitFiles",
    "is_feature_dir",
    "load_inputs",
    "open_source",
    "resolve_inputs",
    "resolve_model_path",
    "run_evaluation",
]


@dataclass
class SplitFiles:
    """The files of one set of utterances: manifest, phone alignments, speakers (None: from the ids)."""

    manifest: Path
    alignments: Path
    speakers: Path | None = None


@dataclass
class EvalInputs:
    """The evaluation set, the training set for the probe / k-means fits (None: none) and base voices."""

    eval: SplitFiles
    train: SplitFiles | None
    voices: dict[str, str] = field(default_factory=dict)  # speaker -> base voice, both sets


def resolve_inputs(
    *,
    corpus: Path | None = None,
    split: str = "valid",
    manifest: Path | None = None,
    alignments: Path | None = None,
    speakers: Path | None = None,
    train_corpus: Path | None = None,
    train_split: str = "train",
    train_manifest: Path | None = None,
    train_alignments: Path | None = None,
    train_speakers: Path | None = None,
    voices: Path | None = None,
) -> EvalInputs:
    """The files `dinosr evaluate` reads, from its options (explicit files override corpus ones).

    Evaluation: ``corpus/{split}.tsv`` with the corpus alignments and speakers, or ``manifest`` +
    ``alignments`` (+ ``speakers``). Training: ``train_corpus`` (else ``corpus``) ``/{train_split}.tsv``
    with that corpus's alignments and speakers, or ``train_manifest``; the training alignments and
    speakers default to the training corpus's, else to the evaluation ones (one shared file).
    Base voices: ``voices`` (a ``voices.tsv`` or ``corpus.json``), else the metadata found next to each
    manifest (`dinosr.data.corpus.voices.read_base_voices`); none: every speaker is its own voice.
    """
    if corpus is not None:
        ev = SplitFiles(*corpus_files(corpus, split))
    elif manifest is None or alignments is None:
        raise ConfigError("give --corpus DIR, or --manifest and --alignments")
    else:
        ev = SplitFiles(Path(manifest), Path(alignments))
    if manifest is not None:
        ev.manifest = Path(manifest)
    if alignments is not None:
        ev.alignments = Path(alignments)
    if speakers is not None:
        ev.speakers = Path(speakers)

    tr: SplitFiles | None = None
    home = train_corpus if train_corpus is not None else corpus
    if home is not None and train_split and train_manifest is None:
        tr = SplitFiles(*corpus_files(home, train_split))
        if train_corpus is None:  # one corpus: the --alignments / --speakers given apply to both
            tr.alignments, tr.speakers = ev.alignments, ev.speakers
    elif train_manifest is not None:
        tr = SplitFiles(Path(train_manifest), ev.alignments, ev.speakers)
        if train_corpus is not None:
            _, tr.alignments, tr.speakers = corpus_files(train_corpus, train_split or "train")
    if tr is not None:
        if train_alignments is not None:
            tr.alignments = Path(train_alignments)
        if train_speakers is not None:
            tr.speakers = Path(train_speakers)

    found: dict[str, str] = {}
    if voices is not None:
        found = base_voices(voices)
    else:
        for files in (tr, ev):  # evaluation metadata wins for a speaker listed in both
            if files is not None:
                found.update(base_voices(files.manifest))
    return EvalInputs(ev, tr, found)


def load_inputs(
    inputs: EvalInputs,
    settings: EvalSettings,
    *,
    max_seconds: float | None = None,
    skip_bad_files: bool = False,
) -> tuple[EvalCorpus, EvalCorpus | None, dict[str, Any]]:
    """(evaluation set, training set or None, `heldout_split` of all their speakers).

    The training audio is read only when a probe or a k-means fit needs it; its speakers are always
    read (from the whole manifest), so the unseen-voice check does not depend on the audio caps.
    """
    ev, tr = inputs.eval, inputs.train
    corpus = load_eval_corpus(
        ev.manifest,
        ev.alignments,
        ev.speakers,
        max_seconds=max_seconds,
        seed=settings.seed,
        desc="eval audio",
        skip_bad_files=skip_bad_files,
    )
    train = None
    if tr is not None and (settings.probe or settings.baselines or settings.kmeans_layer is not None):
        train = load_eval_corpus(
            tr.manifest,
            tr.alignments,
            tr.speakers,
            max_seconds=settings.train_max_seconds,
            seed=settings.seed,
            desc="train audio",
            skip_bad_files=skip_bad_files,
        )
    train_speakers = manifest_speakers(tr.manifest, tr.speakers) if tr is not None else None
    heldout = heldout_split(manifest_speakers(ev.manifest, ev.speakers), train_speakers, inputs.voices)
    return corpus, train, heldout


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
    heldout: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`evaluate`, then write ``metrics.json``, ``counts.npz`` and the HTML report into ``out_dir``.

    ``heldout`` (`heldout_split`) goes to ``data.heldout`` and into the report's summary.
    Returns the metrics dict (with ``report`` = path of ``report.html``).
    """
    from dinosr.evaluate.report import save_counts, write_report

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics, counts = evaluate(source, corpus, train, settings)
    if heldout is not None:
        metrics["data"]["heldout"] = dict(heldout)
    if extra:
        metrics.update(extra)
    if train_log is not None:
        metrics["train_log"] = str(train_log)
    metrics["title"] = title
    metrics = _json_clean(metrics)
    save_counts(out_dir / "counts.npz", counts)
    report = write_report(out_dir, metrics, counts, train_log=train_log, title=title)
    metrics["report"] = str(report)
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=1, allow_nan=False) + "\n")
    return metrics
