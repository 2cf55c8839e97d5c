"""Baselines: MFCC frame alignment with the model's conv frames; k-means fit/predict/save/load."""

import numpy as np
import pytest
import torch

from dinosr.evaluate.baselines import KMeansQuantizer, mfcc_features, require


def _conv_frames(num_samples):
    """DinoSR conv feature extractor output length (spec 3.2), layer by layer."""
    n = num_samples
    for kernel, stride in [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2:
        n = (n - kernel) // stride + 1
    return n


@pytest.mark.parametrize("num_samples", [400, 719, 720, 1234, 16000, 16321])
def test_mfcc_shape_matches_model_frames(num_samples):
    wav = np.random.default_rng(0).normal(size=num_samples).astype(np.float32)
    feats = mfcc_features(wav, 16000)
    assert feats.shape == (_conv_frames(num_samples), 39)
    assert feats.dtype == np.float32
    assert np.isfinite(feats).all()


def test_mfcc_frame_i_covers_samples_320i_to_320i_plus_400():
    rng = np.random.default_rng(1)
    wav = 1e-4 * rng.normal(size=16000).astype(np.float32)
    wav[320 * 7 : 320 * 7 + 400] += rng.normal(size=400).astype(np.float32)  # burst = frame 7's window
    c0 = mfcc_features(wav)[:, 0]  # first cepstral coefficient tracks log energy
    assert int(np.argmax(c0)) == 7
    # Frames 6 and 8 overlap the burst by 80 samples only; frames 5 and 9 not at all.
    assert c0[7] > c0[6] > c0[5]
    assert c0[7] > c0[8] > c0[9]


def test_mfcc_short_and_wrong_rate():
    assert mfcc_features(np.zeros(399)).shape == (0, 39)
    with pytest.raises(ValueError, match="16000"):
        mfcc_features(np.zeros(8000), 8000)


def _blobs(rng, centres, n):
    lab = rng.integers(0, len(centres), size=n)
    return centres[lab] + 0.05 * rng.normal(size=(n, centres.shape[1])), lab


def test_kmeans_defaults_are_hubert_settings():
    q = KMeansQuantizer(256)
    assert q.kwargs == {
        "init": "k-means++",
        "random_state": 0,
        "n_init": 20,
        "max_iter": 100,
        "batch_size": 10000,
        "tol": 0.0,
        "max_no_improvement": 100,
        "reassignment_ratio": 0.0,
        "init_size": None,
        "compute_labels": False,
    }


def test_kmeans_fit_predict_save_load(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 5)) * 4
    x, lab = _blobs(rng, centres, 600)
    q = KMeansQuantizer(4, n_init=2, batch_size=256, seed=1).fit([x[:300], x[300:]])
    # Each true blob maps to exactly one unit.
    pred = q.predict(x)
    assert len({(a, b) for a, b in zip(lab, pred)}) == 4
    # Nearest-centroid reference by brute force.
    c = q.centroids.numpy()
    ref = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(pred, ref)
    assert np.allclose(np.sort(c, axis=0), np.sort(centres, axis=0), atol=0.1)

    path = tmp_path / "km.safetensors"
    q.save(path)
    loaded = KMeansQuantizer.load(path)
    assert torch.equal(loaded.centroids, q.centroids)
    np.testing.assert_array_equal(loaded.predict(x), pred)
    # A plain tensor written with torch.save also loads (weights_only).
    plain = tmp_path / "km.pt"
    torch.save(q.centroids.clone(), plain)
    assert torch.equal(KMeansQuantizer.load(plain).centroids, q.centroids)


def test_kmeans_unfitted_raises():
    with pytest.raises(RuntimeError, match="not fitted"):
        KMeansQuantizer(3).predict(np.zeros((2, 2)))


def test_missing_optional_dependency_names_the_extra():
    with pytest.raises(ImportError, match=r"dinosr\[eval\]"):
        require("surely_not_a_real_module_xyz", "testing")


def test_evaluate_package_imports_no_optional_dependency():
    import subprocess
    import sys

    code = (
        "import sys, dinosr.evaluate as e; e.unit_quality; e.abx_error; e.linear_probe; e.KMeansQuantizer;"
        "print(any(m in sys.modules for m in ('sklearn', 'librosa')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
