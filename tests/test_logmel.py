"""The log-mel front end option: same frame grid as the official CNN, correct filters, batch == singles."""

import dataclasses
import math

import pytest
import torch

import dinosr
from dinosr.model import dinosr_tiny
from dinosr.model.config import BASE_CONV_LAYERS
from dinosr.model.encoder import FeatureExtractor
from dinosr.model.logmel import LogMelConv, LogMelFrontend, mel_filterbank
from dinosr.model.norm import mean_normalise_frames, normalise_logmel


def micro_logmel_model(**fields):
    """A seeded tiny DinoSR with the log-mel front end, narrowed for speed (``fields`` override)."""
    torch.manual_seed(0)
    return dinosr_tiny(frontend="logmel", embed_dim=32, num_heads=2, ffn_dim=64, pos_conv_groups=4, **fields)


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


@pytest.mark.parametrize(
    ("cmn", "cvn", "conv"), [(False, False, 0), (True, False, 0), (True, True, 0), (True, False, 4)]
)
def test_logmel_model_padded_batch_equals_singles(cmn, cvn, conv):
    model = micro_logmel_model(logmel_cmn=cmn, logmel_cvn=cvn, logmel_conv=conv).eval()
    assert sum(p.numel() for p in model.feature_extractor.parameters()) == 0
    waves = [torch.randn(8000), torch.randn(5120)]
    batch = torch.zeros(2, 8000)
    batch[1, :5120] = waves[1]
    batch[0] = waves[0]
    feats = dinosr.extract_features(model, batch, torch.tensor([8000, 5120]), layers=[0, 4]).features
    for i, wav in enumerate(waves):
        single = dinosr.extract_features(model, wav, layers=[0, 4]).features
        n = single[4].shape[1]
        torch.testing.assert_close(feats[4][i, :n], single[4][0], atol=1e-5, rtol=1e-5)


def test_logmel_model_saves_and_loads(tmp_path):

    model = micro_logmel_model().eval()
    dinosr.save_pretrained(model, tmp_path / "m")
    loaded = dinosr.load_model(tmp_path / "m")
    wav = torch.randn(12000)
    expected = dinosr.extract_features(model, wav, layers=[4]).features[4]
    torch.testing.assert_close(dinosr.extract_features(loaded, wav, layers=[4]).features[4], expected)


def test_logmel_model_trains_and_refuses_hf_export(tmp_path):
    from dinosr.interop.hf import export_hf

    model = micro_logmel_model()
    out = model(torch.randn(2, 16000))
    out.losses.mean().backward()
    assert model.feature_projection.projection.weight.grad is not None
    with pytest.raises(ValueError, match="frontend='logmel'"):
        export_hf(model, tmp_path / "hf")


def test_mean_normalise_frames_against_a_per_utterance_loop():
    x = torch.randn(3, 9, 5, generator=torch.Generator().manual_seed(0))
    lengths = [9, 4, 1]
    padding_mask = torch.arange(9)[None, :] >= torch.tensor(lengths)[:, None]
    out = mean_normalise_frames(x, padding_mask)
    for i, n in enumerate(lengths):
        mean = x[i, :n].mean(0)
        torch.testing.assert_close(out[i], x[i] - mean)  # padded frames shift by the same mean
    torch.testing.assert_close(mean_normalise_frames(x), x - x.mean(1, keepdim=True))


@pytest.mark.parametrize("cvn", [False, True])
def test_logmel_normalisation_removes_a_fixed_transform_per_band(cvn):
    # A band-wise gain is an additive constant on log-mel energies (a fixed channel or a speaker's average
    # spectral envelope): logmel_cmn removes it. logmel_cvn also removes a per-band scale of the log
    # energies (a voice with flatter or more peaked spectral dynamics), which CMN alone keeps.
    model = micro_logmel_model(logmel_cmn=True, logmel_cvn=cvn)
    wav = torch.randn(1, 8000)
    gain = torch.randn(80)
    scale = torch.rand(80) + 0.5 if cvn else torch.ones(80)
    plain_logmel = model.feature_extractor.forward
    reference, _ = model.features(wav)
    model.feature_extractor.forward = lambda waveforms: plain_logmel(waveforms) * scale + gain
    torch.testing.assert_close(model.features(wav)[0], reference, atol=1e-4, rtol=1e-4)
    # without the option that removes it, the transform reaches the features
    off = {"logmel_cvn": False} if cvn else {"logmel_cmn": False}
    model.cfg = dataclasses.replace(model.cfg, **off)
    assert not torch.allclose(model.features(wav)[0], reference, atol=1e-3)


def test_logmel_cmn_needs_the_logmel_front_end():
    with pytest.raises(ValueError, match="logmel_cmn"):
        dinosr_tiny(frontend="conv", logmel_cmn=True)


def test_logmel_cvn_against_a_per_utterance_loop():
    x = 3.0 * torch.randn(3, 9, 5, generator=torch.Generator().manual_seed(1)) + 2.0
    lengths = [9, 4, 2]
    padding_mask = torch.arange(9)[None, :] >= torch.tensor(lengths)[:, None]
    out = normalise_logmel(x, padding_mask, variance=True)
    for i, n in enumerate(lengths):
        valid = x[i, :n]
        expected = (valid - valid.mean(0)) / torch.sqrt(valid.var(0, unbiased=False) + 1e-5)
        torch.testing.assert_close(out[i, :n], expected)
    cmn_only = normalise_logmel(x, padding_mask, variance=False)
    torch.testing.assert_close(cmn_only, mean_normalise_frames(x, padding_mask))


def test_logmel_cvn_needs_logmel_cmn():
    with pytest.raises(ValueError, match="logmel_cvn"):
        dinosr_tiny(frontend="logmel", logmel_cvn=True)


def test_logmel_conv_against_a_per_element_loop():
    torch.manual_seed(0)
    conv = LogMelConv(n_mels=9, channels=2)
    x = torch.randn(1, 5, 9)
    with torch.no_grad():
        out = conv(x)
    assert out.shape == (1, 5, 2 * (9 // 4))
    assert conv.out_dim == 4

    def conv3x3_gelu_pool(h, layer):  # h (C_in, T, F) -> (C_out, T, F // 2), zero padding, written out
        c_in, t_len, f_len = h.shape
        padded = torch.zeros(c_in, t_len + 2, f_len + 2)
        padded[:, 1:-1, 1:-1] = h
        w, b = layer.weight, layer.bias
        y = torch.zeros(w.shape[0], t_len, f_len)
        for c in range(w.shape[0]):
            for t in range(t_len):
                for f in range(f_len):
                    y[c, t, f] = b[c] + (w[c] * padded[:, t : t + 3, f : f + 3]).sum()
        y = torch.nn.functional.gelu(y)
        return torch.stack([torch.maximum(y[:, :, 2 * k], y[:, :, 2 * k + 1]) for k in range(f_len // 2)], -1)

    with torch.no_grad():
        h = conv3x3_gelu_pool(conv3x3_gelu_pool(x[0][None], conv.conv1), conv.conv2)  # (2, 5, 2)
    expected = h.permute(1, 0, 2).reshape(5, 4)  # frame-major, channels then bands
    torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=1e-5)


def test_logmel_conv_sees_two_frames_either_side():
    torch.manual_seed(0)
    conv = LogMelConv(n_mels=8, channels=3)
    x = torch.randn(1, 12, 8)
    bumped = x.clone()
    bumped[0, 6] += 1.0
    with torch.no_grad():
        changed = (conv(bumped) - conv(x)).abs().amax(-1)[0] > 0
    assert changed.tolist() == [t in (4, 5, 6, 7, 8) for t in range(12)]


def test_logmel_conv_model_trains_saves_and_loads(tmp_path):
    model = micro_logmel_model(logmel_cmn=True, logmel_conv=4)
    model(torch.randn(2, 16000)).losses.mean().backward()
    assert model.feature_projection.conv.conv1.weight.grad.abs().sum() > 0
    assert model.feature_projection.projection.in_features == 4 * 20
    model.eval()
    dinosr.save_pretrained(model, tmp_path / "m")
    loaded = dinosr.load_model(tmp_path / "m")
    assert loaded.cfg.logmel_conv == 4
    wav = torch.randn(12000)
    expected = dinosr.extract_features(model, wav, layers=[4]).features[4]
    torch.testing.assert_close(dinosr.extract_features(loaded, wav, layers=[4]).features[4], expected)


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"frontend": "conv"}, "frontend"), ({"n_mels": 3}, "n_mels"), ({"logmel_conv": -1}, ">= 0")],
)
def test_logmel_conv_is_validated(fields, message):
    config = {"frontend": "logmel", "logmel_conv": 8} | fields
    with pytest.raises(ValueError, match=message):
        dinosr_tiny(**config)
