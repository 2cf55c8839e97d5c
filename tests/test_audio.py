"""load_audio: resampling, mixdown, standardisation, and every kind of bad file made for real."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf

from dinosr.data import audio
from dinosr.data.audio import AudioError, load_audio, standardize


def _sine(freq, rate, seconds=1.0):
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(wav, rate):
    spectrum = np.abs(np.fft.rfft(wav))
    return np.argmax(spectrum) * rate / len(wav)


def test_resample_8k_sine(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(audio, "_resample_noted", False)
    path = tmp_path / "s.wav"
    sf.write(path, _sine(440, 8000), 8000, subtype="PCM_16")
    with caplog.at_level(logging.INFO, logger="dinosr.data.audio"):
        wav = load_audio(path, normalize=False)
        load_audio(path)
    assert wav.dtype == np.float32
    assert wav.shape == (16000,)
    assert abs(_peak_hz(wav, 16000) - 440) < 2
    assert np.abs(wav).max() == pytest.approx(0.5, abs=0.02)
    assert caplog.text.count("resampling") == 1  # one-time note


def test_wrong_rate_without_resampling(tmp_path):
    path = tmp_path / "s.wav"
    sf.write(path, _sine(440, 8000), 8000)
    with pytest.raises(AudioError, match="sample rate 8000 Hz, expected 16000 Hz"):
        load_audio(path, resample_audio=False)


def test_stereo_mixdown(tmp_path):
    left, right = _sine(300, 16000), _sine(700, 16000)
    path = tmp_path / "st.flac"
    sf.write(path, np.stack([left, right], axis=1), 16000)
    wav = load_audio(path, normalize=False)
    assert wav.shape == (16000,)
    np.testing.assert_allclose(wav, (left + right) / 2, atol=1e-4)


def test_standardize_matches_layer_norm(tmp_path):
    import torch

    x = np.random.default_rng(0).standard_normal(5000).astype(np.float32) * 3 + 1
    ref = torch.nn.functional.layer_norm(torch.from_numpy(x), (5000,)).numpy()
    np.testing.assert_allclose(standardize(x), ref, atol=1e-5)
    sf.write(tmp_path / "x.wav", x / np.abs(x).max(), 16000, subtype="FLOAT")
    y = load_audio(tmp_path / "x.wav")
    assert abs(float(y.mean())) < 1e-5
    assert abs(float(y.std()) - 1) < 1e-4


def _wav_bytes(tmp_path):
    sf.write(tmp_path / "good.wav", _sine(200, 16000), 16000, subtype="PCM_16")
    return (tmp_path / "good.wav").read_bytes()


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("missing", "file not found"),
        ("empty", r"empty file \(0 bytes\)"),
        ("header_only", r"no audio samples \(header only\)"),
        ("truncated_wav", "truncated or changed: the manifest says 16000 samples"),
        ("truncated_flac", "corrupt or truncated"),
        ("random_bytes", "unsupported or corrupt audio format"),
        ("directory", "is a directory"),
    ],
)
def test_bad_files_name_file_and_problem(tmp_path, kind, problem):
    data = _wav_bytes(tmp_path)
    path = tmp_path / f"{kind}.wav"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "header_only":
        path.write_bytes(data[:44])
    elif kind == "truncated_wav":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated_flac":
        sf.write(tmp_path / "g.flac", np.random.default_rng(0).uniform(-1, 1, 16000), 16000)
        path = tmp_path / f"{kind}.flac"
        full = (tmp_path / "g.flac").read_bytes()
        path.write_bytes(full[: len(full) // 2])
    elif kind == "random_bytes":
        path.write_bytes(np.random.default_rng(1).bytes(4000))
    elif kind == "directory":
        path.mkdir()
    with pytest.raises(AudioError, match=problem) as info:
        load_audio(path, expected_samples=16000)
    assert str(info.value).startswith(str(path))
    assert info.value.path == str(path)
