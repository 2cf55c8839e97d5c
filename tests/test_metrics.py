"""Unit-quality metrics against hand-computed values (ECOSYSTEM b.1)."""

import math

import numpy as np
import pytest

from dinosr.evaluate.metrics import (
    bitrate,
    joint_counts,
    labels_to_ids,
    match_frame_rates,
    quality_from_counts,
    unit_quality,
)

# 2 phones x 3 units, N = 8 frames.
COUNTS = np.array([[2, 1, 0], [0, 1, 4]])


def test_purities_hand_computed():
    q = quality_from_counts(COUNTS)
    # phone purity: column maxima 2 + 1 + 4 over 8; cluster purity: row maxima 2 + 4 over 8.
    assert q["phone_purity"] == pytest.approx(7 / 8)
    assert q["cluster_purity"] == pytest.approx(6 / 8)
    assert q["active_units"] == 3
    assert q["num_frames"] == 8


def test_pnmi_hand_computed():
    q = quality_from_counts(COUNTS)
    # p(y) = (3/8, 5/8), p(z) = (2/8, 2/8, 4/8)
    mi = (
        2 / 8 * math.log((2 / 8) / (3 / 8 * 2 / 8))
        + 1 / 8 * math.log((1 / 8) / (3 / 8 * 2 / 8))
        + 1 / 8 * math.log((1 / 8) / (5 / 8 * 2 / 8))
        + 4 / 8 * math.log((4 / 8) / (5 / 8 * 4 / 8))
    )
    h_y = -(3 / 8 * math.log(3 / 8) + 5 / 8 * math.log(5 / 8))
    h_z = -(2 * 2 / 8 * math.log(2 / 8) + 4 / 8 * math.log(4 / 8))
    assert q["mutual_info"] == pytest.approx(mi)
    assert q["phone_entropy"] == pytest.approx(h_y)
    assert q["pnmi"] == pytest.approx(mi / h_y)
    assert q["unit_perplexity"] == pytest.approx(math.exp(h_z))


def test_pnmi_extremes_and_unused_units():
    # Units identical to phones (plus an unused unit): PNMI 1, both purities 1.
    q = quality_from_counts(np.array([[5, 0, 0], [0, 3, 0]]))
    assert q["pnmi"] == pytest.approx(1.0)
    assert q["phone_purity"] == pytest.approx(1.0)
    assert q["cluster_purity"] == pytest.approx(1.0)
    assert q["active_units"] == 2
    # Independent units and phones: PNMI 0.
    q = quality_from_counts(np.outer([1, 3], [2, 2]))
    assert q["pnmi"] == pytest.approx(0.0, abs=1e-12)
    assert q["phone_purity"] == pytest.approx(3 / 4)
    assert q["cluster_purity"] == pytest.approx(1 / 2)


def test_units_20ms_repeated_against_10ms_labels():
    units = [np.array([0, 0, 1, 2, 2])]  # 5 x 20 ms = 10 x 10 ms
    labels = [np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1])]  # 11 frames: one frame too many, trimmed
    counts = joint_counts(units, labels, num_units=4, unit_step=0.02, label_step=0.01)
    # repeated units: 0 0 0 0 1 1 2 2 2 2 against labels 0 0 0 1 1 1 1 1 1 1
    expected = np.array([[3, 0, 0, 0], [1, 2, 4, 0]])
    np.testing.assert_array_equal(counts, expected)


def test_same_rate_and_coarser_labels():
    u, y = match_frame_rates(np.array([1, 2, 3, 4]), np.array([7, 8]), unit_step=0.01, label_step=0.02)
    np.testing.assert_array_equal(u, [1, 2, 3, 4])
    np.testing.assert_array_equal(y, [7, 7, 8, 8])
    u, y = match_frame_rates(np.array([1, 2, 3]), np.array([5, 6]), unit_step=0.02, label_step=0.02)
    np.testing.assert_array_equal(u, [1, 2])
    np.testing.assert_array_equal(y, [5, 6])


def test_length_mismatch_rule():
    units = np.zeros(5, dtype=np.int64)
    # 5 units x2 = 10 label frames; 12 labels = mismatch 2 (allowed), 13 = mismatch 3 (raises).
    u, y = match_frame_rates(units, np.zeros(12), unit_step=0.02, label_step=0.01)
    assert len(u) == len(y) == 10
    with pytest.raises(ValueError, match="mismatch"):
        match_frame_rates(units, np.zeros(13), unit_step=0.02, label_step=0.01)
    with pytest.raises(ValueError, match="multiples"):
        match_frame_rates(units, np.zeros(10), unit_step=0.02, label_step=0.015)


def test_bitrate_deduplicates():
    # 3 segments in 5 frames of 20 ms = 30 units/s, log2(4) = 2 bits each.
    assert bitrate([np.array([0, 0, 1, 2, 2])], num_units=4) == pytest.approx(60.0)
    # Repeats do not carry over utterance boundaries: 2 + 1 segments in 4 frames.
    assert bitrate([np.array([1, 2]), np.array([2, 2])], num_units=256) == pytest.approx(8 * 3 / 0.08)


def test_unit_quality_bundle_matches_parts():
    rng = np.random.default_rng(0)
    units = [rng.integers(0, 8, size=n) for n in (10, 17, 5)]
    labels = [rng.integers(0, 3, size=2 * len(u) + 1) for u in units]
    q = unit_quality(units, labels, num_units=8, num_phones=4, unit_step=0.02, label_step=0.01)
    counts = joint_counts(units, labels, num_units=8, num_phones=4, unit_step=0.02, label_step=0.01)
    np.testing.assert_array_equal(q["counts"], counts)
    assert counts.shape == (4, 8)
    assert counts.sum() == 2 * (10 + 17 + 5)
    assert q["pnmi"] == pytest.approx(quality_from_counts(counts)["pnmi"])
    assert q["bitrate"] == pytest.approx(bitrate(units, num_units=8))
    # The brute-force count of (phone, unit) pairs agrees with the bincount.
    brute = np.zeros((4, 8), dtype=np.int64)
    for u, y in zip(units, labels):
        for t in range(2 * len(u)):
            brute[y[t], u[t // 2]] += 1
    np.testing.assert_array_equal(counts, brute)


def test_out_of_range_units_raise():
    with pytest.raises(ValueError, match="units must lie"):
        joint_counts([np.array([0, 5])], [np.array([0, 1])], num_units=4)


def test_labels_to_ids():
    ids, phones = labels_to_ids([["b", "a", "a"], ["sil"]])
    assert phones == ["a", "b", "sil"]
    np.testing.assert_array_equal(ids[0], [1, 0, 0])
    with pytest.raises(ValueError, match="not in the phone inventory"):
        labels_to_ids([["x"]], phones=["a"])
