"""The per-layer evaluation: every unit and feature metric of a source, per layer, against baselines.

What is computed (definitions: docs/evaluation.md and ECOSYSTEM.md section b):

* per codebook layer, on the units (``source="codebook"`` by default): phone purity, cluster purity,
  PNMI, active units, unit perplexity, bitrate, and ABX within / across speaker with the 0/1 unit
  distance (`evaluate_units`);
* per transformer layer (0 = transformer input), on continuous features: ABX within / across speaker
  (angular distance) and a linear phone probe (frame accuracy, collapsed PER) trained on training-split
  speakers and tested on the evaluation speakers (`evaluate_features`);
* baselines: MFCC (39-dim) features (ABX, probe), MFCC k-means with as many units as the codebook,
  fit on training-split speech, and optionally k-means on one model layer (`evaluate_kmeans`).

`evaluate` plans one task per block, runs them in order and returns a JSON-ready dict plus the
phone x unit count matrices; `dinosr.evaluate.runner` writes them and the report.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dinosr.evaluate.corpus import (
    FRAME_STEP,
    PHONE_INVENTORY,
    SAMPLE_RATE,
    SILENCE,
    EvalCorpus,
    pick_balanced,
)
from dinosr.evaluate.sources import FeatureDirSource, ModelSource
from dinosr.evaluate.summary import summarize

log = logging.getLogger(__name__)

__all__ = [
    "AbxScorer",
    "EvalSettings",
    "evaluate",
    "evaluate_features",
    "evaluate_kmeans",
    "evaluate_units",
    "probe_metrics",
    "unit_metrics",
]


@dataclass
class EvalSettings:
    """What to compute and how much of it (the demo turns the caps down to fit its time budget)."""

    layers: list[int] | None = None  # continuous-feature layers (None: 0..num_layers)
    unit_layers: list[int] | None = None  # codebook layers for units (None: all)
    feature_kind: str = "hidden"  # "hidden" (residual stream) or "ffn" (the tensor DinoSR clusters)
    unit_source: str = "codebook"  # "codebook" (teacher codeword) or "head" (student prediction)
    abx: bool = True
    abx_max_seconds: float | None = None  # evaluation audio used for ABX (None: all), speaker-balanced
    abx_max_size_group: int = 10
    abx_max_x_across: int = 5
    probe: bool = True
    probe_epochs: int = 10
    train_max_seconds: float | None = 900.0  # training-split audio for the probe and k-means fits
    baselines: bool = True  # MFCC features + MFCC k-means
    baseline_units: int | None = None  # k-means size (None: the model's codebook size, else 256)
    kmeans_layer: int | None = None  # also k-means on this model layer's features
    kmeans_n_init: int = 3  # HuBERT uses 20; fewer restarts are much faster and rarely matter
    kmeans_max_iter: int = 100  # passes over the fit frames (HuBERT: 100)
    batch_seconds: float = 60.0  # padded audio per model forward
    seed: int = 0


@dataclass
class _Timer:
    """Seconds per stage, summed over calls (``metrics.json`` ``timings``)."""

    timings: dict[str, float] = field(default_factory=dict)

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        try:
            return fn()
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t, 2)


# ------------------------------------------------------------------------------------------- blocks
class AbxScorer:
    """ABX within / across speaker on a speaker-balanced subset of one evaluation set.

    The items and the subset are built once and shared by every system scored, so all systems see the
    same triphones. The one expected failure, no ABX cells in a mode (e.g. a single evaluation speaker
    has no across-speaker cells), is a property of the data, not of the system: it becomes null
    (NaN here) with one warning per mode, and ``null_reasons`` records why for metrics.json. Any other
    error from `dinosr.evaluate.abx.abx` (bad feature shapes, missing files) propagates.
    """

    def __init__(self, corpus: EvalCorpus, settings: EvalSettings, timer: _Timer) -> None:
        from dinosr.evaluate.abx import items_from_alignments

        self.settings = settings
        self.timer = timer
        idx = pick_balanced(
            corpus.names,
            [len(w) / SAMPLE_RATE for w in corpus.wavs],
            corpus.speakers,
            settings.abx_max_seconds,
            settings.seed,
        )
        self._index = idx
        self._names = [corpus.names[i] for i in idx]
        chosen = set(self._names)
        self.items = items_from_alignments(
            {n: corpus.segments[n] for n in corpus.names if n in chosen}, corpus.speakers
        )
        self.null_reasons: dict[str, str] = {}

    @property
    def num_utterances(self) -> int:
        return len(self._names)

    def __call__(self, seqs: Sequence[np.ndarray], distance: str) -> dict[str, float]:
        """{"abx_within", "abx_across"} in percent for per-utterance features or units."""
        from dinosr.evaluate.abx import NoABXCellsError, abx

        s = self.settings
        feats = {name: seqs[i] for name, i in zip(self._names, self._index)}
        out = {}
        for mode in ("within", "across"):
            try:
                res = self.timer(
                    "abx",
                    functools.partial(
                        abx,
                        feats,
                        self.items,
                        mode=mode,
                        distance=distance,
                        frame_step=FRAME_STEP,
                        max_size_group=s.abx_max_size_group,
                        max_x_across=s.abx_max_x_across,
                        seed=s.seed,
                    ),
                )
                out[f"abx_{mode}"] = 100.0 * res.error
            except NoABXCellsError as err:
                if mode not in self.null_reasons:
                    self.null_reasons[mode] = str(err)
                    log.warning("ABX %s is null for every system of this evaluation set: %s", mode, err)
                out[f"abx_{mode}"] = float("nan")
        return out


def trim_labels(seqs: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Labels cut or padded (with silence) to each sequence's frame count (alignments may end early)."""
    sil = PHONE_INVENTORY.index(SILENCE)
    out = []
    for s, y in zip(seqs, labels):
        n = len(s)
        out.append(y[:n] if len(y) >= n else np.concatenate([y, np.full(n - len(y), sil, dtype=y.dtype)]))
    return out


def unit_metrics(
    units: Sequence[np.ndarray], labels: Sequence[np.ndarray], num_units: int
) -> tuple[dict[str, Any], np.ndarray]:
    """Purity, PNMI, usage and bitrate of units against frame labels, and the (40, K) count matrix."""
    from dinosr.evaluate.metrics import unit_quality

    q = unit_quality(
        units,
        trim_labels(units, labels),
        num_units=num_units,
        num_phones=len(PHONE_INVENTORY),
        unit_step=FRAME_STEP,
        label_step=FRAME_STEP,
    )
    counts = q.pop("counts")
    return q, counts


def probe_metrics(
    train_feats: Sequence[np.ndarray],
    train: EvalCorpus,
    test_feats: Sequence[np.ndarray],
    test: EvalCorpus,
    settings: EvalSettings,
) -> dict[str, float]:
    """Linear phone probe fit on ``train``'s frames, scored on ``test``'s (percent)."""
    from dinosr.evaluate.probe import linear_probe

    res = linear_probe(
        train_feats,
        trim_labels(train_feats, train.labels),
        test_feats,
        trim_labels(test_feats, test.labels),
        num_classes=len(PHONE_INVENTORY),
        epochs=settings.probe_epochs,
        ignore=[PHONE_INVENTORY.index(SILENCE)],
        seed=settings.seed,
    )
    return {"probe_accuracy": 100.0 * res.accuracy, "probe_per": 100.0 * res.per}


def evaluate_units(
    units: Sequence[np.ndarray], corpus: EvalCorpus, num_units: int, abx: AbxScorer | None
) -> tuple[dict[str, Any], np.ndarray]:
    """One unit system: `unit_metrics` plus ABX with the 0/1 unit distance."""
    q, counts = unit_metrics(units, corpus.labels, num_units)
    if abx is not None:
        q.update(abx(units, "unit"))
    return q, counts


def evaluate_features(
    feats: Sequence[np.ndarray],
    corpus: EvalCorpus,
    *,
    abx: AbxScorer | None,
    train_feats: Sequence[np.ndarray] | None,
    train: EvalCorpus | None,
    settings: EvalSettings,
    timer: _Timer,
) -> dict[str, float]:
    """One feature system: ABX with the angular distance, and the probe when training features exist."""
    r: dict[str, float] = {}
    if abx is not None:
        r.update(abx(feats, "angular"))
    if settings.probe and train_feats is not None and train is not None:
        r.update(timer("probe", lambda: probe_metrics(train_feats, train, feats, corpus, settings)))
    return r


def evaluate_kmeans(
    train_feats: Sequence[np.ndarray],
    eval_feats: Sequence[np.ndarray],
    corpus: EvalCorpus,
    k: int,
    *,
    abx: AbxScorer | None,
    settings: EvalSettings,
    timer: _Timer,
    standardize: bool,
) -> tuple[dict[str, Any], np.ndarray]:
    """Fit k-means on training frames, quantise the evaluation set, score the units like codebook units."""
    from dinosr.evaluate.baselines import KMeansQuantizer

    s = settings
    x = np.concatenate(train_feats)
    mean, std = (x.mean(0), x.std(0) + 1e-5) if standardize else (0.0, 1.0)
    km = timer(
        "kmeans",
        lambda: KMeansQuantizer(k, seed=s.seed, n_init=s.kmeans_n_init, max_iter=s.kmeans_max_iter).fit(
            (x - mean) / std
        ),
    )
    units = [km.predict((f - mean) / std).astype(np.int64) for f in eval_feats]
    return evaluate_units(units, corpus, k, abx)


# -------------------------------------------------------------------------------------------- plan
@dataclass
class _Task:
    """One block of results: ``run()`` -> metrics dict, or (metrics, counts) when ``count_key`` is set."""

    label: str  # progress-bar text
    section: str  # "units", "layers" or "baselines"
    key: str
    run: Callable[[], Any]
    count_key: str | None = None


def evaluate(
    source: ModelSource | FeatureDirSource,
    corpus: EvalCorpus,
    train: EvalCorpus | None = None,
    settings: EvalSettings | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Compute all metrics.

    Args:
        source: where features and units come from.
        corpus: evaluation utterances (held-out speakers).
        train: training-split utterances for the probe and the k-means fits (None: no probe, no
            baselines that need fitting).
        settings: what to compute.

    Returns:
        (metrics, counts): ``metrics`` is JSON-ready (see docs/evaluation.md for the keys);
        ``counts`` maps ``units/L``, ``mfcc_kmeans``, ``kmeans/L`` to (40, K) phone x unit counts.
    """
    from tqdm.auto import tqdm

    s = settings or EvalSettings()
    if abs(source.frame_step - FRAME_STEP) > 1e-9:
        # Labels, ABX frame centres and the MFCC baseline are all on the 20 ms grid.
        raise ValueError(
            f"the source has {source.frame_step * 1000:g} ms frames; dinosr evaluate needs "
            f"{FRAME_STEP * 1000:g} ms frames (model hop_length 320 at 16 kHz)"
        )
    timer = _Timer()
    is_model = isinstance(source, ModelSource)
    feat_layers = list(s.layers if s.layers is not None else source.feature_layers)
    unit_layers = list(s.unit_layers if s.unit_layers is not None else source.codebook_layers)
    bad = [x for x in unit_layers if x not in source.codebook_layers]
    if bad:
        raise ValueError(f"layers {bad} have no codebook units; available: {source.codebook_layers}")
    num_units = source.codebook_size or 256
    k_base = s.baseline_units or num_units

    def inputs(c: EvalCorpus):
        return c.wavs if is_model else c.names

    # --- representations of the evaluation set (and of the training set for the fits)
    ev_feats = timer("features", lambda: source.features(inputs(corpus), feat_layers, "eval features"))
    ev_units = timer("units", lambda: source.units(inputs(corpus), unit_layers, "eval units"))
    use_train = train is not None and (is_model or source.has(train.names))
    if train is not None and not use_train:
        log.warning("no features for the training split in %s: probe and layer k-means skipped", source.root)
    tr_layers = sorted(
        set(feat_layers if s.probe else []) | ({s.kmeans_layer} if s.kmeans_layer is not None else set())
    )
    tr_feats = (
        timer("features", lambda: source.features(inputs(train), tr_layers, "train features"))
        if use_train and tr_layers
        else {}
    )
    if s.baselines:
        from dinosr.evaluate.baselines import mfcc_features

        ev_mfcc = timer("mfcc", lambda: [mfcc_features(w) for w in corpus.wavs])
        tr_mfcc = timer("mfcc", lambda: [mfcc_features(w) for w in train.wavs]) if train is not None else None
    abx = AbxScorer(corpus, s, timer) if s.abx else None
    fit = {"settings": s, "timer": timer}

    # --- the plan: one task per result block, in report order
    tasks: list[_Task] = []
    for layer in unit_layers:
        run = functools.partial(evaluate_units, ev_units[layer], corpus, num_units, abx)
        tasks.append(_Task(f"units L{layer}", "units", str(layer), run, f"units/{layer}"))
    for layer in feat_layers:
        run = functools.partial(
            evaluate_features,
            ev_feats[layer],
            corpus,
            abx=abx,
            train_feats=tr_feats.get(layer) if use_train else None,
            train=train,
            **fit,
        )
        tasks.append(_Task(f"features L{layer}", "layers", str(layer), run))
    if s.baselines:
        run = functools.partial(
            _mfcc_features_block, ev_mfcc, corpus, abx=abx, train_feats=tr_mfcc, train=train, **fit
        )
        tasks.append(_Task("MFCC", "baselines", "mfcc", run))
        if train is not None:
            run = functools.partial(
                evaluate_kmeans, tr_mfcc, ev_mfcc, corpus, k_base, abx=abx, standardize=True, **fit
            )
            tasks.append(_Task(f"MFCC k-means K={k_base}", "baselines", "mfcc_kmeans", run, "mfcc_kmeans"))
    if s.kmeans_layer is not None and use_train:
        layer = s.kmeans_layer
        ev_l = ev_feats.get(layer)
        if ev_l is None:
            ev_l = source.features(inputs(corpus), [layer], "eval features")[layer]
        run = functools.partial(
            _layer_kmeans_block, layer, tr_feats[layer], ev_l, corpus, k_base, abx=abx, **fit
        )
        tasks.append(
            _Task(f"k-means on layer {layer}", "baselines", f"kmeans_layer{layer}", run, f"kmeans/{layer}")
        )

    results: dict[str, Any] = {"layers": {}, "units": {}, "baselines": {}}
    counts: dict[str, np.ndarray] = {}
    with tqdm(tasks, desc="evaluate", unit="task", leave=False) as bar:
        for task in bar:
            bar.set_postfix_str(task.label)
            out = task.run()
            if task.count_key is not None:
                out, counts[task.count_key] = out
            results[task.section][task.key] = out

    results["data"] = {
        "num_utterances": len(corpus.names),
        "seconds": round(corpus.seconds, 2),
        "speakers": sorted(set(corpus.speakers.values())),
        "num_frames": int(sum(len(y) for y in corpus.labels)),
        "abx_utterances": abx.num_utterances if abx is not None else len(corpus.names),
        "abx_items": len(abx.items) if abx is not None else 0,
        "train_utterances": len(train.names) if train is not None else 0,
        "train_seconds": round(train.seconds, 2) if train is not None else 0.0,
        "train_speakers": sorted(set(train.speakers.values())) if train is not None else [],
        "phones": PHONE_INVENTORY,
    }
    if abx is not None and abx.null_reasons:
        results["data"]["abx_null"] = dict(abx.null_reasons)
    skipped = {"eval": corpus.skipped, "train": train.skipped if train is not None else []}
    if any(skipped.values()):
        results["data"]["skipped_files"] = skipped
    results["source"] = source.describe()
    results["settings"] = asdict(s)
    results["timings"] = timer.timings
    results["summary"] = summarize(results)
    return results, counts


def _mfcc_features_block(ev_mfcc, corpus, **kwargs) -> dict[str, Any]:
    """`evaluate_features` on MFCC, with the feature dimension recorded."""
    return {
        "dim": int(ev_mfcc[0].shape[1]) if ev_mfcc else 39,
        **evaluate_features(ev_mfcc, corpus, **kwargs),
    }


def _layer_kmeans_block(layer: int, *args, **kwargs) -> tuple[dict[str, Any], np.ndarray]:
    """`evaluate_kmeans` on a model layer (not standardised), with the layer recorded."""
    q, counts = evaluate_kmeans(*args, standardize=False, **kwargs)
    q["layer"] = layer
    return q, counts
