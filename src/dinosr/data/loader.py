"""`build_train_loader`: manifest entries -> filtered dataset + bucketed sampler + DataLoader workers."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from torch.utils.data import DataLoader

from dinosr.data.config import DataConfig
from dinosr.data.dataset import AudioDataset, Batch, Collator
from dinosr.data.manifest import ManifestEntry
from dinosr.data.sampler import BucketBatchSampler, cropped_fraction
from dinosr.errors import AudioError

log = logging.getLogger(__name__)


def training_length(entry: ManifestEntry, sample_rate: int, manifest_rate: int = 0) -> int:
    """Length in samples at ``sample_rate`` (what the sampler budgets with).

    ``num_samples`` counts at the entry's own rate if the manifest records one, else at
    ``manifest_rate``, else (fairseq's assumption) at ``sample_rate``.
    """
    rate = entry.sample_rate or manifest_rate or sample_rate
    return entry.num_samples * sample_rate // rate


class TrainLoader:
    """Iterable of `Batch` for one rank; ``len()`` = batches per rank this epoch (equal on all ranks).

    It counts the batches it has yielded, so ``state_dict()`` records the exact resume point.
    """

    def __init__(self, dataloader: DataLoader, sampler: BucketBatchSampler, entries: list[ManifestEntry]):
        self.dataloader = dataloader
        self.sampler = sampler
        self.entries = entries  # the dataset's entries (after the min_sample_size filter)
        self.epoch = 0
        self.batches_done = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select ``epoch``; the next iteration skips its first ``start_batch`` batches (unread)."""
        self.sampler.set_epoch(epoch, start_batch)
        self.epoch, self.batches_done = epoch, start_batch

    def __len__(self) -> int:
        return self.sampler.num_batches()

    def __iter__(self) -> Iterator[Batch]:
        self.sampler.set_epoch(self.epoch, self.batches_done)
        for batch in self.dataloader:
            if isinstance(batch, AudioError):
                raise batch  # returned by a worker (AudioDataset), so the user sees the file, not a wrapper
            self.batches_done += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "start_batch"}``: pass to `load_state_dict` (or `set_epoch`) to resume exactly."""
        return {"epoch": self.epoch, "start_batch": self.batches_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.set_epoch(int(state["epoch"]), int(state["start_batch"]))


def _warn_duplicates(entries: Sequence[ManifestEntry]) -> None:
    """Warn (once, with the count) when the manifest lists a file more than once: it is trained on twice."""
    seen: set[Path] = set()
    duplicates = []
    for e in entries:
        if e.path in seen:
            duplicates.append(e.path)
        seen.add(e.path)
    if duplicates:
        log.warning(
            "the manifest has %d duplicate line(s): a repeated file is trained on again every epoch "
            "(first: %s)",
            len(duplicates),
            duplicates[0],
        )


def build_train_loader(
    cfg: DataConfig,
    entries: Sequence[ManifestEntry],
    *,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 1,
) -> TrainLoader:
    """Training loader for one DDP rank.

    Utterances shorter than ``cfg.min_sample_size`` are dropped (fairseq); the rest are batched by
    `BucketBatchSampler` and loaded by ``cfg.num_workers`` workers. Every rank must pass the
    same ``entries`` and ``seed``.
    """
    _warn_duplicates(entries)
    lengths = [training_length(e, cfg.sample_rate, cfg.manifest_rate) for e in entries]
    kept = [i for i, n in enumerate(lengths) if n >= cfg.min_sample_size]
    if len(kept) < len(entries):
        log.info(
            "dropped %d of %d utterances shorter than min_sample_size=%d",
            len(entries) - len(kept),
            len(entries),
            cfg.min_sample_size,
        )
    if not kept:
        raise ValueError(
            f"no utterance of the {len(entries)} in the manifest has >= {cfg.min_sample_size} samples"
        )
    entries = [entries[i] for i in kept]
    sampler = BucketBatchSampler(
        [lengths[i] for i in kept],
        max_tokens=cfg.max_tokens,
        max_sample_size=cfg.max_sample_size,
        max_batch_size=cfg.max_batch_size,
        batching=cfg.batching,
        num_buckets=cfg.num_buckets,
        rank=rank,
        world_size=world_size,
        seed=seed,
    )
    if rank == 0:
        log.info(
            "%d utterances, %d batches per rank per epoch; cropping discards %.1f%% of the audio",
            len(entries),
            sampler.num_batches(),
            100 * cropped_fraction(sampler),
        )
    dataloader = DataLoader(
        AudioDataset(entries, cfg),
        batch_sampler=sampler,
        collate_fn=Collator(batching=cfg.batching, seed=seed),
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
    )
    return TrainLoader(dataloader, sampler, entries)
