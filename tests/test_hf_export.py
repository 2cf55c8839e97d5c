"""`dinosr export --to hf`: a Data2VecAudioModel directory whose hidden states equal ours."""

from __future__ import annotations

import pytest
import torch

import dinosr
from dinosr.cli import main
from dinosr.inference import pad_waveforms, standardize
from dinosr.model import dinosr_tiny

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_hf_hidden_states_match(tmp_path, qkv_bias):
    torch.manual_seed(0)
    model = dinosr_tiny(num_layers=2, num_codebook_layers=2, qkv_bias=qkv_bias).eval()
    dinosr.save_pretrained(model, tmp_path / "ours")
    assert main(["export", "--to", "hf", str(tmp_path / "ours"), str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "dinosr_extra.safetensors").exists()
    hf = transformers.Data2VecAudioModel.from_pretrained(tmp_path / "hf").eval()

    g = torch.Generator().manual_seed(2)
    wavs = [torch.randn(16000, generator=g), torch.randn(9000, generator=g)]
    ours, lengths = dinosr.extract_features(model, wavs, kind="hidden", chunk_seconds=None)
    wav, lens = pad_waveforms(wavs)
    wav = standardize(wav, lens)
    with torch.no_grad():
        for i in range(2):  # single utterances: all layers 0..L
            out = hf(wav[i : i + 1, : lens[i]], output_hidden_states=True)
            assert len(out.hidden_states) == model.cfg.num_layers + 1
            for layer, h in enumerate(out.hidden_states):
                assert (h[0] - ours[layer][i, : lengths[i]]).abs().max() < 1e-4
        # padded batch with attention_mask: the longest row matches; HF's shorter rows drift because HF
        # zeroes padding only before the first positional conv (ours = single-utterance results above)
        mask = (torch.arange(wav.shape[1])[None] < lens[:, None]).long()
        out = hf(wav, attention_mask=mask, output_hidden_states=True)
        for layer, h in enumerate(out.hidden_states):
            assert (h[0] - ours[layer][0]).abs().max() < 1e-4
