"""Baselines for unit discovery: MFCC features and k-means quantisation (HuBERT's recipe).

* `mfcc_features`: 13 MFCC + delta + delta-delta (39 dims) at 16 kHz, 25 ms windows, 20 ms hop.
  Frame alignment: MFCC frame i covers samples ``[320 i, 320 i + 400)``, exactly the receptive field
  of DinoSR's conv frame i (stride 320, receptive field 400, spec section 3.2), and there are
  ``1 + (L - 400) // 320`` frames, the same count as the model's conv output for every L >= 400
  (checked in the tests). Both are centred at ``12.5 ms + 20 ms * i``; the ABX convention
  ``10 ms + 20 ms * i`` is 2.5 ms off for both alike.
* `KMeansQuantizer`: scikit-learn MiniBatchKMeans with fairseq HuBERT ``simple_kmeans`` settings
  (k-means++, max_iter 100, batch_size 10000, tol 0, max_no_improvement 100, n_init 20,
  reassignment_ratio 0, init_size None). Only fitting needs scikit-learn; centroids are saved as a
  plain tensor in safetensors (no pickles) and prediction is a nearest-centroid argmin in torch.

scikit-learn and librosa are optional (``pip install 'dinosr[eval]'``) and imported lazily.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from dinosr.fileio import atomic_write_bytes

__all__ = ["KMeansQuantizer", "mfcc_features", "require"]

SAMPLE_RATE = 16000
WINDOW = 400  # 25 ms at 16 kHz, the conv receptive field
HOP = 320  # 20 ms, the conv stride


def require(module: str, purpose: str) -> ModuleType:
    """Import an optional dependency or raise an ImportError naming the ``dinosr[eval]`` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{purpose} needs the optional package {module.split('.')[0]!r}: pip install 'dinosr[eval]'"
        ) from e


def mfcc_features(waveform: np.ndarray | torch.Tensor, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """13 MFCC + delta + delta-delta at the model's 20 ms frame rate.

    Args:
        waveform: (L,) mono audio at 16 kHz (any scale; MFCCs are computed on it as given).
        sample_rate: must be 16000 (the frame alignment is defined in samples).

    Returns:
        (T, 39) float32, T = 1 + (L - 400) // 320 (0 frames when L < 400).
    """
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"mfcc_features expects {SAMPLE_RATE} Hz audio, got {sample_rate}; resample first")
    librosa = require("librosa", "MFCC features")
    y = np.asarray(waveform, dtype=np.float32).reshape(-1)
    if len(y) < WINDOW:
        return np.zeros((0, 39), dtype=np.float32)
    # center=False: frame i starts at sample 320 i, as the model's conv frames do.
    mfcc = librosa.feature.mfcc(
        y=y,
        sr=sample_rate,
        n_mfcc=13,
        n_fft=WINDOW,
        win_length=WINDOW,
        hop_length=HOP,
        n_mels=40,
        center=False,
    )
    n = mfcc.shape[1]
    if n >= 3:
        # Regression window of up to 9 frames (librosa default), shrunk for short utterances.
        width = min(9, n if n % 2 else n - 1)
        d1 = librosa.feature.delta(mfcc, width=width, order=1, mode="nearest")
        d2 = librosa.feature.delta(mfcc, width=width, order=2, mode="nearest")
    else:
        d1 = d2 = np.zeros_like(mfcc)
    return np.concatenate([mfcc, d1, d2]).T.astype(np.float32)


class KMeansQuantizer:
    """k-means units: fit with MiniBatchKMeans (HuBERT settings), predict by nearest centroid.

    Args:
        n_clusters: number of units (use the codebook size, 256 for DinoSR base).
        seed: k-means random_state.
        n_init, max_iter, batch_size, tol, max_no_improvement, reassignment_ratio, init_size:
            MiniBatchKMeans arguments; defaults are fairseq HuBERT ``learn_kmeans.py``'s.
    """

    def __init__(
        self,
        n_clusters: int,
        *,
        seed: int = 0,
        n_init: int = 20,
        max_iter: int = 100,
        batch_size: int = 10000,
        tol: float = 0.0,
        max_no_improvement: int = 100,
        reassignment_ratio: float = 0.0,
        init_size: int | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.kwargs = {
            "init": "k-means++",
            "random_state": seed,
            "n_init": n_init,
            "max_iter": max_iter,
            "batch_size": batch_size,
            "tol": tol,
            "max_no_improvement": max_no_improvement,
            "reassignment_ratio": reassignment_ratio,
            "init_size": init_size,
            "compute_labels": False,
        }
        self.centroids: torch.Tensor | None = None  # (K, D) float32
        self.inertia: float | None = None

    def fit(self, features: np.ndarray | Sequence[np.ndarray]) -> KMeansQuantizer:
        """Fit on (N, D) frames, or a list of per-utterance (T, D) arrays (concatenated)."""
        cluster = require("sklearn.cluster", "k-means fitting")
        x = np.concatenate(features) if isinstance(features, list | tuple) else np.asarray(features)
        km = cluster.MiniBatchKMeans(n_clusters=self.n_clusters, **self.kwargs)
        km.fit(x.astype(np.float32))
        self.centroids = torch.from_numpy(km.cluster_centers_.astype(np.float32))
        self.inertia = float(km.inertia_)
        return self

    def predict(self, features: np.ndarray | torch.Tensor, *, chunk: int = 65536) -> np.ndarray:
        """(T, D) features -> (T,) int64 index of the nearest centroid (squared Euclidean)."""
        if self.centroids is None:
            raise RuntimeError("KMeansQuantizer is not fitted; call fit() or load()")
        from dinosr.model.codebook import nearest_codeword

        x_all = torch.as_tensor(np.asarray(features), dtype=torch.float32)
        out = [nearest_codeword(x, self.centroids) for x in x_all.split(chunk)]
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)

    def save(self, path: str | Path) -> None:
        """Write the centroids as a safetensors file (tensor ``centroids``, (K, D) float32)."""
        from safetensors.torch import save

        if self.centroids is None:
            raise RuntimeError("nothing to save: KMeansQuantizer is not fitted")
        meta = {"n_clusters": str(self.n_clusters), "kind": "dinosr.KMeansQuantizer"}
        # Atomic: an interrupted save keeps the previous centroids file, never a truncated one.
        atomic_write_bytes(path, save({"centroids": self.centroids.contiguous()}, metadata=meta))

    @classmethod
    def load(cls, path: str | Path) -> KMeansQuantizer:
        """Load centroids saved by `save` (safetensors), or a plain (K, D) tensor saved with torch.save."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            centroids = load_file(str(path))["centroids"]
        except SafetensorError:  # not safetensors: a plain tensor (or {"centroids": t}) from torch.save
            centroids = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(centroids, dict):
                centroids = centroids["centroids"]
        if centroids.ndim != 2:
            raise ValueError(f"{path}: expected (K, D) centroids, got shape {tuple(centroids.shape)}")
        q = cls(centroids.shape[0])
        q.centroids = centroids.to(torch.float32)
        return q
