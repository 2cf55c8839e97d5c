"""Load one utterance: soundfile decode, mono mixdown, soxr resampling, per-utterance standardisation.

Every failure (missing, empty, header-only, truncated, corrupt, unsupported, wrong rate with
resampling off) raises `AudioError` naming the file and the problem, so a bad file in a
100k-file corpus is found in one read of the log.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile

from dinosr.errors import AudioError

if TYPE_CHECKING:
    from dinosr.data.manifest import ManifestEntry

log = logging.getLogger(__name__)

__all__ = ["AudioError", "load_audio", "resample", "standardize"]

_resample_noted = False  # log the first resampling once per process, not once per file


def standardize(wav: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """``(x - mean) / sqrt(var + eps)`` over the whole utterance (fairseq ``F.layer_norm(wav, wav.shape)``).

    Args:
        wav: (L,) float waveform.
    Returns:
        (L,) float32; statistics are computed in float64 so long files do not lose precision.
    """
    x = wav.astype(np.float64)
    return ((x - x.mean()) / np.sqrt(x.var() + eps)).astype(np.float32)


def resample(wav: np.ndarray, orig_rate: float, target_rate: float) -> np.ndarray:
    """Resample a (L,) float32 waveform with soxr (high quality); a no-op at equal rates.

    Rates need not be integers (speed perturbation resamples from ``rate * factor``)."""
    if orig_rate == target_rate:
        return wav
    import soxr  # imported here: only needed when a corpus is not at the target rate

    return soxr.resample(wav, orig_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """Decode to (L, C) float32 and the rate; any decoder failure becomes an AudioError."""
    if not path.exists():
        raise AudioError(path, "file not found")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        wav, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as err:
        msg = str(err)
        if msg.startswith("Error opening"):  # libsndfile could not parse a header it knows
            raise AudioError(path, f"unsupported or corrupt audio format ({msg})") from None
        raise AudioError(path, f"corrupt or truncated audio ({msg})") from None
    except (RuntimeError, OSError, ValueError) as err:
        raise AudioError(path, f"cannot decode ({type(err).__name__}: {err})") from None
    return wav, rate


def load_audio(
    path: str | os.PathLike,
    *,
    sample_rate: int = 16000,
    resample_audio: bool = True,
    normalize: bool = True,
    expected_samples: int | None = None,
) -> np.ndarray:
    """Load a file as a mono waveform at ``sample_rate``.

    Args:
        path: audio file (anything libsndfile reads: WAV, FLAC, OGG, ...).
        sample_rate: target rate.
        resample_audio: resample other rates with soxr; if False, another rate is an AudioError.
        normalize: per-utterance standardisation (spec 3.1); else the raw [-1, 1] samples.
        expected_samples: frame count recorded in the manifest (at the file's rate); a mismatch
            means the file was truncated or replaced since the manifest was written.
    Returns:
        (L,) float32 array. Multi-channel audio is mixed down by averaging the channels.
    Raises:
        AudioError: naming the file and the problem.
    """
    global _resample_noted
    path = Path(path)
    wav, rate = _decode(path)
    if wav.shape[0] == 0:
        raise AudioError(path, "no audio samples (header only)")
    if expected_samples is not None and wav.shape[0] != expected_samples:
        raise AudioError(
            path,
            f"truncated or changed: the manifest says {expected_samples} samples, decoded {wav.shape[0]}",
        )
    if not np.isfinite(wav).all():
        raise AudioError(path, "contains NaN or infinite samples")
    mono = wav.mean(axis=1, dtype=np.float32) if wav.shape[1] > 1 else wav[:, 0]
    if rate != sample_rate:
        if not resample_audio:
            raise AudioError(path, f"sample rate {rate} Hz, expected {sample_rate} Hz (resampling is off)")
        if not _resample_noted:
            _resample_noted = True
            log.info(
                "resampling audio from %d Hz to %d Hz with soxr (first file: %s)", rate, sample_rate, path
            )
        mono = resample(mono, rate, sample_rate)
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    return standardize(mono) if normalize else mono


def load_model_inputs(
    entries: Sequence[ManifestEntry],
    min_samples: int,
    *,
    skip_bad_files: bool = False,
    bad: list[tuple[str, str]] | None = None,
) -> tuple[list[np.ndarray], list[str]]:
    """Raw 16 kHz waveforms of ``entries`` for inference (the inference code standardises), and their names.

    Audio shorter than ``min_samples`` (the model's receptive field: not even one frame) is an AudioError,
    as are the manifest's length disagreeing and unreadable files (``dinosr extract``, ``dinosr transcribe``).
    With ``skip_bad_files`` such a file is logged, appended to ``bad`` as ``(name, message)`` and left out.
    """
    wavs, names = [], []
    for e in entries:
        try:
            expected = e.num_samples if e.num_samples > 0 else None
            wav = load_audio(e.path, sample_rate=16000, normalize=False, expected_samples=expected)
            if len(wav) < min_samples:  # would reach the conv layers as "kernel size > input size"
                raise AudioError(
                    e.path,
                    f"only {len(wav)} samples, shorter than one frame of the model "
                    f"(receptive field {min_samples} samples at 16000 Hz)",
                )
            wavs.append(wav)
            names.append(e.name)
        except AudioError as err:
            if not skip_bad_files:
                raise
            log.warning("skipping bad file %s: %s", e.name, err)
            if bad is not None:
                bad.append((e.name, str(err)))
    return wavs, names
