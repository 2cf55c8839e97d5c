"""Length-bucketed batch sampler with a budget of samples per batch (fairseq ``max_tokens``), DDP-aware.

It works on manifest lengths only (never on file contents), so every rank knows every batch
without reading audio, and the number of batches per rank cannot depend on a bad file.

Batch cost (``B`` utterances, planned lengths ``l_i = min(num_samples_i, max_sample_size)``):

* ``batching="crop"`` (official): the batch is cropped to its shortest item, cost ``B * min(l_i)``;
* ``batching="pad"``: items are padded to the longest, cost ``B * max(l_i)``.

The cost never exceeds ``max_tokens``: an utterance longer than the budget forms a batch of one
and is cropped to ``max_tokens`` (every key carries ``max_len = min(max_sample_size, max_tokens // B)``,
which the collator enforces on the *decoded* audio too, so a wrong manifest cannot overflow it).

Epoch plan, a pure function of ``(seed, epoch)``: a random permutation breaks ties, items are
sorted by length (``num_buckets=0``, like fairseq) or by length-quantile bucket (random order
inside a bucket), packed greedily in that order, and the batches are shuffled. DDP: with ``N``
batches and ``W`` ranks, the last ``N % W`` shuffled batches are dropped (different ones each
epoch) and rank ``r`` takes batches ``r, r + W, ...``: disjoint, and exactly ``N // W`` per rank.
If ``0 < N < W`` the batches are repeated so every rank gets one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal, NamedTuple

import numpy as np
from torch.utils.data import Sampler


class SampleKey(NamedTuple):
    """What the sampler hands the dataset for one utterance: crops are a function of (seed, epoch, index)."""

    index: int  # position in the dataset
    epoch: int
    max_len: int  # cap on this item's cropped length (keeps the batch within the budget)


def batch_cost(lengths: Sequence[int], batching: Literal["crop", "pad"]) -> int:
    """Samples a batch occupies: ``B * min`` when cropping to the shortest, ``B * max`` when padding."""
    if len(lengths) == 0:
        return 0
    return len(lengths) * (min(lengths) if batching == "crop" else max(lengths))


def _order(lengths: np.ndarray, num_buckets: int, rng: np.random.Generator) -> np.ndarray:
    """Indices sorted by length (or bucket), ties in random order."""
    perm = rng.permutation(len(lengths))
    if num_buckets > 0 and len(lengths) > 0:
        edges = np.unique(np.quantile(lengths, np.linspace(0, 1, num_buckets + 1)[1:-1]))
        key = np.searchsorted(edges, lengths, side="right")
    else:
        key = lengths
    return perm[np.argsort(key[perm], kind="stable")]


def plan_batches(
    lengths: np.ndarray,
    *,
    max_tokens: int,
    max_batch_size: int = 0,
    batching: Literal["crop", "pad"] = "crop",
    num_buckets: int = 0,
    seed: int = 1,
    epoch: int = 0,
) -> list[list[int]]:
    """All batches of one epoch (every rank), in training order.

    Args:
        lengths: (N,) planned lengths (already capped at max_sample_size).
    Returns:
        Lists of dataset indices; each list's `batch_cost` is <= max_tokens unless it holds one item.
    """
    rng = np.random.default_rng([seed, epoch])
    order = _order(lengths, num_buckets, rng).tolist()
    batches = pack_greedy(
        order, lengths, max_tokens=max_tokens, batching=batching, max_batch_size=max_batch_size
    )
    return [batches[j] for j in rng.permutation(len(batches)).tolist()]


def pack_greedy(
    order: Sequence[int],
    lengths: Sequence[int] | np.ndarray,
    *,
    max_tokens: int,
    batching: Literal["crop", "pad"] = "crop",
    max_batch_size: int = 0,
) -> list[list[int]]:
    """The one batch-by-length packer: ``order`` (indices into ``lengths``) cut into consecutive batches.

    A batch grows while its `batch_cost` stays <= ``max_tokens`` and it holds fewer than ``max_batch_size``
    items (0 = no cap); an item that alone exceeds the budget forms a batch of one.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    lo = hi = 0
    for i in order:
        n = int(lengths[i])
        new_lo, new_hi = (min(lo, n), max(hi, n)) if current else (n, n)
        cost = (len(current) + 1) * (new_lo if batching == "crop" else new_hi)
        full = max_batch_size > 0 and len(current) >= max_batch_size
        if current and (cost > max_tokens or full):
            batches.append(current)
            current, new_lo, new_hi = [], n, n
        current.append(i)
        lo, hi = new_lo, new_hi
    if current:
        batches.append(current)
    return batches


def pack_by_length(
    lengths: Sequence[int], max_samples: int, *, alone_above: int | None = None
) -> list[list[int]]:
    """Inference batches (extraction, evaluation): deterministic, nothing cropped.

    Indices in ascending length (ties in index order) packed greedily so that the padded size
    ``B x longest`` stays <= ``max_samples``; an utterance longer than ``alone_above`` samples is a batch
    of one (it is encoded in chunks). An empty utterance counts as one sample.
    """
    cost = [max(1, int(n)) for n in lengths]
    order = sorted(range(len(cost)), key=lambda i: int(lengths[i]))
    alone = [i for i in order if alone_above is not None and cost[i] > alone_above]
    rest = [i for i in order if alone_above is None or cost[i] <= alone_above]
    return pack_greedy(rest, cost, max_tokens=max_samples, batching="pad") + [[i] for i in alone]


def shard_batches(batches: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """This rank's batches: disjoint across ranks and equal in number (see the module docstring)."""
    n = len(batches)
    if n == 0:
        return []
    if n < world_size:  # too few to drop: repeat so no rank is left without a batch
        return [batches[rank % n]]
    return batches[rank : (n // world_size) * world_size : world_size]


class BucketBatchSampler(Sampler[list[SampleKey]]):
    """Batch sampler for `torch.utils.data.DataLoader(batch_sampler=...)`; yields lists of `SampleKey`.

    Args:
        lengths: (N,) utterance lengths in samples at the training rate (manifest counts).
        max_tokens: budget of samples per batch (fairseq ``max_tokens``).
        max_sample_size: longer utterances are randomly cropped to this.
        max_batch_size: cap on utterances per batch (0 = none).
        batching: "crop" (to the shortest, official) or "pad" (to the longest).
        num_buckets: 0 = sort by length; else length-quantile buckets.
        rank, world_size: DDP position; every rank must use the same seed.
        seed: base seed; the plan of an epoch depends on (seed, epoch) only.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        *,
        max_tokens: int,
        max_sample_size: int,
        max_batch_size: int = 0,
        batching: Literal["crop", "pad"] = "crop",
        num_buckets: int = 0,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.planned = np.minimum(self.lengths, max_sample_size)
        self.max_tokens = max_tokens
        self.max_sample_size = max_sample_size
        self.max_batch_size = max_batch_size
        self.batching = batching
        self.num_buckets = num_buckets
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch, self.start_batch = 0, 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def global_batches(self, epoch: int) -> list[list[int]]:
        """Every rank's batches of ``epoch`` before sharding."""
        return plan_batches(
            self.planned,
            max_tokens=self.max_tokens,
            max_batch_size=self.max_batch_size,
            batching=self.batching,
            num_buckets=self.num_buckets,
            seed=self.seed,
            epoch=epoch,
        )

    def rank_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of ``epoch`` (cached for the current epoch)."""
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, shard_batches(self.global_batches(epoch), self.rank, self.world_size))
        return self._cache[1]

    def max_len(self, batch_size: int) -> int:
        """Cap on each item's cropped length in a batch of ``batch_size`` (keeps the budget)."""
        return min(self.max_sample_size, self.max_tokens // max(1, batch_size))

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch and skip its first ``start_batch`` batches (exact mid-epoch resume)."""
        if start_batch < 0:
            raise ValueError("start_batch must be >= 0")
        self.epoch, self.start_batch = epoch, start_batch

    def num_batches(self) -> int:
        """Batches per rank in the current epoch (the same on every rank)."""
        return len(self.rank_batches(self.epoch))

    def __len__(self) -> int:
        """Batches the next iteration yields (the epoch's count minus ``start_batch``)."""
        return max(0, self.num_batches() - self.start_batch)

    def __iter__(self) -> Iterator[list[SampleKey]]:
        epoch = self.epoch
        for batch in self.rank_batches(epoch)[self.start_batch :]:
            cap = self.max_len(len(batch))
            yield [SampleKey(i, epoch, cap) for i in batch]


def cropped_fraction(sampler: BucketBatchSampler, epoch: int = 0) -> float:
    """Share of the audio in ``epoch``'s batches (all ranks) that cropping/budget caps discard.

    Computed from manifest lengths: crop mode keeps ``min(shortest in batch, cap)`` per item,
    pad mode keeps ``min(length, cap)``.
    """
    total = kept = 0
    for batch in sampler.global_batches(epoch):
        lengths = sampler.lengths[batch]
        cap = sampler.max_len(len(batch))
        total += int(lengths.sum())
        if sampler.batching == "crop":
            kept += len(batch) * min(int(lengths.min()), cap)
        else:
            kept += int(np.minimum(lengths, cap).sum())
    return 0.0 if total == 0 else 1.0 - kept / total
