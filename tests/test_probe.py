"""Linear phone probe: collapse, edit distance against a reference DP, accuracy/PER on synthetic data."""

import itertools

import numpy as np
import pytest

from dinosr.evaluate import probe
from dinosr.evaluate.probe import collapse, edit_distance, linear_probe


def _levenshtein_full_table(a, b):
    """Textbook full-table Levenshtein, the reference for both implementations."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i, j in itertools.product(range(1, len(a) + 1), range(1, len(b) + 1)):
        d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return d[-1][-1]


def test_collapse():
    assert collapse([1, 1, 0, 0, 1, 2, 2]) == [1, 0, 1, 2]
    # Repeats are merged before dropping silence (0): 1 0 1 stays two 1s.
    assert collapse([1, 1, 0, 1, 2, 2, 0], ignore=[0]) == [1, 1, 2]
    assert collapse([]) == []


def test_edit_distance_hand_and_reference():
    assert edit_distance([1, 2, 3], [1, 3]) == 1
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], [4, 5]) == 2
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = rng.integers(0, 4, size=rng.integers(0, 9)).tolist()
        b = rng.integers(0, 4, size=rng.integers(0, 9)).tolist()
        want = _levenshtein_full_table(a, b)
        assert edit_distance(a, b) == want
        assert probe._edit_distance_dp(a, b) == want


def _synthetic(rng, centres, utts, noise):
    feats, labels = [], []
    for _ in range(utts):
        lab = np.repeat(rng.integers(0, len(centres), size=12), rng.integers(1, 5, size=12))
        feats.append(centres[lab] + noise * rng.normal(size=(len(lab), centres.shape[1])))
        labels.append(lab)
    return feats, labels


def test_probe_separable_and_chance():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16)) * 3 + 10.0  # offset: standardisation matters
    tr_f, tr_y = _synthetic(rng, centres, 20, 0.3)
    te_f, te_y = _synthetic(rng, centres, 10, 0.3)
    res = linear_probe(tr_f, tr_y, te_f, te_y, epochs=30, batch_size=256, lr=0.05)
    assert res.accuracy == 1.0
    assert res.per == 0.0
    assert res.num_test_frames == sum(len(y) for y in te_y)
    # Random features: about chance accuracy (1/5) and a large PER.
    noise_tr = [rng.normal(size=f.shape) for f in tr_f]
    noise_te = [rng.normal(size=f.shape) for f in te_f]
    res = linear_probe(noise_tr, tr_y, noise_te, te_y, epochs=5, batch_size=256)
    assert res.accuracy < 0.4
    assert res.per > 0.5


def test_probe_per_matches_manual_computation():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 8))
    tr_f, tr_y = _synthetic(rng, centres, 10, 1.0)
    te_f, te_y = _synthetic(rng, centres, 5, 1.0)
    res = linear_probe(tr_f, tr_y, te_f, te_y, epochs=3, ignore=[0], seed=3)
    preds = [res.predict(f) for f in te_f]
    edits = sum(_levenshtein_full_table(collapse(y, [0]), collapse(p, [0])) for y, p in zip(te_y, preds))
    assert res.per == pytest.approx(edits / sum(len(collapse(y, [0])) for y in te_y))
    acc = np.mean(np.concatenate([p == y for p, y in zip(preds, te_y)]))
    assert res.accuracy == pytest.approx(acc)
    # Same seed, same probe.
    again = linear_probe(tr_f, tr_y, te_f, te_y, epochs=3, ignore=[0], seed=3)
    assert again.per == res.per
    assert again.accuracy == res.accuracy


def test_probe_trims_small_mismatch_and_rejects_large():
    f = [np.zeros((10, 3)), np.ones((10, 3))]
    y = [np.zeros(11, dtype=int), np.ones(9, dtype=int)]
    res = linear_probe(f, y, f, y, epochs=1)
    assert res.num_train_frames == 19
    with pytest.raises(ValueError, match="differ by"):
        linear_probe(f, [np.zeros(20, dtype=int), y[1]], f, y)
