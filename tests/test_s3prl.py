"""s3prl-style UpstreamExpert."""

from __future__ import annotations

import torch

import dinosr
from dinosr.interop.s3prl import UpstreamExpert, dinosr_local
from dinosr.model import dinosr_tiny


def test_upstream_expert(tmp_path):
    torch.manual_seed(0)
    model = dinosr_tiny(num_layers=2, num_codebook_layers=2).eval()
    dinosr.save_pretrained(model, tmp_path / "m")
    expert = dinosr_local(str(tmp_path / "m"))
    assert isinstance(expert, UpstreamExpert)
    assert expert.get_downsample_rates("hidden_states") == 320
    g = torch.Generator().manual_seed(1)
    wavs = [torch.randn(16000, generator=g), torch.randn(8000, generator=g) * 5]
    with torch.no_grad():
        out = expert(wavs)
    states = out["hidden_states"]
    assert len(states) == model.cfg.num_layers + 1
    assert len({h.shape for h in states}) == 1
    assert torch.equal(out["last_hidden_state"], states[-1])
    ref, _ = dinosr.extract_features(model, wavs, chunk_seconds=None)
    for layer, h in enumerate(states):
        assert torch.allclose(h, ref[layer], atol=1e-5)
    # new-API shape: (B, L) + lengths -> (all_hs, all_hs_len)
    padded = torch.zeros(2, 16000)
    padded[0], padded[1, :8000] = wavs[0], wavs[1]
    with torch.no_grad():
        all_hs, all_len = expert.hidden_states(padded, torch.tensor([16000, 8000]))
    assert all_len.tolist() == [49, 24]
    assert torch.allclose(all_hs[2], states[2], atol=1e-5)
    # fine-tuning the upstream (s3prl -f): gradients flow
    expert.train()
    expert(wavs)["last_hidden_state"].sum().backward()
    assert expert.model.student.layers[0].fc1.weight.grad is not None
