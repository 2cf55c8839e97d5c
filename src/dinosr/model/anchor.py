"""Acoustic anchor targets: a small-batch option (research/small_batch.md), not part of the official DinoSR.

Diagnosis of the small-batch runs: once the codebooks no longer collapse (k-means init, restarts), what
limits the units is the representation itself. Bootstrapped from a random network, the teacher's targets
carry little phonetic information at first, and in a few CPU minutes the student does not learn features
that cluster as well as plain MFCCs (k-means on the trained teacher's features scores the same as its online
codebooks).

The anchor gives the student a second masked-prediction task from the first step, HuBERT's first-iteration
target: an extra linear head on the student's final layer predicts, for every masked frame, the k-means unit
of fixed acoustic features of that frame (log-mel energies standardised per utterance, stacked with
``context`` neighbouring frames on each side). The k-means is fit once before training on the training
speech (:meth:`AcousticAnchor.fit`, called by the trainer), stored as buffers in the state dict and never
changed. The DinoSR teacher, codebooks, targets and units are untouched: the anchor only shapes the
representation the teacher is an average of.

Loss: the anchor cross-entropy is summed over its frames (the masked ones, or every valid frame with
``anchor_frames="all"``), multiplied by ``anchor_weight`` and added to the summed DinoSR cross-entropy (mean
over codebooks) of the masked frames; the trainer divides the total by the number of masked frames. With
``"all"`` an anchor weight w therefore weighs the anchor about w / mask_fraction times as much as DinoSR
(the tiny recipe masks about 47 % of the frames of its 2 s crops; 1 - e^-0.8 = 55 % holds only for long
utterances). Off (absent from the model and its state dict) unless
``ModelConfig.anchor_units > 0``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinosr.model.codebook import nearest_codeword
from dinosr.model.logmel import LogMelFrontend
from dinosr.model.norm import instance_norm_frames
from dinosr.model.remedies import kmeans_pp


class AcousticAnchor(nn.Module):
    """Fixed k-means units of standardised log-mel frames, and the head that predicts them.

    Args:
        num_units: k-means clusters (classes of the head).
        embed_dim: width of the student layer the head reads.
        n_mels: mel bands of the acoustic features.
        context: frames stacked on each side (edge frames repeated), so a unit sees 20 ms x (2 context + 1).
    """

    def __init__(self, num_units: int, embed_dim: int, *, n_mels: int = 40, context: int = 1) -> None:
        super().__init__()
        self.context = context
        self.frontend = LogMelFrontend(n_mels)
        self.head = nn.Linear(embed_dim, num_units)
        self.register_buffer("centroids", torch.zeros(num_units, n_mels * (2 * context + 1)))
        self.register_buffer("fitted", torch.tensor(False))

    centroids: Tensor
    fitted: Tensor

    @property
    def num_units(self) -> int:
        return self.centroids.shape[0]

    @torch.no_grad()
    def features(self, waveforms: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """(B, L) waveforms -> (B, T, n_mels * (2 context + 1)) fp32 on the model's 20 ms frame grid.

        Standardised per utterance over the valid frames (``padding_mask`` True = padded), which removes
        channel gain and much of the speaker's spectral tilt.
        """
        x = instance_norm_frames(self.frontend(waveforms), padding_mask)
        if self.context == 0:
            return x
        t = x.shape[1]
        padded = F.pad(x.transpose(1, 2), (self.context, self.context), mode="replicate").transpose(1, 2)
        return torch.cat([padded[:, i : i + t] for i in range(2 * self.context + 1)], dim=-1)

    @torch.no_grad()
    def fit(self, frames: Tensor, *, iters: int = 20, generator: torch.Generator | None = None) -> None:
        """k-means++ and ``iters`` Lloyd iterations on (N, F) frames from :meth:`features`."""
        if frames.ndim != 2 or frames.shape[1] != self.centroids.shape[1]:
            raise ValueError(
                f"anchor frames must be (N, {self.centroids.shape[1]}), got {tuple(frames.shape)}"
            )
        if frames.shape[0] < self.num_units:
            raise ValueError(
                f"fitting {self.num_units} anchor units needs at least as many frames, got {frames.shape[0]}"
            )
        self.centroids.copy_(kmeans_pp(frames, self.num_units, iters=iters, generator=generator))
        self.fitted.fill_(True)

    @torch.no_grad()
    def assign(self, features: Tensor) -> Tensor:
        """(..., F) features -> (...) int64 index of the nearest centroid (squared L2, fp32)."""
        return nearest_codeword(features, self.centroids)

    def losses(self, waveforms: Tensor, padding_mask: Tensor | None, mask: Tensor, hidden: Tensor) -> Tensor:
        """Per-masked-frame cross-entropy (M,) fp32 of the head on ``hidden`` (B, T, D) at ``mask``."""
        if not bool(self.fitted):
            raise RuntimeError(
                "the acoustic anchor (model.anchor_units > 0) is not fitted: the Trainer fits it before the "
                "first step; otherwise call model.anchor.fit(frames) with frames from model.anchor.features"
            )
        codes = self.assign(self.features(waveforms, padding_mask))[mask]
        logits = self.head(hidden[mask]).float()
        return F.cross_entropy(logits, codes, reduction="none")
