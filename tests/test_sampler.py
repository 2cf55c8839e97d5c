"""Bucketed batch sampler: budget, DDP shards, determinism and exact mid-epoch resume."""

from __future__ import annotations

import numpy as np
import pytest

from dinosr.data.sampler import (
    BucketBatchSampler,
    batch_cost,
    cropped_fraction,
    pack_by_length,
    plan_batches,
)


def _lengths(n=500, seed=0):
    return np.random.default_rng(seed).integers(1000, 30000, size=n)


def _sampler(lengths, **kw):
    args = {"max_tokens": 60000, "max_sample_size": 25000, "seed": 3}
    return BucketBatchSampler(lengths, **(args | kw))


@pytest.mark.parametrize("batching", ["crop", "pad"])
@pytest.mark.parametrize("num_buckets", [0, 8])
def test_budget_respected_and_every_item_once(batching, num_buckets):
    lengths = _lengths()
    s = _sampler(lengths, batching=batching, num_buckets=num_buckets)
    batches = s.global_batches(0)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        planned = np.minimum(lengths[b], 25000)
        assert batch_cost(planned.tolist(), batching) <= 60000
        # the per-item cap the collator applies keeps the real batch inside the budget too
        assert len(b) * s.max_len(len(b)) <= 60000


def test_single_long_utterance_is_its_own_batch_and_capped():
    s = _sampler(np.array([100, 200, 90000]), max_tokens=1000, max_sample_size=100000, batching="pad")
    batches = s.global_batches(0)
    assert [2] in batches
    keys = next(k for k in s if k[0].index == 2)
    assert keys[0].max_len == 1000  # cropped to the budget, never over it


def test_max_batch_size():
    batches = plan_batches(np.full(100, 10), max_tokens=10**6, max_batch_size=7)
    assert max(len(b) for b in batches) == 7
    assert sum(len(b) for b in batches) == 100


def test_crop_cost_uses_shortest_pad_uses_longest():
    assert batch_cost([5, 10, 20], "crop") == 15
    assert batch_cost([5, 10, 20], "pad") == 60
    assert batch_cost([], "pad") == 0


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_ddp_shards_disjoint_and_equal(world_size):
    lengths = _lengths()
    samplers = [_sampler(lengths, rank=r, world_size=world_size) for r in range(world_size)]
    for epoch in (0, 1):
        per_rank = []
        for s in samplers:
            s.set_epoch(epoch)
            per_rank.append([[k.index for k in b] for b in s])
        assert len({len(b) for b in per_rank}) == 1
        assert len(per_rank[0]) > 0
        seen = [i for batches in per_rank for b in batches for i in b]
        assert len(seen) == len(set(seen))
        n_global = len(samplers[0].global_batches(epoch))
        assert len(per_rank[0]) == n_global // world_size == len(samplers[0])


def test_fewer_batches_than_ranks_repeats():
    samplers = [_sampler(np.array([100, 100]), rank=r, world_size=4, max_tokens=150) for r in range(4)]
    assert [len(s) for s in samplers] == [1, 1, 1, 1]


def test_deterministic_per_seed_and_epoch():
    lengths = _lengths()
    a, b = _sampler(lengths), _sampler(lengths)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert list(_sampler(lengths, seed=4)) != list(a)
    assert [k.epoch for k in next(iter(b))] == [1] * len(next(iter(b)))


def test_resume_mid_epoch_yields_remaining_batches():
    lengths = _lengths()
    s = _sampler(lengths, rank=1, world_size=2, num_buckets=4)
    s.set_epoch(5)
    full = list(s)
    resumed = _sampler(lengths, rank=1, world_size=2, num_buckets=4)
    resumed.set_epoch(5, start_batch=3)
    assert len(resumed) == len(full) - 3
    assert list(resumed) == full[3:]


def test_cropped_fraction():
    # one batch [100, 300] cropped to 100: keeps 200 of 400
    s = BucketBatchSampler([100, 300], max_tokens=1000, max_sample_size=1000)
    assert cropped_fraction(s) == pytest.approx(0.5)
    s = BucketBatchSampler([100, 300], max_tokens=1000, max_sample_size=200, batching="pad")
    assert cropped_fraction(s) == pytest.approx(100 / 400)


def _reference_inference_batches(lengths, budget, alone_above):
    """The extraction packer before it moved to data/sampler.py (sorted, B x longest <= budget)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, current = [], []
    for i in order:
        n = max(1, lengths[i])
        if alone_above is not None and n > alone_above:
            batches.append([i])
            continue
        if current and (len(current) + 1) * n > budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


@pytest.mark.parametrize("alone_above", [None, 900])
def test_pack_by_length_equals_reference_and_keeps_the_budget(alone_above):
    rng = np.random.default_rng(0)
    lengths = [int(n) for n in rng.integers(0, 1200, 200)]
    got = pack_by_length(lengths, 5000, alone_above=alone_above)
    ref = _reference_inference_batches(lengths, 5000, alone_above)
    assert sorted(got) == sorted(ref)
    assert sorted(i for b in got for i in b) == list(range(200))
    for b in got:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 5000
        if alone_above is not None and any(lengths[i] > alone_above for i in b):
            assert len(b) == 1
