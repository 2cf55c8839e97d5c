"""Data pipeline options (fairseq names in comments). Defaults follow the official recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dinosr.configcheck import check


@dataclass(frozen=True)
class DataConfig:
    """Where the audio is and how it is batched."""

    manifest: str = ""  # training manifest (fairseq .tsv, .csv or .jsonl); "" = the bundled corpus
    valid_manifest: str = ""  # optional validation manifest
    sample_rate: int = 16000  # sample_rate (audio at another rate is resampled with soxr)
    resample: bool = True  # resample other rates to sample_rate; False = error on other rates
    normalize: bool = True  # per-utterance standardisation (task.normalize)
    min_sample_size: int = 32000  # min_sample_size: shorter files are dropped from the manifest
    max_sample_size: int = 320000  # max_sample_size: longer files are randomly cropped
    max_tokens: int = 3_800_000  # max_tokens: budget of samples per batch (per rank)
    max_batch_size: int = 0  # cap on utterances per batch (0 = no cap)
    batching: Literal["crop", "pad"] = "crop"  # crop to shortest (official) or pad to longest
    num_buckets: int = 0  # length buckets for batching (0 = sort by length, like fairseq)
    num_workers: int = 2  # DataLoader worker processes
    skip_bad_files: bool = False  # skip (and count) unreadable audio instead of failing
    manifest_rate: int = 0  # rate of num_samples in manifests that do not record one (0 = sample_rate)

    def __post_init__(self) -> None:
        check(self.sample_rate > 0, "sample_rate must be > 0")
        check(self.min_sample_size >= 0, "min_sample_size must be >= 0")
        check(
            self.max_sample_size >= max(1, self.min_sample_size), "max_sample_size must be >= min_sample_size"
        )
        check(self.max_tokens > 0, "max_tokens must be > 0")
        check(
            self.max_tokens >= self.min_sample_size,
            f"max_tokens ({self.max_tokens}) must be >= min_sample_size ({self.min_sample_size}): "
            "a batch must hold at least one utterance of the shortest length kept",
        )
        check(self.max_batch_size >= 0, "max_batch_size must be >= 0")
        check(self.num_buckets >= 0, "num_buckets must be >= 0")
        check(self.num_workers >= 0, "num_workers must be >= 0")
        check(self.manifest_rate >= 0, "manifest_rate must be >= 0 (0 = sample_rate)")
