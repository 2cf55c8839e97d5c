"""Per-utterance normalisation of frame sequences: the teacher targets (spec section 5), the log-mel input."""

from __future__ import annotations

import torch
from torch import Tensor

INSTANCE_NORM_EPS = 1e-5


def instance_norm_frames(x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
    """Per utterance and channel, standardise over the valid frames (biased var, eps 1e-5, fp32).

    (B, T, D) -> (B, T, D) fp32. Padded frames are excluded from the statistics (spec 5 / pitfall 14).
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        if padding_mask is None:
            var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        else:
            mean = masked_frame_mean(x, padding_mask)
            var = masked_frame_mean((x - mean).square(), padding_mask)
        return (x - mean) * torch.rsqrt(var + INSTANCE_NORM_EPS)


def masked_frame_mean(x: Tensor, padding_mask: Tensor) -> Tensor:
    """(B, T, D) -> (B, 1, D): per utterance and channel, the mean over the valid frames (in x's dtype)."""
    valid = (~padding_mask)[..., None].to(x.dtype)
    return (x * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp(min=1.0)


def mean_normalise_frames(x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
    """Per utterance and channel, subtract the mean over the valid frames (cepstral mean normalisation).

    (B, T, D) -> (B, T, D) in x's dtype; padded frames are excluded from the mean (and shifted like the rest).
    """
    if padding_mask is None:
        return x - x.mean(dim=1, keepdim=True)
    return x - masked_frame_mean(x, padding_mask)


def normalise_logmel(x: Tensor, padding_mask: Tensor | None, *, variance: bool) -> Tensor:
    """The ``logmel_cmn`` / ``logmel_cvn`` input normalisation: per utterance and band, the mean removed
    (CMN) and, with ``variance``, the standard deviation divided out (CMVN). Returns x's dtype."""
    if variance:
        return instance_norm_frames(x, padding_mask).to(x.dtype)
    return mean_normalise_frames(x, padding_mask)
