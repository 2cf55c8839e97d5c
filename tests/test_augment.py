"""Speed perturbation against a reference: a sine resampled by linear interpolation of its own formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dinosr.data.augment import speed_perturb


def _sine(freq: float, seconds: float, rate: int = 16000) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate).astype(np.float32)


def test_speed_perturb_matches_the_sped_up_signal():
    """Each row sped up by f: length L / f and the content of x(f t), here a 220 Hz sine -> 220 f Hz."""
    rate = 16000
    long, short = _sine(220.0, 1.0), _sine(220.0, 0.5)
    wav = torch.zeros(2, len(long))
    wav[0], wav[1, : len(short)] = torch.from_numpy(long), torch.from_numpy(short)
    lengths = torch.tensor([len(long), len(short)])
    torch.manual_seed(0)
    out, new_lengths = speed_perturb(wav, lengths, (0.8, 1.25), sample_rate=rate)
    torch.manual_seed(0)
    factors = torch.empty(2, dtype=torch.float64).uniform_(0.8, 1.25).numpy()
    assert not np.allclose(factors, 1.0)
    for row, (n, f) in enumerate(zip(lengths.tolist(), factors)):
        expected_len = n / f
        assert abs(int(new_lengths[row]) - expected_len) <= 1
        reference = np.sin(2 * np.pi * 220.0 * f * np.arange(int(new_lengths[row])) / rate)
        got = out[row, : int(new_lengths[row])].numpy()
        inner = slice(200, len(got) - 200)  # the resampler's filter edges
        np.testing.assert_allclose(got[inner], reference[inner], atol=2e-2)
        assert torch.all(out[row, int(new_lengths[row]) :] == 0)  # padding stays zero
    assert out.shape[1] == int(new_lengths.max())


def test_speed_perturb_draws_from_the_global_rng():
    """Same seed, same factors (exact resume restores the torch RNG); another seed, other lengths."""
    wav, lengths = torch.randn(3, 8000), torch.tensor([8000, 6000, 4000])
    torch.manual_seed(3)
    a = speed_perturb(wav, lengths, (0.9, 1.1))
    torch.manual_seed(3)
    b = speed_perturb(wav, lengths, (0.9, 1.1))
    torch.manual_seed(4)
    c = speed_perturb(wav, lengths, (0.9, 1.1))
    assert torch.equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_unit_range_is_the_identity():
    wav, lengths = torch.randn(2, 5000), torch.tensor([5000, 3000])
    wav[1, 3000:] = 0
    out, new_lengths = speed_perturb(wav, lengths, (1.0, 1.0))
    assert torch.equal(out, wav)
    assert torch.equal(new_lengths, lengths)


@pytest.mark.parametrize("bad", [[0.9], [1.1, 0.9], [0.3, 1.0], [0.9, 1.0, 1.1]])
def test_config_rejects_a_bad_range(bad):
    from dinosr.config import from_plain
    from dinosr.errors import ConfigError
    from dinosr.train.finetune_config import FinetuneConfig

    with pytest.raises((ConfigError, ValueError), match="speed_perturb"):
        from_plain(FinetuneConfig, {"data": {"speed_perturb": bad}}, source="test")
