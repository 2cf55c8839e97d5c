"""Dataset of manifest entries and the collator that crops (or pads) them into a `Batch`.

Both run inside DataLoader workers. Random crop offsets are drawn from a generator seeded
with ``(seed, epoch, index)``, so they do not depend on which worker loads an item, on the
number of workers, or on whether the epoch was resumed mid-way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from dinosr.data.audio import AudioError, load_audio
from dinosr.data.config import DataConfig
from dinosr.data.manifest import ManifestEntry
from dinosr.data.sampler import SampleKey

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """A training batch.

    Attributes:
        waveforms: (B, L) float32, standardised per utterance; zero beyond ``lengths`` (pad mode).
        lengths: (B,) int64 valid samples per row (all equal to L in crop mode).
        names: B utterance ids.
        num_skipped: bad files dropped from this batch (``skip_bad_files``); B may be 0.
    """

    waveforms: torch.Tensor
    lengths: torch.Tensor
    names: list[str]
    num_skipped: int = 0

    def __len__(self) -> int:
        return len(self.names)

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> Batch:
        """Move the tensors to ``device``."""
        return Batch(
            self.waveforms.to(device, non_blocking=non_blocking),
            self.lengths.to(device, non_blocking=non_blocking),
            self.names,
            self.num_skipped,
        )

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True)."""
        return Batch(self.waveforms.pin_memory(), self.lengths.pin_memory(), self.names, self.num_skipped)


class Item(NamedTuple):
    """One decoded utterance on its way to the collator."""

    key: SampleKey
    name: str
    wav: np.ndarray  # (L,) float32


class AudioDataset(Dataset):
    """Decodes manifest entries; ``dataset[key]`` takes a `SampleKey` (or a plain int = epoch 0, no cap).

    Returns None for a bad file when ``cfg.skip_bad_files`` (logged; the collator counts it),
    else raises `AudioError`. Inside a DataLoader worker the error is *returned* instead and the
    collator passes it on, so the main process re-raises the original `AudioError` (torch would
    wrap a raised one as "Caught AudioError in DataLoader worker process 0" plus a traceback).
    """

    def __init__(self, entries: Sequence[ManifestEntry], cfg: DataConfig) -> None:
        self.entries = list(entries)
        self.cfg = cfg

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key: SampleKey | int) -> Item | AudioError | None:
        if not isinstance(key, SampleKey):
            key = SampleKey(int(key), 0, self.cfg.max_sample_size)
        entry = self.entries[key.index]
        try:
            wav = load_audio(
                entry.path,
                sample_rate=self.cfg.sample_rate,
                resample_audio=self.cfg.resample,
                normalize=self.cfg.normalize,
                expected_samples=entry.num_samples,
            )
        except AudioError as err:
            if not self.cfg.skip_bad_files:
                if get_worker_info() is not None:
                    return err  # see the class docstring: the main process raises it
                raise
            log.warning("skipping bad audio file %s", err)
            return None
        return Item(key, entry.name, wav)


def crop_offset(seed: int, epoch: int, index: int, excess: int) -> int:
    """Random start of a crop that drops ``excess`` samples: a pure function of (seed, epoch, index)."""
    if excess <= 0:
        return 0
    return int(np.random.default_rng([seed, epoch, index]).integers(0, excess + 1))


class Collator:
    """Turns a list of `Item` (None = skipped bad file) into a `Batch`.

    crop: every item is cut to ``min(shortest item, key.max_len)`` at a random offset (official);
    pad: every item is cut to ``key.max_len`` if longer, then zero-padded to the longest.
    """

    def __init__(self, *, batching: Literal["crop", "pad"] = "crop", seed: int = 1) -> None:
        self.batching = batching
        self.seed = seed

    def _crop(self, item: Item, size: int) -> np.ndarray:
        start = crop_offset(self.seed, item.key.epoch, item.key.index, len(item.wav) - size)
        return item.wav[start : start + size]

    def __call__(self, items: Sequence[Item | AudioError | None]) -> Batch | AudioError:
        for it in items:
            if isinstance(it, AudioError):
                return it  # an unreadable file without skip_bad_files: TrainLoader raises it
        good = [it for it in items if it is not None]
        skipped = len(items) - len(good)
        if not good:  # every file bad: an empty batch the trainer skips on all ranks together
            return Batch(torch.zeros(0, 0), torch.zeros(0, dtype=torch.int64), [], skipped)
        if self.batching == "crop":
            size = min(min(len(it.wav) for it in good), min(it.key.max_len for it in good))
            rows = [self._crop(it, size) for it in good]
        else:
            rows = [self._crop(it, min(len(it.wav), it.key.max_len)) for it in good]
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
        waveforms = torch.zeros(len(rows), int(lengths.max()), dtype=torch.float32)
        for row, r in zip(waveforms, rows):
            row[: len(r)] = torch.from_numpy(np.ascontiguousarray(r))
        return Batch(waveforms, lengths, [it.name for it in good], skipped)
