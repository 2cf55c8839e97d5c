"""Speed perturbation of a padded waveform batch (Kaldi / ESPnet ``speed_perturb``; Ko et al., 2015).

An utterance played ``factor`` times faster: resampled from ``sample_rate * factor`` to ``sample_rate``, so
its duration shrinks by ``factor`` and pitch and formants rise by it. Fine-tuning uses it to make a
recogniser trained on a few voices hold on voices it never heard (docs/finetuning.md). One factor per
utterance, drawn uniformly from ``[low, high]`` with the global torch RNG, which the training loop
checkpoints, so a resumed run draws the same factors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dinosr.data.audio import resample


def speed_perturb(
    waveforms: Tensor, lengths: Tensor, factor_range: tuple[float, float], *, sample_rate: int = 16000
) -> tuple[Tensor, Tensor]:
    """(B, L) zero-padded waveforms and (B,) lengths -> the batch with each utterance sped up by a random
    factor in ``factor_range`` (new lengths ``round(length / factor)``), zero-padded to the longest."""
    low, high = factor_range
    factors = torch.empty(len(lengths), dtype=torch.float64).uniform_(low, high)
    audio = waveforms.detach().float().cpu().numpy()
    out = [
        resample(audio[i, : int(n)], sample_rate * float(f), sample_rate)
        for i, (n, f) in enumerate(zip(lengths, factors))
    ]
    new_lengths = torch.tensor([len(w) for w in out], dtype=torch.long)
    batch = torch.zeros(len(out), int(new_lengths.max()), dtype=waveforms.dtype)
    for row, wav in zip(batch, out):
        row[: len(wav)] = torch.from_numpy(wav)
    return batch.to(waveforms.device), new_lengths.to(lengths.device)
