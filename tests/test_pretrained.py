"""save_pretrained / from_pretrained, training-checkpoint loading, and the inference API."""

from __future__ import annotations

import pytest
import torch

import dinosr
from dinosr.cli import main
from dinosr.config import Config
from dinosr.inference import standardize
from dinosr.interop import load_model
from dinosr.model import DinoSR, MaskingConfig, dinosr_tiny, instance_norm_frames


def _model(**kw) -> DinoSR:
    torch.manual_seed(0)
    m = dinosr_tiny(num_layers=2, num_codebook_layers=2, **kw)
    # make the codebooks non-trivial (distinct counts) so loading them wrongly would show
    m.codebooks.counts.uniform_(0.5, 2.0)
    return m.eval()


def _wavs() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(16000, generator=g) * 0.1, torch.randn(7000, generator=g) * 3 + 1]


def _assert_same_model(a: DinoSR, b: DinoSR) -> None:
    assert a.cfg == b.cfg
    assert a.masking_cfg == b.masking_cfg
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    fa, _ = dinosr.extract_features(a, _wavs())
    fb, _ = dinosr.extract_features(b, _wavs())
    for layer in fa:
        assert torch.equal(fa[layer], fb[layer])


def test_save_and_load_pretrained_round_trip(tmp_path):
    model = DinoSR(_model().cfg, MaskingConfig(mask_prob=0.65, mask_length=5))
    model.eval()
    dinosr.save_pretrained(model, tmp_path / "m")
    assert (tmp_path / "m" / "config.json").exists()
    assert (tmp_path / "m" / "model.safetensors").exists()
    loaded = dinosr.load_model(tmp_path / "m")
    assert not loaded.training
    assert not any(p.requires_grad for p in loaded.teacher.parameters())
    _assert_same_model(model, loaded)


def test_training_checkpoint_loads_and_converts(tmp_path):
    model = _model(qkv_bias=False)
    cfg = Config(model=model.cfg, masking=MaskingConfig(min_masks=2))
    torch.save(
        {"step": 7, "model": model.state_dict(), "config": cfg.to_dict(), "optimizer": {}}, tmp_path / "c.pt"
    )
    loaded = load_model(tmp_path / "c.pt")
    assert loaded.masking_cfg.min_masks == 2
    _assert_same_model_weights_and_features(model, loaded)
    assert main(["convert", str(tmp_path / "c.pt"), str(tmp_path / "out")]) == 0
    _assert_same_model_weights_and_features(model, dinosr.load_model(tmp_path / "out"))


def test_training_run_directory_loads_its_newest_checkpoint(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")  # the trainer's config copy is not a pretrained directory
    with pytest.raises(FileNotFoundError, match="holds no checkpoint yet"):
        load_model(run)
    old, new = _model(), _model(qkv_bias=False)
    for step, model in ((100, old), (200, new)):
        state = {"step": step, "model": model.state_dict(), "config": Config(model=model.cfg).to_dict()}
        torch.save(state, run / "checkpoints" / f"checkpoint_{step:08d}.pt")
    _assert_same_model_weights_and_features(new, dinosr.load_model(run))


def _assert_same_model_weights_and_features(a: DinoSR, b: DinoSR) -> None:
    assert a.cfg == b.cfg
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    fa, la = dinosr.extract_features(a, _wavs(), kind="ffn")
    fb, lb = dinosr.extract_features(b, _wavs(), kind="ffn")
    assert torch.equal(la, lb)
    assert all(torch.equal(fa[k], fb[k]) for k in fa)


def test_bare_state_dict_infers_architecture(tmp_path):
    model = _model()
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    loaded = load_model(tmp_path / "sd.pt", num_heads=model.cfg.num_heads)
    _assert_same_model_weights_and_features(model, loaded)


# ----------------------------------------------------------------------------- extract_features / units


def test_features_match_encode_and_layer_conventions():
    model = _model()
    wav = _wavs()[0]
    feats, lengths = dinosr.extract_features(model, wav)
    assert sorted(feats) == [0, 1, 2]
    assert lengths.tolist() == [49]
    enc = model.encode(standardize(wav[None]))
    assert torch.equal(feats[0], enc.layer_input)
    assert torch.equal(feats[2], enc.residuals[1])
    ffn, _ = dinosr.extract_features(model, wav, kind="ffn", layers=[1])
    assert torch.equal(ffn[1], enc.ffn[0])
    with pytest.raises(ValueError, match="out of range"):
        dinosr.extract_features(model, wav, kind="ffn", layers=[0])
    # the input's scale does not matter: standardisation happens inside
    scaled, _ = dinosr.extract_features(model, wav * 7 + 2, layers=[2])
    assert torch.allclose(scaled[2], feats[2], atol=1e-4)


@pytest.mark.parametrize("kind", ["hidden", "ffn"])
def test_padded_batch_equals_single_utterances(kind):
    model = _model()
    wavs = _wavs()
    batch, lengths = dinosr.extract_features(model, wavs, kind=kind)
    for i, w in enumerate(wavs):
        single, n = dinosr.extract_features(model, w, kind=kind)
        assert int(lengths[i]) == int(n[0])
        for layer in batch:
            assert torch.allclose(batch[layer][i, : n[0]], single[layer][0], atol=1e-4)
            assert not batch[layer][i, n[0] :].any()  # padded frames are zero


@pytest.mark.parametrize("source", ["codebook", "head"])
def test_units_batch_equals_single_and_dedup(source):
    model = _model()
    wavs = _wavs()
    batch = dinosr.units(model, wavs, layer=2, source=source)
    for i, w in enumerate(wavs):
        assert torch.equal(batch.units[i], dinosr.units(model, w, layer=2, source=source).units[0])
    dd = dinosr.units(model, wavs, layer=2, source=source, dedup=True)
    for full, vals, durs in zip(batch.units, dd.units, dd.durations):
        assert int(durs.sum()) == len(full)
        assert torch.equal(torch.repeat_interleave(vals, durs), full)
    with pytest.raises(ValueError, match="no codebook"):
        dinosr.units(model, wavs, layer=0)


def test_codebook_units_are_the_training_targets():
    model = _model()
    wav = standardize(_wavs()[0][None])
    enc = model.encode(wav, teacher=True)
    k = model.cfg.codebook_layers.index(2)
    targets = torch.stack([instance_norm_frames(f)[0] for f in enc.ffn[-2:]])  # (K, T, D)
    expected = model.codebooks.assign(targets)[k]
    assert torch.equal(dinosr.units(model, _wavs()[0], layer=2).units[0], expected)
    head = model.heads[k](enc.residuals[-1]).argmax(-1)[0]  # teacher==student at init (copy)
    assert torch.equal(dinosr.units(model, _wavs()[0], layer=2, source="head").units[0], head)


def test_api_restores_training_mode():
    model = _model().train()
    dinosr.extract_features(model, _wavs()[0])
    assert model.training


def test_chunked_equals_whole_when_the_file_fits_and_is_close_otherwise():
    model = _model()
    g = torch.Generator().manual_seed(3)
    wav = torch.randn(16000 * 8, generator=g)
    whole, n = dinosr.extract_features(model, wav, chunk_seconds=None)
    same, _ = dinosr.extract_features(model, wav, chunk_seconds=6.0, context_seconds=1.0)  # 8 s <= 6 + 2 x 1
    assert all(torch.equal(whole[k], same[k]) for k in whole)
    chunked, m = dinosr.extract_features(model, wav, chunk_seconds=2.0, context_seconds=1.0)
    assert torch.equal(n, m)
    # layer 0: CNN frames are exact, the positional conv (+-45 frames) fits in 1 s of context
    assert torch.allclose(chunked[0], whole[0], atol=1e-4)
    for k in (1, 2):  # attention sees only the window: small differences (docs/usage.md)
        cos = torch.nn.functional.cosine_similarity(chunked[k][0], whole[k][0], dim=-1)
        assert cos.min() > 0.999, (k, cos.min())
    u_whole = dinosr.units(model, wav, layer=2, chunk_seconds=None).units[0]
    u_chunk = dinosr.units(model, wav, layer=2, chunk_seconds=2.0, context_seconds=1.0).units[0]
    assert len(u_whole) == len(u_chunk)
    assert (u_whole == u_chunk).float().mean() > 0.95
