"""Data pipeline: manifests, audio loading, bucketed batching, phone alignments."""

from dinosr.data.audio import AudioError, load_audio
from dinosr.data.config import DataConfig
from dinosr.data.dataset import AudioDataset, Batch, Collator
from dinosr.data.loader import TrainLoader, build_train_loader
from dinosr.data.manifest import ManifestEntry, ManifestError, read_manifest, scan_directory, write_manifest
from dinosr.data.sampler import BucketBatchSampler, cropped_fraction

__all__ = [
    "AudioDataset",
    "AudioError",
    "Batch",
    "BucketBatchSampler",
    "Collator",
    "DataConfig",
    "ManifestEntry",
    "ManifestError",
    "TrainLoader",
    "build_train_loader",
    "cropped_fraction",
    "load_audio",
    "read_manifest",
    "scan_directory",
    "write_manifest",
]
