"""A fixed log-mel front end: an option for short CPU runs, not part of the official DinoSR.

The official model learns its filterbank with a 7-block CNN on the raw waveform. On one CPU, learning that
filterbank takes longer than a short run lasts (research/small_batch.md): after 12 minutes the CNN output is a
worse phone representation than plain MFCCs. ``ModelConfig.frontend = "logmel"`` replaces the CNN by log
mel energies on the same frame grid: 25 ms Hann windows every 20 ms, no centring, so an utterance of L
samples gives ``1 + (L - 400) // 320`` frames, exactly the official CNN's count, and frame t covers the same
samples [320 t, 320 t + 400). Everything after the front end (LayerNorm + projection, masking, transformer,
teacher, codebooks) is unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinosr.model.config import LOGMEL_HOP, LOGMEL_WINDOW

LOG_FLOOR = 1e-6  # keeps log() finite on digital silence


def hz_to_mel(hz: Tensor) -> Tensor:
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int) -> Tensor:
    """(n_fft // 2 + 1, n_mels) triangular HTK-mel filters with peak 1, from 0 Hz to Nyquist."""
    freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    top = 2595.0 * math.log10(1.0 + sample_rate / 2 / 700.0)  # hz_to_mel of the Nyquist frequency
    edges = mel_to_hz(torch.linspace(0.0, top, n_mels + 2, dtype=torch.float64))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (freqs[:, None] - lower) / (centre - lower)
    falling = (upper - freqs[:, None]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


class LogMelFrontend(nn.Module):
    """(B, L) standardised waveforms -> (B, T, n_mels) log mel energies; no trainable parameters."""

    def __init__(
        self,
        n_mels: int = 80,
        *,
        sample_rate: int = 16000,
        window: int = LOGMEL_WINDOW,
        hop: int = LOGMEL_HOP,
    ):
        super().__init__()
        self.window_length, self.hop = window, hop
        # Same (kernel, stride) bookkeeping as the CNN, so frame lengths and chunking code stay shared.
        self.kernels_strides = [(window, hop)]
        n_fft = 2 ** math.ceil(math.log2(window))
        self.n_fft = n_fft
        # Persistent although derived from the config: a model built on the meta device (checkpoint
        # loading) gets them back from the state dict like every other tensor.
        self.register_buffer("window", torch.hann_window(window, periodic=True))
        self.register_buffer("filters", mel_filterbank(n_fft, n_mels, sample_rate))

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """(B,) sample counts -> (B,) frame counts, 1 + (L - window) // hop, clamped at 0."""
        frames = torch.div(lengths.long() - self.window_length, self.hop, rounding_mode="floor") + 1
        return frames.clamp(min=0)

    def forward(self, waveforms: Tensor) -> Tensor:
        with torch.autocast(device_type=waveforms.device.type, enabled=False):
            frames = waveforms.float().unfold(-1, self.window_length, self.hop)  # (B, T, window)
            spectrum = torch.fft.rfft(frames * self.window, n=self.n_fft).abs().square()  # (B, T, F)
            return torch.log(spectrum @ self.filters + LOG_FLOOR)


class LogMelConv(nn.Module):
    """(B, T, n_mels) log-mel -> (B, T, channels * (n_mels // 4)): ``ModelConfig.logmel_conv``.

    Two 3 x 3 convolutions over (frame, mel band), each followed by GELU and a max over pairs of
    neighbouring bands. Why: the same filters at every band and the max over neighbours make the
    features tolerant of a small shift of the spectral envelope (another voice's formants), which the
    per-frame linear projection of the log-mel is not (the frequency-convolution CNNs of hybrid ASR).
    The frame grid is unchanged; each frame sees its two neighbours on either side.
    """

    def __init__(self, n_mels: int, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.out_dim = channels * (n_mels // 4)

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """``padding_mask`` (B, T), True = padded: those frames enter each conv as zeros, the padding a
        lone utterance sees, so a padded batch gives each utterance its unpadded result."""
        keep = None if padding_mask is None else ~padding_mask[:, None, :, None]
        h = x.unsqueeze(1)  # (B, 1, T, n_mels)
        for conv in (self.conv1, self.conv2):
            if keep is not None:
                h = h * keep
            h = F.max_pool2d(F.gelu(conv(h)), (1, 2))
        b, c, t, f = h.shape
        return h.permute(0, 2, 1, 3).reshape(b, t, c * f)
