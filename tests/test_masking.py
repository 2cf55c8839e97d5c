"""Span masking (spec 3.4): statistics, padding, min_masks, equal counts, determinism."""

import math

import pytest
import torch

from dinosr.model.masking import compute_span_mask


def _runs(row: torch.Tensor) -> list[tuple[int, int]]:
    """(start, length) of maximal runs of True."""
    runs, start = [], None
    for i, v in enumerate([*row.tolist(), False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            runs.append((start, i - start))
            start = None
    return runs


def test_masked_fraction_long_sequences():
    g = torch.Generator().manual_seed(0)
    mask = compute_span_mask(64, 2000, mask_prob=0.8, mask_length=10, require_same_masks=False, generator=g)
    # S = 0.08 n starts of 10 frames, overlapping: coverage ~ 1 - e^-0.8 (0.5507) away from the edges.
    assert abs(mask.float().mean().item() - (1 - math.exp(-0.8))) < 0.02


def test_span_structure_and_generator_determinism():
    mask = compute_span_mask(8, 300, require_same_masks=False, generator=torch.Generator().manual_seed(3))
    again = compute_span_mask(8, 300, require_same_masks=False, generator=torch.Generator().manual_seed(3))
    other = compute_span_mask(8, 300, require_same_masks=False, generator=torch.Generator().manual_seed(4))
    assert torch.equal(mask, again)
    assert not torch.equal(mask, other)
    for row in mask:
        for start, length in _runs(row):
            # Runs are unions of whole 10-frame spans; only the last run may be clipped at the end.
            assert length >= 10 or start + length == 300


def test_exact_span_count_with_unit_spans():
    # mask_length 1: starts are distinct, so each row masks exactly S = floor(p * n + u) frames,
    # with one u for the whole batch when there is no padding mask.
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        mask = compute_span_mask(4, 101, mask_prob=0.3, mask_length=1, require_same_masks=False, generator=g)
        counts = mask.sum(1)
        assert counts.unique().numel() == 1
        assert int(counts[0]) in (30, 31)


def test_require_same_masks_with_padding():
    lengths = torch.tensor([400, 250, 123, 60])
    padding_mask = torch.arange(400)[None, :] >= lengths[:, None]
    g = torch.Generator().manual_seed(2)
    mask = compute_span_mask(4, 400, padding_mask=padding_mask, generator=g)
    counts = mask.sum(1)
    assert (counts == counts[0]).all()
    assert counts[0] > 0
    assert not (mask & padding_mask).any()


def test_padding_respected_without_same_masks():
    lengths = torch.tensor([500, 100])
    padding_mask = torch.arange(500)[None, :] >= lengths[:, None]
    mask = compute_span_mask(2, 500, padding_mask=padding_mask, require_same_masks=False)
    assert not (mask & padding_mask).any()
    # Each row's coverage follows its own valid length (the short row is not capped to the long one).
    assert mask[0].sum() > mask[1].sum()


@pytest.mark.parametrize("min_masks", [1, 2])
def test_min_masks(min_masks):
    g = torch.Generator().manual_seed(5)
    for _ in range(20):
        # floor(0.001 * 50 / 10 + u) is almost always 0: min_masks decides the number of spans.
        mask = compute_span_mask(
            3, 50, mask_prob=0.001, mask_length=10, min_masks=min_masks, require_same_masks=False, generator=g
        )
        counts = mask.sum(1)
        assert (counts >= 10).all()
        if min_masks == 2:
            assert (counts >= 11).all()  # two distinct starts cover at least 11 frames


def test_short_and_empty_utterances():
    lengths = torch.tensor([12, 3, 0])
    padding_mask = torch.arange(12)[None, :] >= lengths[:, None]
    mask = compute_span_mask(3, 12, padding_mask=padding_mask, require_same_masks=False)
    assert mask[0].any()
    assert mask[1].any()
    assert not mask[2].any()
    assert not (mask & padding_mask).any()
