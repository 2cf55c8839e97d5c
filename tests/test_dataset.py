"""Dataset, collator and build_train_loader: shapes, crops, workers, resume, bad-file skipping."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from dinosr.data.audio import AudioError
from dinosr.data.config import DataConfig
from dinosr.data.dataset import AudioDataset, Collator, crop_offset
from dinosr.data.loader import build_train_loader
from dinosr.data.manifest import ManifestEntry
from dinosr.data.sampler import SampleKey


def _corpus(tmp_path, n=24, seed=0):
    rng = np.random.default_rng(seed)
    entries = []
    for i in range(n):
        size = int(rng.integers(800, 3000))
        path = tmp_path / f"u{i:03d}.wav"
        sf.write(path, rng.standard_normal(size).astype(np.float32) * 0.1, 16000, subtype="FLOAT")
        entries.append(ManifestEntry(path.stem, path, size))
    return entries


def _cfg(**kw):
    base = {"min_sample_size": 1000, "max_sample_size": 2500, "max_tokens": 8000, "num_workers": 0}
    return DataConfig(**(base | kw))


def _run(loader):
    return [(b.names, b.waveforms.clone(), b.lengths.clone()) for b in loader]


def test_crop_batches(tmp_path):
    entries = _corpus(tmp_path)
    loader = build_train_loader(_cfg(), entries, seed=5)
    assert all(e.num_samples >= 1000 for e in loader.entries)
    batches = list(loader)
    assert len(batches) == len(loader) > 1
    for b in batches:
        B, L = b.waveforms.shape
        assert b.waveforms.dtype == torch.float32
        assert b.lengths.dtype == torch.int64
        assert B * L <= 8000
        assert L <= 2500
        assert (b.lengths == L).all()
        assert len(b.names) == B
        assert b.num_skipped == 0


def test_pad_batches(tmp_path):
    loader = build_train_loader(_cfg(batching="pad"), _corpus(tmp_path), seed=5)
    for b in loader:
        B, L = b.waveforms.shape
        assert B * L <= 8000
        assert int(b.lengths.max()) == L
        for row, n in zip(b.waveforms, b.lengths):
            assert (row[n:] == 0).all()
            assert row[:n].std() > 0.5


def test_workers_and_resume_reproduce_crops(tmp_path):
    entries = _corpus(tmp_path)
    ref = build_train_loader(_cfg(), entries, seed=5, rank=1, world_size=2)
    ref.set_epoch(3)
    expected = _run(ref)
    loader = build_train_loader(_cfg(num_workers=2), entries, seed=5, rank=1, world_size=2)
    loader.set_epoch(3, start_batch=2)
    got = _run(loader)
    assert len(got) == len(expected) - 2
    for (n1, w1, l1), (n2, w2, l2) in zip(expected[2:], got):
        assert n1 == n2
        assert torch.equal(w1, w2)
        assert torch.equal(l1, l2)


def test_state_dict_counts_consumed_batches(tmp_path):
    entries = _corpus(tmp_path)
    loader = build_train_loader(_cfg(), entries, seed=1)
    loader.set_epoch(2)
    it = iter(loader)
    first = [next(it).names for _ in range(2)]
    state = loader.state_dict()
    assert state == {"epoch": 2, "start_batch": 2}
    rest = [b.names for b in it]
    other = build_train_loader(_cfg(), entries, seed=1)
    other.load_state_dict(state)
    assert [b.names for b in other] == rest
    assert first


def test_crop_offset_is_pure():
    assert crop_offset(1, 2, 3, 100) == crop_offset(1, 2, 3, 100)
    assert crop_offset(1, 2, 3, 0) == 0
    offsets = {crop_offset(1, e, 3, 1000) for e in range(20)}
    assert len(offsets) > 10
    assert all(0 <= o <= 1000 for o in offsets)


def test_bad_file_raises_or_is_skipped(tmp_path):
    entries = _corpus(tmp_path, n=6)
    entries[2].path.write_bytes(b"not audio at all" * 100)
    with pytest.raises(AudioError, match=r"u002\.wav"):
        AudioDataset(entries, _cfg())[2]
    ds = AudioDataset(entries, _cfg(skip_bad_files=True))
    assert ds[2] is None
    keys = [SampleKey(i, 0, 2500) for i in range(6)]
    batch = Collator()([ds[k] for k in keys])
    assert len(batch) == 5
    assert batch.num_skipped == 1
    assert "u002" not in batch.names


def test_all_bad_batch_is_empty(tmp_path):
    batch = Collator()([None, None])
    assert batch.waveforms.shape == (0, 0)
    assert batch.lengths.shape == (0,)
    assert batch.num_skipped == 2


def test_skipping_keeps_batch_count(tmp_path):
    entries = _corpus(tmp_path)
    good = build_train_loader(_cfg(skip_bad_files=True), entries, seed=2, world_size=2, rank=0)
    n = len(good)
    for e in entries[::3]:
        e.path.write_bytes(b"")
    loader = build_train_loader(_cfg(skip_bad_files=True), entries, seed=2, world_size=2, rank=0)
    batches = list(loader)
    assert len(batches) == len(loader) == n
    assert sum(b.num_skipped for b in batches) > 0


def test_other_rate_uses_manifest_rate(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, np.random.default_rng(0).standard_normal(1000).astype(np.float32), 8000)
    entries = [ManifestEntry("a", path, 1000, sample_rate=8000)] * 2
    loader = build_train_loader(_cfg(min_sample_size=1500, max_tokens=10**5), entries)
    (batch,) = list(loader)
    assert batch.waveforms.shape == (2, 2000)


def test_manifest_rate_for_tsv_without_rates(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, np.random.default_rng(0).standard_normal(1000).astype(np.float32), 8000)
    entries = [ManifestEntry("a", path, 1000)] * 2
    loader = build_train_loader(_cfg(min_sample_size=1500, max_tokens=10**5, manifest_rate=8000), entries)
    (batch,) = list(loader)
    assert batch.waveforms.shape == (2, 2000)
