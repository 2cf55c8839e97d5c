"""Unit-quality metrics: phone purity, cluster purity, PNMI, active units, perplexity, bitrate.

Definitions follow ECOSYSTEM.md section b.1 (HuBERT's `measure_teacher_quality.py`, spidr's
`units_quality`). Everything derives from one joint count matrix ``counts[y, z]`` (phones x units)
over all paired frames of all utterances, so a report can plot the same matrix the numbers come from:

* ``p(y, z) = counts / N``, ``p(y) = sum_z p(y, z)``, ``p(z) = sum_y p(y, z)``
* phone purity   = ``sum_z max_y p(y, z)``   (frame accuracy of the unit -> majority-phone map)
* cluster purity = ``sum_y max_z p(y, z)``   (how concentrated each phone is on one unit)
* PNMI           = ``I(y; z) / H(y)``
* active units   = units with at least one paired frame
* unit perplexity = ``exp(H(z))`` over the paired frames
* bitrate        = ``log2(K) * deduplicated units per second`` (spidr), K = codebook size

Frame rates: units and labels may come at different steps (20 ms units vs 10 ms alignments). The
coarser sequence is repeated ``step ratio`` times (spidr / fairseq ``upsample=2``); a remaining length
difference of at most ``max_mismatch`` frames (at the finer step) is trimmed from the end of the longer
sequence, a larger one raises, as spidr refuses such utterances (fairseq silently truncates).

All functions are pure, take numpy arrays and return numpy arrays or floats.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "bitrate",
    "joint_counts",
    "labels_to_ids",
    "match_frame_rates",
    "quality_from_counts",
    "unit_quality",
]


def _step_ratio(coarse: float, fine: float) -> int:
    ratio = coarse / fine
    r = round(ratio)
    if r < 1 or abs(ratio - r) > 1e-6:
        raise ValueError(f"frame steps must be integer multiples of each other, got {coarse} and {fine}")
    return r


def match_frame_rates(
    units: np.ndarray,
    labels: np.ndarray,
    *,
    unit_step: float = 0.02,
    label_step: float = 0.02,
    max_mismatch: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Bring one utterance's units and frame labels to a common frame rate and length.

    The coarser sequence is repeated (20 ms units against 10 ms labels: each unit twice), then both are
    cut to the shorter length if they differ by at most ``max_mismatch`` frames of the finer step.

    Args:
        units: (T_u,) unit per frame (or (T_u, D) features: rows are repeated the same way).
        labels: (T_l,) phone id per frame.
        unit_step, label_step: frame steps in seconds; one must be an integer multiple of the other.
        max_mismatch: largest tolerated length difference, in frames of the finer step.

    Returns:
        (units, labels) with equal first dimension.

    Raises:
        ValueError: when the lengths differ by more than ``max_mismatch`` after repetition.
    """
    units = np.asarray(units)
    labels = np.asarray(labels)
    if unit_step >= label_step:
        units = np.repeat(units, _step_ratio(unit_step, label_step), axis=0)
    else:
        labels = np.repeat(labels, _step_ratio(label_step, unit_step), axis=0)
    diff = abs(len(units) - len(labels))
    if diff > max_mismatch:
        raise ValueError(
            f"length mismatch of {diff} frames (units {len(units)}, labels {len(labels)} at the finer step) "
            f"exceeds max_mismatch={max_mismatch}: are the frame steps right?"
        )
    n = min(len(units), len(labels))
    return units[:n], labels[:n]


def labels_to_ids(
    labels: Sequence[Sequence[str]], phones: Sequence[str] | None = None
) -> tuple[list[np.ndarray], list[str]]:
    """Map per-frame phone strings to integer ids.

    Args:
        labels: one sequence of phone symbols per utterance.
        phones: the phone inventory (id = position); default: sorted set of the symbols seen.

    Returns:
        (ids per utterance as int64 arrays, phone inventory).
    """
    if phones is None:
        phones = sorted({p for utt in labels for p in utt})
    index = {p: i for i, p in enumerate(phones)}
    try:
        ids = [np.array([index[p] for p in utt], dtype=np.int64) for utt in labels]
    except KeyError as e:
        raise ValueError(f"phone {e.args[0]!r} is not in the phone inventory") from None
    return ids, list(phones)


def joint_counts(
    units: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    num_units: int,
    num_phones: int | None = None,
    unit_step: float = 0.02,
    label_step: float = 0.02,
    max_mismatch: int = 2,
) -> np.ndarray:
    """Phone x unit co-occurrence counts over all frames of all utterances.

    Args:
        units: per utterance, (T_u,) integer units in [0, num_units).
        labels: per utterance, (T_l,) integer phone ids in [0, num_phones).
        num_units: codebook / k-means size K (columns, including never-used units).
        num_phones: number of phone classes P; default max label + 1.
        unit_step, label_step, max_mismatch: see `match_frame_rates`.

    Returns:
        (P, K) int64 counts; ``counts[y, z]`` = frames with phone y and unit z.
    """
    if len(units) != len(labels):
        raise ValueError(f"{len(units)} unit sequences but {len(labels)} label sequences")
    pairs = [
        match_frame_rates(u, y, unit_step=unit_step, label_step=label_step, max_mismatch=max_mismatch)
        for u, y in zip(units, labels)
    ]
    zs = np.concatenate([p[0] for p in pairs]).astype(np.int64) if pairs else np.zeros(0, np.int64)
    ys = np.concatenate([p[1] for p in pairs]).astype(np.int64) if pairs else np.zeros(0, np.int64)
    if num_phones is None:
        num_phones = int(ys.max()) + 1 if len(ys) else 0
    if len(zs) and (zs.min() < 0 or zs.max() >= num_units):
        raise ValueError(f"units must lie in [0, {num_units}), got range [{zs.min()}, {zs.max()}]")
    if len(ys) and (ys.min() < 0 or ys.max() >= num_phones):
        raise ValueError(f"labels must lie in [0, {num_phones}), got range [{ys.min()}, {ys.max()}]")
    flat = np.bincount(ys * num_units + zs, minlength=num_phones * num_units)
    return flat.reshape(num_phones, num_units)


def _entropy(p: np.ndarray) -> float:
    """Shannon entropy in nats, with 0 log 0 = 0."""
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def quality_from_counts(counts: np.ndarray) -> dict[str, float]:
    """Purity, PNMI, entropies, active units and perplexity from a (P, K) joint count matrix.

    Returns:
        dict with ``phone_purity``, ``cluster_purity``, ``pnmi``, ``mutual_info`` (nats),
        ``phone_entropy`` H(y) and ``unit_entropy`` H(z) (nats), ``active_units``,
        ``unit_perplexity`` = exp(H(z)), ``num_frames``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum()
    if n <= 0:
        raise ValueError("no paired frames to evaluate")
    pyz = counts / n
    py = pyz.sum(1)
    pz = pyz.sum(0)
    nz = pyz > 0
    # I(y; z) = sum p(y,z) log(p(y,z) / (p(y) p(z))) over the non-zero cells only (0 log 0 = 0).
    outer = np.outer(py, pz)
    mi = float((pyz[nz] * np.log(pyz[nz] / outer[nz])).sum())
    h_y = _entropy(py)
    h_z = _entropy(pz)
    return {
        "phone_purity": float(pyz.max(0).sum()),
        "cluster_purity": float(pyz.max(1).sum()),
        # A single phone class has H(y) = 0: nothing to explain, define PNMI = 0 rather than divide by 0.
        "pnmi": mi / h_y if h_y > 0 else 0.0,
        "mutual_info": mi,
        "phone_entropy": h_y,
        "unit_entropy": h_z,
        "active_units": int((counts.sum(0) > 0).sum()),
        "unit_perplexity": float(np.exp(h_z)),
        "num_frames": int(n),
    }


def bitrate(units: Sequence[np.ndarray], *, num_units: int, unit_step: float = 0.02) -> float:
    """Bits per second of a unit stream: ``log2(K) * deduplicated units per second`` (spidr).

    Consecutive repeats inside an utterance count once; the duration is the number of unit frames
    times ``unit_step``.

    Args:
        units: per utterance, (T,) integer units.
        num_units: codebook size K.
        unit_step: seconds per unit frame.
    """
    frames = sum(len(u) for u in units)
    if frames == 0:
        raise ValueError("no units")
    segments = sum(int(1 + np.count_nonzero(np.diff(np.asarray(u)))) for u in units if len(u))
    return float(np.log2(num_units) * segments / (frames * unit_step))


def unit_quality(
    units: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    num_units: int,
    num_phones: int | None = None,
    unit_step: float = 0.02,
    label_step: float = 0.02,
    max_mismatch: int = 2,
) -> dict:
    """All unit-quality numbers for one set of utterances (ECOSYSTEM b.1).

    Args:
        units: per utterance, (T_u,) integer units in [0, num_units).
        labels: per utterance, (T_l,) integer phone ids (see `labels_to_ids`).
        num_units: codebook size K (for bitrate and the count matrix width).
        num_phones: phone classes P; default max label + 1.
        unit_step, label_step: frame steps in seconds (e.g. 0.02 units vs 0.01 alignments).
        max_mismatch: tolerated length difference per utterance, in frames of the finer step.

    Returns:
        `quality_from_counts` numbers plus ``bitrate`` (bit/s), ``num_units`` and ``counts`` (P, K).
    """
    counts = joint_counts(
        units,
        labels,
        num_units=num_units,
        num_phones=num_phones,
        unit_step=unit_step,
        label_step=label_step,
        max_mismatch=max_mismatch,
    )
    out: dict = quality_from_counts(counts)
    out["bitrate"] = bitrate(units, num_units=num_units, unit_step=unit_step)
    out["num_units"] = num_units
    out["counts"] = counts
    return out
