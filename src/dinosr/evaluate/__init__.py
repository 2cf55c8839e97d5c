"""Evaluation: unit quality (purity, PNMI, ...), ABX, linear phone probe, MFCC / k-means baselines.

Modules, bottom up: ``metrics``, ``abx``, ``probe``, ``baselines`` (the measures); ``corpus`` (the
evaluation data), ``sources`` (model or ``dinosr extract`` features), ``evaluate`` (the per-layer
evaluation), ``summary`` (the summary table), ``figures`` + ``report`` (the HTML report), ``runner``
(files in, files out) and ``cli`` (``dinosr evaluate``).

Names are imported lazily so ``import dinosr.evaluate`` stays cheap and never pulls the optional
``dinosr[eval]`` packages (scikit-learn, librosa, editdistance) before they are used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # metrics
    "joint_counts": "metrics",
    "labels_to_ids": "metrics",
    "match_frame_rates": "metrics",
    "quality_from_counts": "metrics",
    "unit_quality": "metrics",
    "bitrate": "metrics",
    # abx
    "ABXResult": "abx",
    "Item": "abx",
    "ItemFile": "abx",
    "abx": "abx",
    "abx_error": "abx",
    "abx_bruteforce": "abx",
    "items_from_alignments": "abx",
    # probe
    "ProbeResult": "probe",
    "linear_probe": "probe",
    "edit_distance": "probe",
    "collapse": "probe",
    # baselines
    "KMeansQuantizer": "baselines",
    "mfcc_features": "baselines",
    # `dinosr evaluate`: data, sources, the per-layer evaluation, the summary table, files, report
    "EvalCorpus": "corpus",
    "load_eval_corpus": "corpus",
    "ModelSource": "sources",
    "FeatureDirSource": "sources",
    "EvalSettings": "evaluate",
    "evaluate": "evaluate",
    "format_summary": "summary",
    "run_evaluation": "runner",
    "write_report": "report",
    "rebuild_report": "report",
}

__all__ = list(_EXPORTS)  # resolved lazily by __getattr__


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dinosr.evaluate' has no attribute {name!r}")
    return getattr(importlib.import_module(f"dinosr.evaluate.{module}"), name)
