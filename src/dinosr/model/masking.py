"""Span masking of the student input (spec 3.4), drawn from torch RNG.

This reproduces fairseq's ``compute_mask_indices`` with ``mask_selection=static``, overlapping spans and
``require_same_masks``, using torch instead of the NumPy global RNG. Loops run over utterances, never frames.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _span_starts(
    num_valid: int, num_spans: int, span_length: int, generator: torch.Generator | None
) -> Tensor:
    """Distinct span starts (num_spans,) drawn uniformly from [0, num_valid - span_length)."""
    num_candidates = num_valid - span_length
    if num_candidates <= num_spans:
        # fairseq: too short for distinct full-length starts -> pick from the first num_spans + 1 positions.
        num_candidates = num_spans + 1
    return torch.randperm(num_candidates, generator=generator)[:num_spans]


def compute_span_mask(
    batch_size: int,
    num_frames: int,
    *,
    mask_prob: float = 0.8,
    mask_length: int = 10,
    min_masks: int = 1,
    require_same_masks: bool = True,
    padding_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Sample a (B, T) boolean mask of overlapping spans; True = masked frame.

    Per utterance with n valid frames: S = max(min_masks, floor(mask_prob * n / mask_length + u)) distinct
    starts, each masking ``mask_length`` frames (clipped at n). u ~ U[0,1) is drawn once for the batch when
    there is no padding mask and once per utterance otherwise (as fairseq). With ``require_same_masks`` every
    row is sub-sampled without replacement to the smallest masked count in the batch.

    Args:
        batch_size, num_frames: B and T.
        padding_mask: (B, T) bool, True = padded (padded frames are never masked), or None.
        generator: CPU torch.Generator; None uses the global torch RNG.
        device: where the returned mask lives (sampling always happens on CPU).

    Returns:
        (B, T) bool.
    """
    if padding_mask is None:
        valid = [num_frames] * batch_size
        u = torch.rand(1, generator=generator).item()
        uniforms = [u] * batch_size
    else:
        valid = (~padding_mask).sum(1).tolist()
        uniforms = torch.rand(batch_size, generator=generator).tolist()

    mask = torch.zeros(batch_size, num_frames, dtype=torch.bool)
    offsets = torch.arange(mask_length)
    for row, (n, u) in enumerate(zip(valid, uniforms)):
        if n <= 0:
            continue
        num_spans = max(min_masks, math.floor(mask_prob * n / mask_length + u))
        starts = _span_starts(n, num_spans, mask_length, generator)
        idx = (starts[:, None] + offsets[None, :]).flatten()
        mask[row, idx[idx < n]] = True

    if require_same_masks and batch_size > 1:
        counts = mask.sum(1)
        target = int(counts.min())
        for row in torch.nonzero(counts > target).flatten().tolist():
            masked = torch.nonzero(mask[row]).flatten()
            keep = masked[torch.randperm(masked.numel(), generator=generator)[:target]]
            mask[row] = False
            mask[row, keep] = True
    return mask.to(device) if device is not None else mask
