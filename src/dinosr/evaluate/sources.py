"""Where features and units come from: a DinoSR model (`ModelSource`) or a `dinosr extract` directory.

Both answer ``features(inputs, layers)`` -> {layer: [(T, D) float32]} and ``units(inputs, layers)`` ->
{layer: [(T,) int64]}, one array per utterance; a model takes waveforms, a feature directory takes
utterance names. ``describe()`` is what metrics.json records under ``source``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dinosr.evaluate.corpus import FRAME_STEP, SAMPLE_RATE

log = logging.getLogger(__name__)

__all__ = ["FeatureDirSource", "ModelSource"]


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
        self.frame_step = cfg.hop_length / SAMPLE_RATE  # seconds per frame
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
        from dinosr.data.sampler import pack_by_length

        return pack_by_length([len(w) for w in wavs], int(self.batch_seconds * SAMPLE_RATE))

    def features(self, wavs: Sequence[np.ndarray], layers: Sequence[int], desc: str = "features"):
        """{layer: [(T_i, D) float32 per utterance]}."""
        import torch
        from tqdm.auto import tqdm

        from dinosr.inference import extract_features

        out: dict[int, list[np.ndarray | None]] = {layer: [None] * len(wavs) for layer in layers}
        for batch in tqdm(self._batches(wavs), desc=desc, unit="batch", leave=False):
            res = extract_features(
                self.model,
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

        from dinosr.inference import units

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
                    layer: units(self.model, x, layer=layer, source=self.unit_source).units
                    for layer in layers
                }
            for layer in layers:
                for row, i in enumerate(batch):
                    out[layer][i] = per_layer[layer][row].numpy().astype(np.int64)
        return out

    def _codebook_units(self, x, layers: Sequence[int]):
        """Codebook units of several layers from one teacher pass.

        Same computation as ``dinosr.inference.units(source="codebook")`` (teacher FFN output,
        instance norm over the utterance's valid frames, nearest codeword), which encodes the batch
        once per layer; a test checks the two agree.
        """
        import torch

        from dinosr.inference import extract_features
        from dinosr.model.codebook import nearest_codeword
        from dinosr.model.norm import instance_norm_frames

        res = extract_features(self.model, x, layers=list(layers), kind="ffn", teacher=True)
        lengths = res.lengths
        centroids = self.model.codebooks.centroids()
        out = {}
        for layer in layers:
            feats = res.features[layer]
            pad = torch.arange(feats.shape[1])[None, :] >= lengths[:, None]
            z = instance_norm_frames(feats, pad)
            codes = nearest_codeword(z, centroids[self.codebook_layers.index(layer)])
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
        self.frame_step = FRAME_STEP  # `dinosr extract` writes model frames: 20 ms for every DinoSR config
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
