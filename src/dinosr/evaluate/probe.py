"""Linear phone probe on frozen features: frame accuracy and phone error rate (PER).

A single linear layer is trained with cross-entropy on standardised frame features of some speakers
and tested on others (the caller chooses the split). Frame labels must be at the feature frame rate
(use `dinosr.evaluate.metrics.match_frame_rates` for 10 ms alignments against 20 ms features);
lengths differing by at most ``max_mismatch`` frames are trimmed.

PER: per test utterance, the predicted and reference frame sequences are collapsed (consecutive
repeats merged, then ``ignore`` labels such as silence dropped) and compared by Levenshtein distance;
PER = total edits / total reference phones. This is a frame classifier's PER, not SUPERB's CTC PER.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ProbeResult", "collapse", "edit_distance", "linear_probe"]


@dataclass
class ProbeResult:
    """Linear-probe test results and the fitted probe (applied to standardised features)."""

    accuracy: float  # frame accuracy on the test utterances
    per: float  # phone error rate after collapsing repeats
    num_train_frames: int
    num_test_frames: int
    weight: torch.Tensor  # (C, D)
    bias: torch.Tensor  # (C,)
    mean: torch.Tensor  # (D,) train feature mean
    std: torch.Tensor  # (D,) train feature std

    def predict(self, feats: np.ndarray) -> np.ndarray:
        """(T, D) features -> (T,) predicted class ids."""
        x = (torch.as_tensor(np.asarray(feats), dtype=torch.float32) - self.mean) / self.std
        return (x @ self.weight.T + self.bias).argmax(1).numpy()


def collapse(seq: Sequence[int], ignore: Iterable[int] = ()) -> list[int]:
    """Merge consecutive repeats, then drop ``ignore`` labels: [1,1,0,0,1,2,2] -> [1,0,1,2]."""
    skip = set(ignore)
    out: list[int] = []
    prev = None
    for s in seq:
        s = int(s)
        if s != prev:
            out.append(s)
        prev = s
    return [s for s in out if s not in skip]


def _edit_distance_dp(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance (unit costs), one row at a time."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev_diag, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev_diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev_diag + (r != h))
    return row[-1]


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance; uses the `editdistance` package when installed, else a small DP."""
    try:
        import editdistance
    except ImportError:
        return _edit_distance_dp(ref, hyp)
    return int(editdistance.eval(list(ref), list(hyp)))


def _trim(feats: np.ndarray, labels: np.ndarray, max_mismatch: int) -> tuple[np.ndarray, np.ndarray]:
    diff = abs(len(feats) - len(labels))
    if diff > max_mismatch:
        raise ValueError(f"features ({len(feats)}) and labels ({len(labels)}) differ by {diff} frames")
    n = min(len(feats), len(labels))
    return np.asarray(feats)[:n], np.asarray(labels)[:n]


def linear_probe(
    train_feats: Sequence[np.ndarray],
    train_labels: Sequence[np.ndarray],
    test_feats: Sequence[np.ndarray],
    test_labels: Sequence[np.ndarray],
    *,
    num_classes: int | None = None,
    epochs: int = 10,
    batch_size: int = 4096,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    ignore: Iterable[int] = (),
    max_mismatch: int = 2,
    seed: int = 0,
) -> ProbeResult:
    """Train a linear frame classifier (minibatch Adam) and report test accuracy and PER.

    Args:
        train_feats, test_feats: per utterance (T, D) frozen features of one layer.
        train_labels, test_labels: per utterance (T,) integer phone ids at the same frame rate.
        num_classes: C; default max label + 1 over train and test.
        epochs, batch_size, lr, weight_decay: Adam training (full passes over shuffled frames).
        ignore: label ids (e.g. silence) dropped from both sequences for PER (still classified).
        max_mismatch: tolerated per-utterance length difference between features and labels.
        seed: initialisation and shuffling seed.

    Returns:
        `ProbeResult` with ``accuracy`` and ``per`` as fractions.
    """
    ignore = list(ignore)
    train = [_trim(f, y, max_mismatch) for f, y in zip(train_feats, train_labels, strict=True)]
    test = [_trim(f, y, max_mismatch) for f, y in zip(test_feats, test_labels, strict=True)]
    x = torch.as_tensor(np.concatenate([f for f, _ in train]), dtype=torch.float32)
    y = torch.as_tensor(np.concatenate([t for _, t in train]), dtype=torch.int64)
    if num_classes is None:
        num_classes = int(max(y.max().item(), max(int(t.max()) for _, t in test if len(t)))) + 1
    mean = x.mean(0)
    # Constant dimensions keep std 1 rather than blowing up to inf.
    std = x.std(0).clamp_min(1e-5)
    x = (x - mean) / std

    gen = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():  # seeded init, independent of the global RNG
        bound = 1.0 / x.shape[1] ** 0.5
        layer.weight.copy_(torch.rand(layer.weight.shape, generator=gen) * 2 * bound - bound)
        layer.bias.zero_()
    opt = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            loss = torch.nn.functional.cross_entropy(layer(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()

    result = ProbeResult(
        accuracy=0.0,
        per=0.0,
        num_train_frames=len(x),
        num_test_frames=sum(len(t) for _, t in test),
        weight=layer.weight.detach().clone(),
        bias=layer.bias.detach().clone(),
        mean=mean,
        std=std,
    )
    correct, edits, ref_len = 0, 0, 0
    for f, t in test:
        pred = result.predict(f)
        correct += int((pred == t).sum())
        ref = collapse(t, ignore)
        edits += edit_distance(ref, collapse(pred, ignore))
        ref_len += len(ref)
    result.accuracy = correct / max(result.num_test_frames, 1)
    result.per = edits / max(ref_len, 1)
    return result
