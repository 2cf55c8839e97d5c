"""`dinosr evaluate`: every unit and feature metric of a model, per layer, against baselines.

Inputs: a model (anything `dinosr.interop.load_model` reads, or a training run directory: its newest
checkpoint and its ``metrics.jsonl``) or a directory written by ``dinosr extract`` (``layer{N}/<utt>.npy``,
``units/<utt>.npy``), and a corpus with phone alignments (a corpus directory in the layout of
docs/DESIGN.md, or explicit manifest / alignment / speaker files).

What is computed (definitions: docs/evaluation.md and ECOSYSTEM.md section b):

* per codebook layer, on the units (``source="codebook"`` by default): phone purity, cluster purity,
  PNMI, active units, unit perplexity, bitrate, and ABX within / across speaker with the 0/1 unit
  distance;
* per transformer layer (0 = transformer input), on continuous features: ABX within / across speaker
  (angular distance) and a linear phone probe (frame accuracy, collapsed PER) trained on training-split
  speakers and tested on the evaluation speakers;
* baselines: MFCC (39-dim) features (ABX, probe), MFCC k-means with as many units as the codebook,
  fit on training-split speech, and optionally k-means on one model layer.

`evaluate` returns a JSON-ready dict (written as ``metrics.json``) and the phone x unit count
matrices (written as ``counts.npz``), from which `dinosr.evaluate.report` draws the HTML report.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "PHONE_INVENTORY",
    "EvalCorpus",
    "EvalSettings",
    "FeatureDirSource",
    "ModelSource",
    "evaluate",
    "load_eval_corpus",
    "resolve_model_path",
    "run_evaluation",
    "summary_rows",
]

SAMPLE_RATE = 16000
FRAME_STEP = 0.02
SILENCE = "sil"


def _phone_inventory() -> list[str]:
    from dinosr.data.alignments import PHONES_39

    return [*sorted(PHONES_39), SILENCE]


PHONE_INVENTORY: list[str] = _phone_inventory()  # 39 ARPAbet phones + sil: the rows of every count matrix


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


# ------------------------------------------------------------------------------------------------ data
@dataclass
class EvalCorpus:
    """Utterances with audio, phone segments, 20 ms frame labels (phone ids) and speakers."""

    names: list[str]
    wavs: list[np.ndarray]
    segments: dict[str, list[tuple[float, float, str]]]
    labels: list[np.ndarray]  # per utterance, (T,) ids into PHONE_INVENTORY at 20 ms
    speakers: dict[str, str]

    @property
    def seconds(self) -> float:
        return sum(len(w) for w in self.wavs) / SAMPLE_RATE


def corpus_files(root: str | Path, split: str) -> tuple[Path, Path, Path | None]:
    """(manifest, alignments, speakers) of a corpus directory in the DESIGN.md layout."""
    root = Path(root)
    manifest = root / f"{split}.tsv"
    alignments = root / "alignments.tsv"
    speakers = root / "speakers.tsv"
    for p in (manifest, alignments):
        if not p.exists():
            raise FileNotFoundError(f"{p} not found: is {root} a corpus directory (dinosr corpus synth)?")
    return manifest, alignments, speakers if speakers.exists() else None


def _read_speakers(path: str | Path | None) -> dict[str, str]:
    if path is None:
        return {}
    out = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0] not in ("utt", "#utt"):
            out[parts[0]] = parts[1]
    return out


def _pick_balanced(
    names: Sequence[str],
    seconds: Sequence[float],
    speakers: Mapping[str, str],
    budget: float | None,
    seed: int,
) -> list[int]:
    """Indices of a seeded, speaker-balanced subset of utterances totalling at most ``budget`` seconds.

    Speakers take turns (round robin over shuffled per-speaker queues), so a cap never drops a whole
    speaker, which ABX across speakers and a speaker-disjoint probe need.
    """
    if budget is None or sum(seconds) <= budget:
        return list(range(len(names)))
    rng = random.Random(seed)
    queues: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        queues.setdefault(speakers.get(n, n.split("-")[0]), []).append(i)
    for q in queues.values():
        rng.shuffle(q)
    order = sorted(queues)
    picked, total = [], 0.0
    while any(queues.values()):
        for spk in order:
            if queues[spk]:
                i = queues[spk].pop()
                if total + seconds[i] > budget and picked:
                    return sorted(picked)
                picked.append(i)
                total += seconds[i]
    return sorted(picked)


def load_eval_corpus(
    manifest: str | Path,
    alignments: str | Path,
    speakers: str | Path | None = None,
    *,
    max_seconds: float | None = None,
    seed: int = 0,
    desc: str = "audio",
) -> EvalCorpus:
    """Read a manifest's audio and its alignments (utterances without an alignment are skipped).

    Args:
        manifest: fairseq TSV / CSV / JSONL manifest.
        alignments: any format `dinosr.data.alignments.read_alignments` reads (segment TSV,
            TextGrid directory, ...); frame-level formats are read at 20 ms.
        speakers: ``utt<TAB>speaker`` TSV; None: the utterance id up to its first ``-``.
        max_seconds: keep a speaker-balanced random subset of at most this much audio.
    """
    from tqdm.auto import tqdm

    from dinosr.data.alignments import frames_from_segments, normalize_phone, read_alignments
    from dinosr.data.audio import load_audio
    from dinosr.data.manifest import read_manifest

    entries = read_manifest(manifest)
    aligned = read_alignments(alignments, frame_step=FRAME_STEP)
    spk = _read_speakers(speakers)
    missing = [e.name for e in entries if e.name not in aligned]
    if missing:
        log.warning(
            "%d utterances of %s have no alignment and are skipped (e.g. %s)",
            len(missing),
            manifest,
            missing[0],
        )
    entries = [e for e in entries if e.name in aligned]
    if not entries:
        raise ValueError(f"no utterance of {manifest} has an alignment in {alignments}")
    rate = {e.name: (e.sample_rate or SAMPLE_RATE) for e in entries}
    keep = _pick_balanced(
        [e.name for e in entries], [e.num_samples / rate[e.name] for e in entries], spk, max_seconds, seed
    )
    entries = [entries[i] for i in keep]
    index = {p: i for i, p in enumerate(PHONE_INVENTORY)}
    names, wavs, labels, segments, speakers_out = [], [], [], {}, {}
    for e in tqdm(entries, desc=desc, unit="utt", leave=False):
        wav = load_audio(e.path)
        segs = [(s.start, s.end, normalize_phone(s.phone)) for s in aligned[e.name]]
        frames = frames_from_segments([_seg(s) for s in segs], frame_step=FRAME_STEP)
        names.append(e.name)
        wavs.append(wav)
        labels.append(np.array([index[p] for p in frames], dtype=np.int64))
        segments[e.name] = segs
        speakers_out[e.name] = spk.get(e.name, e.name.split("-")[0])
    return EvalCorpus(names, wavs, segments, labels, speakers_out)


def _seg(s: tuple[float, float, str]):
    from dinosr.data.alignments import Segment

    return Segment(*s)


# --------------------------------------------------------------------------------------------- sources
class ModelSource:
    """Features and units computed by a DinoSR model (eval mode, no grad, batched by length)."""

    def __init__(
        self,
        model,
        *,
        feature_kind: str = "hidden",
        unit_source: str = "codebook",
        batch_seconds: float = 60.0,
    ) -> None:
        self.model = model
        self.feature_kind = feature_kind
        self.unit_source = unit_source
        self.batch_seconds = batch_seconds
        cfg = model.cfg
        self.num_layers = cfg.num_layers
        self.codebook_layers = list(cfg.codebook_layers)
        self.codebook_size = cfg.codebook_size
        first = 1 if feature_kind == "ffn" else 0
        self.feature_layers = list(range(first, cfg.num_layers + 1))

    def describe(self) -> dict[str, Any]:
        cfg = self.model.cfg
        return {
            "kind": "model",
            "num_layers": cfg.num_layers,
            "embed_dim": cfg.embed_dim,
            "codebook_layers": self.codebook_layers,
            "codebook_size": self.codebook_size,
            "feature_kind": self.feature_kind,
            "unit_source": self.unit_source,
        }

    def _batches(self, wavs: Sequence[np.ndarray]) -> list[list[int]]:
        order = sorted(range(len(wavs)), key=lambda i: len(wavs[i]))
        batches, cur = [], []
        budget = self.batch_seconds * SAMPLE_RATE
        for i in order:
            # Padded cost of the batch if i joins: every row as long as the longest (i, sorted order).
            if cur and (len(cur) + 1) * len(wavs[i]) > budget:
                batches.append(cur)
                cur = []
            cur.append(i)
        if cur:
            batches.append(cur)
        return batches

    def features(self, wavs: Sequence[np.ndarray], layers: Sequence[int], desc: str = "features"):
        """{layer: [(T_i, D) float32 per utterance]}."""
        import torch
        from tqdm.auto import tqdm

        out: dict[int, list[np.ndarray | None]] = {layer: [None] * len(wavs) for layer in layers}
        for batch in tqdm(self._batches(wavs), desc=desc, unit="batch", leave=False):
            res = self.model.extract_features(
                [torch.from_numpy(np.asarray(wavs[i], dtype=np.float32)) for i in batch],
                layers=list(layers),
                kind=self.feature_kind,
            )
            for layer in layers:
                feats = res.features[layer]
                for row, i in enumerate(batch):
                    out[layer][i] = feats[row, : int(res.lengths[row])].numpy().astype(np.float32)
        return out

    def units(self, wavs: Sequence[np.ndarray], layers: Sequence[int], desc: str = "units"):
        """{codebook layer: [(T_i,) int64 per utterance]}."""
        import torch
        from tqdm.auto import tqdm

        out: dict[int, list[np.ndarray | None]] = {layer: [None] * len(wavs) for layer in layers}
        if not layers:
            return out
        batches = self._batches(wavs)
        for batch in tqdm(batches, desc=desc, unit="batch", leave=False):
            x = [torch.from_numpy(np.asarray(wavs[i], dtype=np.float32)) for i in batch]
            if self.unit_source == "codebook":
                per_layer = self._codebook_units(x, layers)
            else:
                per_layer = {
                    layer: self.model.units(x, layer=layer, source=self.unit_source).units for layer in layers
                }
            for layer in layers:
                for row, i in enumerate(batch):
                    out[layer][i] = per_layer[layer][row].numpy().astype(np.int64)
        return out

    def _codebook_units(self, x, layers: Sequence[int]):
        """Codebook units of several layers from one teacher pass.

        Same computation as ``model.units(source="codebook")`` (teacher FFN output, instance norm over the
        utterance's valid frames, nearest codeword), which encodes the batch once per layer; a test
        checks the two agree.
        """
        import torch

        from dinosr.model.dinosr import instance_norm_frames

        res = self.model.extract_features(x, layers=list(layers), kind="ffn", teacher=True)
        lengths = res.lengths
        centroids = self.model.codebooks.centroids()
        out = {}
        for layer in layers:
            feats = res.features[layer]
            pad = torch.arange(feats.shape[1])[None, :] >= lengths[:, None]
            z = instance_norm_frames(feats, pad)
            e = centroids[self.codebook_layers.index(layer)].float()
            scores = (e * e).sum(-1) - 2.0 * z @ e.t()  # ||z||^2 does not change the argmin
            codes = scores.argmin(-1)
            out[layer] = [codes[row, : int(n)] for row, n in enumerate(lengths.tolist())]
        return out


class FeatureDirSource:
    """Features and units read from a ``dinosr extract`` output directory.

    ``layer{N}/<utt>.npy`` hold (T, D) features, ``units/<utt>.npy`` (T,) units of the layer recorded in
    ``extract.json`` (``units_layer``); ``codebook_size`` is needed for bitrate and the count matrix.
    """

    def __init__(self, root: str | Path, *, codebook_size: int | None = None) -> None:
        self.root = Path(root)
        meta_path = self.root / "extract.json"
        self.meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        settings = self.meta.get("settings", self.meta)
        self.feature_layers = sorted(
            int(p.name[5:]) for p in self.root.glob("layer*") if p.is_dir() and p.name[5:].isdigit()
        )
        units_layer = settings.get("units_layer")
        has_units = (self.root / "units").is_dir()
        self.codebook_layers = [int(units_layer) if units_layer is not None else 0] if has_units else []
        self.feature_kind = settings.get("kind", "hidden")
        self.unit_source = settings.get("source", "codebook")
        self.num_layers = max(self.feature_layers, default=0)
        self.codebook_size = codebook_size
        if self.codebook_layers and codebook_size is None:
            self.codebook_size = self._max_unit() + 1
            log.warning(
                "codebook size not given: using max unit + 1 = %d (pass --codebook-size)", self.codebook_size
            )

    def _max_unit(self) -> int:
        return max(int(np.load(p).max(initial=0)) for p in (self.root / "units").glob("*.npy"))

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "features",
            "path": str(self.root),
            "feature_layers": self.feature_layers,
            "codebook_layers": self.codebook_layers,
            "codebook_size": self.codebook_size,
            "feature_kind": self.feature_kind,
            "unit_source": self.unit_source,
        }

    def has(self, names: Sequence[str]) -> bool:
        """Whether features of every utterance in ``names`` exist."""
        if not self.feature_layers:
            return False
        d = self.root / f"layer{self.feature_layers[0]}"
        return all((d / f"{n}.npy").exists() for n in names)

    def _read(self, sub: str, names: Sequence[str]) -> list[np.ndarray]:
        missing = [n for n in names if not (self.root / sub / f"{n}.npy").exists()]
        if missing:
            raise FileNotFoundError(
                f"{self.root / sub}: no features for {len(missing)} utterances (e.g. {missing[0]}); "
                "run dinosr extract on this manifest"
            )
        return [np.load(self.root / sub / f"{n}.npy") for n in names]

    def features(self, names: Sequence[str], layers: Sequence[int], desc: str = "features"):
        return {layer: [a.astype(np.float32) for a in self._read(f"layer{layer}", names)] for layer in layers}

    def units(self, names: Sequence[str], layers: Sequence[int], desc: str = "units"):
        return {
            layer: [a.astype(np.int64).reshape(-1) for a in self._read("units", names)] for layer in layers
        }


# ------------------------------------------------------------------------------------------ evaluation
def _abx_items(corpus: EvalCorpus, names: set[str]):
    from dinosr.evaluate.abx import items_from_alignments

    segs = {n: corpus.segments[n] for n in corpus.names if n in names}
    return items_from_alignments(segs, corpus.speakers)


def _abx_pair(
    feats: Mapping[str, np.ndarray], items, settings: EvalSettings, distance: str, warned: set[str]
) -> dict[str, float]:
    """ABX error (percent) within and across speakers; NaN where the data has no cells.

    ``warned`` collects the messages already logged, so a data problem is reported once, not per layer.
    """
    from dinosr.evaluate.abx import abx

    # abx logs the items it drops on every call: once per run is enough (see data.abx_items).
    logging.getLogger("dinosr.evaluate.abx").setLevel(logging.WARNING)
    out = {}
    for mode in ("within", "across"):
        try:
            res = abx(
                feats,
                items,
                mode=mode,
                distance=distance,
                frame_step=FRAME_STEP,
                max_size_group=settings.abx_max_size_group,
                max_x_across=settings.abx_max_x_across,
                seed=settings.seed,
            )
            out[f"abx_{mode}"] = 100.0 * res.error
        except ValueError as err:  # e.g. a single speaker: no across-speaker cells
            if str(err) not in warned:
                warned.add(str(err))
                log.warning("ABX %s skipped (reported as null): %s", mode, err)
            out[f"abx_{mode}"] = float("nan")
    return out


def _unit_block(units: list[np.ndarray], labels: list[np.ndarray], num_units: int) -> tuple[dict, np.ndarray]:
    from dinosr.evaluate.metrics import unit_quality

    q = unit_quality(
        units,
        labels,
        num_units=num_units,
        num_phones=len(PHONE_INVENTORY),
        unit_step=FRAME_STEP,
        label_step=FRAME_STEP,
    )
    counts = q.pop("counts")
    return q, counts


def _probe(train_feats, train_labels, test_feats, test_labels, settings: EvalSettings) -> dict[str, float]:
    from dinosr.evaluate.probe import linear_probe

    res = linear_probe(
        train_feats,
        train_labels,
        test_feats,
        test_labels,
        num_classes=len(PHONE_INVENTORY),
        epochs=settings.probe_epochs,
        ignore=[PHONE_INVENTORY.index(SILENCE)],
        seed=settings.seed,
    )
    return {"probe_accuracy": 100.0 * res.accuracy, "probe_per": 100.0 * res.per}


def _trim_pairs(seqs: list[np.ndarray], labels: list[np.ndarray]) -> list[np.ndarray]:
    """Labels cut or padded (with silence) to each sequence's frame count (alignments may end early)."""
    sil = PHONE_INVENTORY.index(SILENCE)
    out = []
    for s, y in zip(seqs, labels):
        n = len(s)
        out.append(y[:n] if len(y) >= n else np.concatenate([y, np.full(n - len(y), sil, dtype=y.dtype)]))
    return out


@dataclass
class _Timer:
    timings: dict[str, float] = field(default_factory=dict)

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        try:
            return fn()
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t, 2)


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
    timer = _Timer()
    is_model = isinstance(source, ModelSource)
    feat_layers = [x for x in (s.layers if s.layers is not None else source.feature_layers)]
    unit_layers = [x for x in (s.unit_layers if s.unit_layers is not None else source.codebook_layers)]
    bad = [x for x in unit_layers if x not in source.codebook_layers]
    if bad:
        raise ValueError(f"layers {bad} have no codebook units; available: {source.codebook_layers}")
    num_units = source.codebook_size or 256
    k_base = s.baseline_units or num_units

    def inputs(c: EvalCorpus):
        return c.wavs if is_model else c.names

    # --- representations of the evaluation set
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
    need_mfcc = s.baselines
    if need_mfcc:
        from dinosr.evaluate.baselines import mfcc_features

        ev_mfcc = timer("mfcc", lambda: [mfcc_features(w) for w in corpus.wavs])
        tr_mfcc = timer("mfcc", lambda: [mfcc_features(w) for w in train.wavs]) if train is not None else None

    # ABX uses a speaker-balanced subset of the evaluation audio.
    abx_idx = _pick_balanced(
        corpus.names, [len(w) / SAMPLE_RATE for w in corpus.wavs], corpus.speakers, s.abx_max_seconds, s.seed
    )
    abx_names = [corpus.names[i] for i in abx_idx]
    items = _abx_items(corpus, set(abx_names)) if s.abx else None

    warned: set[str] = set()

    def abx_of(seqs: list[np.ndarray], distance: str) -> dict[str, float]:
        feats = {corpus.names[i]: seqs[i] for i in abx_idx}
        return timer("abx", lambda: _abx_pair(feats, items, s, distance, warned))

    results: dict[str, Any] = {"layers": {}, "units": {}, "baselines": {}}
    counts: dict[str, np.ndarray] = {}
    tasks: list[tuple[str, Callable[[], None]]] = []

    # --- discrete units per codebook layer
    for layer in unit_layers:

        def unit_task(layer=layer):
            u = ev_units[layer]
            q, c = _unit_block(u, _trim_pairs(u, corpus.labels), num_units)
            if s.abx:
                q.update(abx_of(u, "unit"))
            results["units"][str(layer)] = q
            counts[f"units/{layer}"] = c

        tasks.append((f"units L{layer}", unit_task))

    # --- continuous features per layer
    for layer in feat_layers:

        def feat_task(layer=layer):
            f = ev_feats[layer]
            r: dict[str, float] = {}
            if s.abx:
                r.update(abx_of(f, "angular"))
            if s.probe and use_train:
                r.update(
                    timer(
                        "probe",
                        lambda: _probe(
                            tr_feats[layer],
                            _trim_pairs(tr_feats[layer], train.labels),
                            f,
                            _trim_pairs(f, corpus.labels),
                            s,
                        ),
                    )
                )
            results["layers"][str(layer)] = r

        tasks.append((f"features L{layer}", feat_task))

    # --- baselines
    if need_mfcc:

        def mfcc_task():
            r: dict[str, Any] = {"dim": int(ev_mfcc[0].shape[1]) if ev_mfcc else 39}
            if s.abx:
                r.update(abx_of(ev_mfcc, "angular"))
            if s.probe and train is not None:
                r.update(
                    timer(
                        "probe",
                        lambda: _probe(
                            tr_mfcc,
                            _trim_pairs(tr_mfcc, train.labels),
                            ev_mfcc,
                            _trim_pairs(ev_mfcc, corpus.labels),
                            s,
                        ),
                    )
                )
            results["baselines"]["mfcc"] = r

        tasks.append(("MFCC", mfcc_task))
        if train is not None:

            def mfcc_km_task():
                q, c = _kmeans_block(tr_mfcc, ev_mfcc, corpus, k_base, s, timer, standardize=True)
                if s.abx:
                    q.update(abx_of(q.pop("_units"), "unit"))
                else:
                    q.pop("_units")
                results["baselines"]["mfcc_kmeans"] = q
                counts["mfcc_kmeans"] = c

            tasks.append((f"MFCC k-means K={k_base}", mfcc_km_task))
    if s.kmeans_layer is not None and use_train:
        layer = s.kmeans_layer
        ev_l = ev_feats.get(layer)
        if ev_l is None:
            ev_l = source.features(inputs(corpus), [layer], "eval features")[layer]

        def layer_km_task(layer=layer, ev_l=ev_l):
            q, c = _kmeans_block(tr_feats[layer], ev_l, corpus, k_base, s, timer, standardize=False)
            if s.abx:
                q.update(abx_of(q.pop("_units"), "unit"))
            else:
                q.pop("_units")
            q["layer"] = layer
            results["baselines"][f"kmeans_layer{layer}"] = q
            counts[f"kmeans/{layer}"] = c

        tasks.append((f"k-means on layer {layer}", layer_km_task))

    with tqdm(tasks, desc="evaluate", unit="task", leave=False) as bar:
        for name, task in bar:
            bar.set_postfix_str(name)
            task()

    results["data"] = {
        "num_utterances": len(corpus.names),
        "seconds": round(corpus.seconds, 2),
        "speakers": sorted(set(corpus.speakers.values())),
        "num_frames": int(sum(len(y) for y in corpus.labels)),
        "abx_utterances": len(abx_names),
        "abx_items": len(items) if items is not None else 0,
        "train_utterances": len(train.names) if train is not None else 0,
        "train_seconds": round(train.seconds, 2) if train is not None else 0.0,
        "train_speakers": sorted(set(train.speakers.values())) if train is not None else [],
        "phones": PHONE_INVENTORY,
    }
    results["source"] = source.describe()
    results["settings"] = asdict(s)
    results["timings"] = timer.timings
    results["summary"] = summarize(results)
    return results, counts


def _kmeans_block(
    train_feats, eval_feats, corpus: EvalCorpus, k: int, s: EvalSettings, timer: _Timer, *, standardize: bool
) -> tuple[dict, np.ndarray]:
    """Fit k-means on training frames, quantise the evaluation set, score the units."""
    from dinosr.evaluate.baselines import KMeansQuantizer

    x = np.concatenate(train_feats)
    mean, std = (x.mean(0), x.std(0) + 1e-5) if standardize else (0.0, 1.0)
    km = timer(
        "kmeans",
        lambda: KMeansQuantizer(k, seed=s.seed, n_init=s.kmeans_n_init, max_iter=s.kmeans_max_iter).fit(
            (x - mean) / std
        ),
    )
    units = [km.predict((f - mean) / std).astype(np.int64) for f in eval_feats]
    q, c = _unit_block(units, _trim_pairs(units, corpus.labels), k)
    q["_units"] = units
    return q, c


def _best(block: Mapping[str, Mapping[str, Any]], key: str, *, lower: bool = False) -> str | None:
    cands = [(v[key], k) for k, v in block.items() if isinstance(v.get(key), float) and v[key] == v[key]]
    if not cands:
        return None
    return (min if lower else max)(cands)[1]


def summarize(results: Mapping[str, Any]) -> dict[str, Any]:
    """The demo's table: best DinoSR unit layer (by PNMI) and feature layer (by probe accuracy, else ABX)
    next to MFCC k-means and MFCC features. Values are copied from the per-layer blocks."""
    out: dict[str, Any] = {}
    keys_u = (
        "pnmi",
        "phone_purity",
        "cluster_purity",
        "active_units",
        "unit_perplexity",
        "bitrate",
        "abx_within",
        "abx_across",
    )
    keys_f = ("abx_within", "abx_across", "probe_accuracy", "probe_per")
    best_u = _best(results["units"], "pnmi")
    if best_u is not None:
        out["model_units"] = {"layer": int(best_u), **{k: results["units"][best_u].get(k) for k in keys_u}}
    best_f = _best(results["layers"], "probe_accuracy") or _best(results["layers"], "abx_within", lower=True)
    if best_f is not None:
        out["model_features"] = {
            "layer": int(best_f),
            **{k: results["layers"][best_f].get(k) for k in keys_f},
        }
    base = results["baselines"]
    if "mfcc_kmeans" in base:
        out["mfcc_kmeans"] = {k: base["mfcc_kmeans"].get(k) for k in keys_u}
    if "mfcc" in base:
        out["mfcc"] = {k: base["mfcc"].get(k) for k in keys_f}
    for name, block in base.items():
        if name.startswith("kmeans_layer"):
            out[name] = {"layer": block.get("layer"), **{k: block.get(k) for k in keys_u}}
    return out


SUMMARY_COLUMNS = [
    ("pnmi", "PNMI", "{:.3f}"),
    ("phone_purity", "phone pur.", "{:.3f}"),
    ("abx_within", "ABX within %", "{:.1f}"),
    ("abx_across", "ABX across %", "{:.1f}"),
    ("probe_accuracy", "probe acc %", "{:.1f}"),
    ("probe_per", "probe PER %", "{:.1f}"),
]


def summary_rows(summary: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """(row label, formatted cells) for the text and HTML summary tables; '-' where not applicable."""
    labels = {
        "model_units": "DinoSR codebook units, layer {layer}",
        "mfcc_kmeans": "MFCC k-means units",
        "model_features": "DinoSR features, layer {layer}",
        "mfcc": "MFCC features",
    }
    rows = []
    names = [n for n in ("model_units", "mfcc_kmeans") if n in summary]
    names += sorted(n for n in summary if n.startswith("kmeans_layer"))
    names += [n for n in ("model_features", "mfcc") if n in summary]
    for name in names:
        block = summary[name]
        label = labels.get(name, "k-means on DinoSR layer {layer}").format(layer=block.get("layer"))
        cells = []
        for key, _, fmt in SUMMARY_COLUMNS:
            v = block.get(key)
            cells.append("-" if v is None or v != v else fmt.format(v))
        rows.append((label, cells))
    return rows


def format_summary(summary: Mapping[str, Any]) -> str:
    """A fixed-width text table of `summary_rows`."""
    rows = summary_rows(summary)
    head = ["", *[c[1] for c in SUMMARY_COLUMNS]]
    body = [[label, *cells] for label, cells in rows]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = []
    for r in [head, *body]:
        lines.append(
            "  ".join(r[0].ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
        )
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


# -------------------------------------------------------------------------------- files and the runner
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
    np.savez_compressed(out_dir / "counts.npz", **{k.replace("/", "_L"): v for k, v in counts.items()})
    report = write_report(out_dir, metrics, counts, train_log=train_log, title=title)
    metrics["report"] = str(report)
    tmp = out_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=1, allow_nan=False) + "\n")
    tmp.replace(out_dir / "metrics.json")
    return metrics
