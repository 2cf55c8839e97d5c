"""s3prl upstream for DinoSR: drop this file (as ``expert.py``) plus the hubconf functions into
``s3prl/upstream/dinosr/``, or use it directly.

Legacy upstream contract: ``UpstreamExpert(ckpt)(wavs)`` with ``wavs`` a list of 1-D 16 kHz float
tensors returns ``{"hidden_states": [transformer input, layer 1, ..., layer L] (B, T, D) each, same T,
"last_hidden_state": (B, T, D)}``; each waveform is standardised before padding, and padded frames are
masked inside the model (batch results equal single-utterance results).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dinosr.inference import hidden_states, pad_waveforms, standardize

__all__ = ["UpstreamExpert", "dinosr", "dinosr_local", "dinosr_url"]

OFFICIAL_URL = "https://data.csail.mit.edu/placesaudio/dinosr/dinosr.ckpt"


class UpstreamExpert(nn.Module):
    """s3prl-style upstream wrapping a DinoSR student encoder.

    Args:
        ckpt: anything :func:`dinosr.interop.load_model` reads (pretrained dir, training checkpoint,
            official ``dinosr.ckpt``, spidr ``.pt``).
        model_config: unused (s3prl passes it to every upstream).
        kind: "hidden" (post-LN residual stream, the s3prl convention) or "ffn" (FFN outputs; then
            ``hidden_states`` has L tensors, no layer 0).
    """

    def __init__(
        self, ckpt: str | os.PathLike, model_config: Any = None, *, kind: str = "hidden", **kwargs: Any
    ):
        super().__init__()
        from dinosr.interop.pretrained import load_model

        self.model = load_model(ckpt)
        self.kind = kind
        first = 0 if kind == "hidden" else 1
        self.layers = list(range(first, self.model.cfg.num_layers + 1))

    def get_downsample_rates(self, key: str = "hidden_states") -> int:
        """Samples per frame (320)."""
        return self.model.cfg.hop_length

    def hidden_states(self, wavs: Tensor, wavs_len: Tensor) -> tuple[list[Tensor], Tensor]:
        """New-API shape: (B, L) padded raw waveforms + (B,) lengths -> (per-layer (B, T, D), (B,) frames)."""
        wav = standardize(wavs.float(), wavs_len)
        feats, frames = hidden_states(self.model, wav, wavs_len.cpu(), layers=self.layers, kind=self.kind)
        return [feats[lay] for lay in self.layers], frames.to(wavs.device)

    def forward(self, wavs: list[Tensor]) -> dict[str, Any]:
        """List of (L_i,) 16 kHz waveforms -> {"hidden_states": [(B, T, D)] * (L + 1), "last_hidden_state"}.

        Runs in the module's current mode with autograd, so s3prl's upstream fine-tuning (``-f``) works.
        """
        device = self.model.mask_embedding.device
        wav, lens = pad_waveforms([w.reshape(-1) for w in wavs])
        states, _ = self.hidden_states(wav.to(device), lens)
        return {"hidden_states": states, "last_hidden_state": states[-1]}


def dinosr_local(ckpt: str | os.PathLike, *args: Any, **kwargs: Any) -> UpstreamExpert:
    """hubconf entry: a local checkpoint or pretrained directory (``-u dinosr_local -k PATH``)."""
    if not Path(ckpt).exists():
        raise FileNotFoundError(ckpt)
    return UpstreamExpert(ckpt, *args, **kwargs)


def dinosr_url(ckpt: str, *args: Any, refresh: bool = False, **kwargs: Any) -> UpstreamExpert:
    """hubconf entry: download ``ckpt`` (a URL) into the torch hub cache once, then load it safely."""
    cache = Path(torch.hub.get_dir()) / "dinosr"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / ckpt.rstrip("/").rsplit("/", 1)[-1]
    if refresh or not path.exists():
        torch.hub.download_url_to_file(ckpt, str(path))
    return dinosr_local(path, *args, **kwargs)


def dinosr(*args: Any, **kwargs: Any) -> UpstreamExpert:
    """hubconf entry: the official DinoSR base checkpoint (read with the restricted unpickler)."""
    return dinosr_url(OFFICIAL_URL, *args, **kwargs)
