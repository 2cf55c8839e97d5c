"""Fit the acoustic anchor's k-means (``model.anchor_units > 0``, dinosr/model/anchor.py) before training.

The anchor targets are k-means units of standardised log-mel frames of the *training* speech: a seeded
random subset of the manifest, ``model.anchor_fit_minutes`` long, read with the training loader's audio
settings. Rank 0 fits and broadcasts the centroids, so every rank trains towards the same units; the
centroids then live in the model's state dict (checkpoints resume without refitting).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch

from dinosr.data.config import DataConfig
from dinosr.data.dataset import AudioDataset
from dinosr.data.manifest import ManifestEntry
from dinosr.train import distributed as dist

log = logging.getLogger(__name__)


@torch.no_grad()
def anchor_fit_frames(
    anchor, entries: Sequence[ManifestEntry], data_cfg: DataConfig, *, minutes: float, seed: int
) -> torch.Tensor:
    """(N, F) anchor features of a seeded random subset of ``entries`` holding ``minutes`` of speech.

    Audio is read as the training loader reads it (`AudioDataset`): unreadable files raise, or are logged
    and skipped (and counted here) when ``data_cfg.skip_bad_files``.
    """
    dataset = AudioDataset(entries, data_cfg)
    frames, seconds, skipped = [], 0.0, 0
    for index in np.random.default_rng(seed).permutation(len(entries)):
        item = dataset[int(index)]
        if item is None:
            skipped += 1
            continue
        feats = anchor.features(torch.from_numpy(item.wav)[None].to(anchor.centroids.device))[0]
        frames.append(feats.cpu())
        seconds += len(item.wav) / data_cfg.sample_rate
        if seconds >= 60 * minutes:
            break
    if skipped:
        log.warning("anchor k-means: %d unreadable files skipped", skipped)
    if not frames:
        raise ValueError("anchor k-means: no readable training audio")
    return torch.cat(frames)


def fit_anchor(model, entries: Sequence[ManifestEntry], data_cfg: DataConfig, *, seed: int) -> None:
    """Fit ``model.anchor`` on rank 0 and broadcast it (a collective under DDP)."""
    anchor = model.anchor
    if dist.rank() == 0:
        started = time.perf_counter()
        frames = anchor_fit_frames(anchor, entries, data_cfg, minutes=model.cfg.anchor_fit_minutes, seed=seed)
        anchor.fit(frames.to(anchor.centroids.device), generator=torch.Generator().manual_seed(seed))
        log.info(
            "acoustic anchor: %d k-means units fit on %d frames (%.1f min) in %.1f s",
            anchor.num_units,
            frames.shape[0],
            frames.shape[0] * 0.02 / 60,
            time.perf_counter() - started,
        )
    if dist.is_distributed():
        torch.distributed.broadcast(anchor.centroids, src=0)
        torch.distributed.broadcast(anchor.fitted, src=0)
