"""Shared helpers of the trainer tests: a synthetic wav corpus and a very small config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from dinosr.config import Config, from_plain, to_plain

SAMPLE_RATE = 16000


def synth_utterance(rng: np.random.Generator, num_samples: int) -> np.ndarray:
    """Piecewise tones with noise: learnable structure (unlike white noise), cheap to make."""
    t = np.arange(num_samples) / SAMPLE_RATE
    out = np.zeros(num_samples)
    pos = 0
    while pos < num_samples:
        seg = int(rng.integers(800, 3200))
        f0 = rng.choice([150.0, 220.0, 330.0, 500.0, 800.0, 1200.0])
        out[pos : pos + seg] = np.sin(2 * np.pi * f0 * t[pos : pos + seg]) + 0.5 * np.sin(
            2 * np.pi * 2.7 * f0 * t[pos : pos + seg]
        )
        pos += seg
    return (0.3 * out + 0.02 * rng.standard_normal(num_samples)).astype(np.float32)


def write_corpus(
    root: Path, *, num_files: int = 12, seconds: tuple[float, float] = (1.0, 1.6), seed: int = 0
) -> Path:
    """Write ``num_files`` wavs under ``root/audio`` and a fairseq ``root/train.tsv`` (returned)."""
    rng = np.random.default_rng(seed)
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    lines = [str(audio)]
    for i in range(num_files):
        n = int(rng.uniform(*seconds) * SAMPLE_RATE)
        soundfile.write(audio / f"utt{i:03d}.wav", synth_utterance(rng, n), SAMPLE_RATE)
        lines.append(f"utt{i:03d}.wav\t{n}")
    manifest = root / "train.tsv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


MICRO_MODEL = {
    "conv_layers": [[32, 10, 5], [32, 3, 2], [32, 3, 2], [32, 3, 2], [32, 3, 2], [32, 2, 2], [32, 2, 2]],
    "embed_dim": 32,
    "num_layers": 2,
    "num_heads": 2,
    "ffn_dim": 64,
    "pos_conv_kernel": 16,
    "pos_conv_groups": 4,
    "pos_conv_depth": 2,
    "num_codebook_layers": 2,
    "codebook_size": 16,
    "ema_decay": 0.9,
    "ema_end_decay": 0.99,
    "ema_anneal_end_step": 4,
    "freeze_teacher_step": 1000,
}


def micro_config(workdir: Path, manifest: Path | str, **sections: dict) -> Config:
    """A config small enough for unit tests; ``sections`` update the defaults per section."""
    data = {
        "model": dict(MICRO_MODEL),
        "masking": {"mask_prob": 0.65, "mask_length": 4},
        "data": {
            "manifest": str(manifest),
            "min_sample_size": 8000,
            "max_sample_size": 16000,
            "max_tokens": 48000,
            "num_workers": 0,
        },
        "optim": {"lr": 1e-3, "scheduler": "cosine", "warmup_steps": 2},
        "run": {
            "workdir": str(workdir),
            "max_steps": 6,
            "log_every": 2,
            "save_every": 1000,
            "progress": False,
            "device": "cpu",
        },
    }
    for name, values in sections.items():
        data[name].update(values)
    return from_plain(Config, to_plain(from_plain(Config, data, source="test")), source="test")
