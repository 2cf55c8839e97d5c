"""The log-mel front end option: same frame grid as the official CNN, correct filters, batch == singles."""

import math

import pytest
import torch

from dinosr.model import dinosr_tiny
from dinosr.model.config import BASE_CONV_LAYERS
from dinosr.model.encoder import FeatureExtractor
from dinosr.model.logmel import LogMelFrontend, mel_filterbank


def test_frame_grid_equals_the_official_cnn():
    frontend, cnn = LogMelFrontend(80), FeatureExtractor(BASE_CONV_LAYERS)
    lengths = torch.arange(0, 5000, 7)
    torch.testing.assert_close(frontend.output_lengths(lengths), cnn.output_lengths(lengths))
    for n in (400, 719, 720, 16000, 16001):
        assert frontend(torch.randn(1, n)).shape == (1, int(cnn.output_lengths(torch.tensor([n]))[0]), 80)


def test_filterbank_matches_librosa_htk():
    librosa = pytest.importorskip("librosa")  # in the [eval]/[test] extras
    ours = mel_filterbank(512, 40, 16000).T.numpy()
    ref = librosa.filters.mel(sr=16000, n_fft=512, n_mels=40, htk=True, norm=None)
    assert ours.shape == ref.shape
    assert abs(ours - ref).max() < 1e-4


def test_a_tone_lights_up_its_mel_band():
    sr, f0 = 16000, 1000.0
    t = torch.arange(sr) / sr
    logmel = LogMelFrontend(40)(torch.sin(2 * math.pi * f0 * t)[None])[0]  # (T, 40)
    peak_band = int(logmel.mean(0).argmax())
    filters = mel_filterbank(512, 40, sr)
    bin_1k = round(f0 / (sr / 512))
    assert peak_band == int(filters[bin_1k].argmax())


def test_logmel_model_padded_batch_equals_singles():
    torch.manual_seed(0)
    model = dinosr_tiny(frontend="logmel", embed_dim=32, num_heads=2, ffn_dim=64, pos_conv_groups=4).eval()
    assert sum(p.numel() for p in model.feature_extractor.parameters()) == 0
    waves = [torch.randn(8000), torch.randn(5120)]
    batch = torch.zeros(2, 8000)
    batch[1, :5120] = waves[1]
    batch[0] = waves[0]
    feats = model.extract_features(batch, torch.tensor([8000, 5120]), layers=[0, 4]).features
    for i, wav in enumerate(waves):
        single = model.extract_features(wav, layers=[0, 4]).features
        n = single[4].shape[1]
        torch.testing.assert_close(feats[4][i, :n], single[4][0], atol=1e-5, rtol=1e-5)


def test_logmel_model_saves_and_loads(tmp_path):
    from dinosr.model import DinoSR

    torch.manual_seed(0)
    model = dinosr_tiny(frontend="logmel", embed_dim=32, num_heads=2, ffn_dim=64, pos_conv_groups=4).eval()
    model.save_pretrained(tmp_path / "m")
    loaded = DinoSR.from_pretrained(tmp_path / "m")
    wav = torch.randn(12000)
    expected = model.extract_features(wav, layers=[4]).features[4]
    torch.testing.assert_close(loaded.extract_features(wav, layers=[4]).features[4], expected)


def test_logmel_model_trains_and_refuses_hf_export(tmp_path):
    from dinosr.interop.hf import export_hf

    torch.manual_seed(0)
    model = dinosr_tiny(frontend="logmel", embed_dim=32, num_heads=2, ffn_dim=64, pos_conv_groups=4)
    out = model(torch.randn(2, 16000))
    out.losses.mean().backward()
    assert model.feature_projection.projection.weight.grad is not None
    with pytest.raises(ValueError, match="frontend='logmel'"):
        export_hf(model, tmp_path / "hf")


def test_warp_spectrum_matches_a_loop_reference():
    from dinosr.model.logmel import warp_spectrum

    g = torch.Generator().manual_seed(0)
    spectrum = torch.rand(2, 3, 9, generator=g)
    warp = torch.tensor([1.25, 0.8])
    got = warp_spectrum(spectrum, warp)
    for b in range(2):
        for f in range(9):
            src = min(f / float(warp[b]), 8.0)
            lo = min(math.floor(src), 7)
            frac = src - lo
            expected = spectrum[b, :, lo] * (1 - frac) + spectrum[b, :, lo + 1] * frac
            torch.testing.assert_close(got[b, :, f], expected)
    torch.testing.assert_close(warp_spectrum(spectrum, torch.ones(2)), spectrum)


def test_student_warp_changes_only_the_student_view():
    from dinosr.model.config import ModelConfig  # noqa: F401  (config validation below)

    with pytest.raises(ValueError, match="needs frontend='logmel'"):
        dinosr_tiny(student_warp=0.1)
    quiet = {"frontend": "logmel", "dropout": 0.0, "attention_dropout": 0.0, "layerdrop": 0.0}
    torch.manual_seed(0)
    plain = dinosr_tiny(**quiet)
    torch.manual_seed(0)
    warped = dinosr_tiny(student_warp=0.2, **quiet)
    wav = torch.randn(2, 16000, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(2, 49, dtype=torch.bool)
    mask[:, 5:25] = True
    a, b = plain.train()(wav, mask=mask), warped.train()(wav, mask=mask)
    assert torch.equal(a.codes, b.codes)  # the teacher's targets come from the unwarped audio
    assert not torch.allclose(a.losses, b.losses)  # the student saw another view
    # Inference never warps.
    torch.testing.assert_close(plain.eval()(wav, mask=mask).losses, warped.eval()(wav, mask=mask).losses)
