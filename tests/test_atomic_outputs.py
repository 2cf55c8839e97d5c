"""Every writer of a user-facing output is atomic: a write that fails midway keeps the previous file.

The failure is a disk that fills up halfway through the write (half the bytes reach the file, then
ENOSPC), when a plain ``open(path, "w")`` would already have truncated the old file. After it, each
writer runs once more without the failure and is checked against a simple reference (read back).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dinosr import fileio
from dinosr.config import load_config, save_config
from dinosr.configs import preset_path
from dinosr.data import alignments
from dinosr.data.alignments import Segment
from dinosr.data.manifest import ManifestEntry, read_manifest, write_manifest
from dinosr.evaluate.abx import Item, ItemFile
from dinosr.evaluate.baselines import KMeansQuantizer
from dinosr.evaluate.figures import plot_codebook_usage
from dinosr.interop.hf import export_hf, hf_state_dict
from dinosr.model import dinosr_tiny

OLD = b"the previous output, which must survive\n"
SEGMENTS = {"a": [Segment(0.0, 0.04, "sil"), Segment(0.04, 0.1, "ah")], "b": [Segment(0.0, 0.06, "k")]}
FRAMES = {"a": ["sil", "sil", "ah"], "b": ["k", "k"]}


class _DiskFillsUp:
    """A file whose first write stores half of its data, then fails as a full disk does."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._f.close()


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return dinosr_tiny(num_layers=2, num_codebook_layers=2).eval()


def _cases(tmp_path: Path, model) -> dict:
    """name -> (file name, write(path), check(path)): check asserts the file holds what was written."""
    cfg = load_config(preset_path("tiny"))
    entries = [ManifestEntry(f"u{i}", tmp_path / "audio" / f"u{i}.wav", 16000 + i) for i in range(3)]
    items = ItemFile(
        [Item("a", 0.0, 0.04, "sil", "#", "ah", "s1"), Item("a", 0.04, 0.1, "ah", "sil", "#", "s1")]
    )
    quantizer = KMeansQuantizer(n_clusters=3)
    quantizer.centroids = torch.arange(6, dtype=torch.float32).reshape(3, 2)

    def check_manifest(path):
        assert [(e.name, e.path, e.num_samples) for e in read_manifest(path)] == [
            (e.name, e.path, e.num_samples) for e in entries
        ]

    def check_export(path):
        exported = load_file(str(path))
        expected = hf_state_dict(model)
        assert exported.keys() == expected.keys()
        assert all(torch.equal(exported[k], expected[k]) for k in expected)
        assert json.loads((path.parent / "config.json").read_text())["model_type"] == "data2vec-audio"

    return {
        "config": (
            "config.json",
            lambda p: save_config(cfg, p),
            lambda p: assert_equal(json.loads(p.read_text()), cfg.to_dict()),
        ),
        "manifest.tsv": ("m.tsv", lambda p: write_manifest(entries, p), check_manifest),
        "manifest.csv": ("m.csv", lambda p: write_manifest(entries, p), check_manifest),
        "manifest.jsonl": ("m.jsonl", lambda p: write_manifest(entries, p), check_manifest),
        "alignment.tsv": (
            "align.tsv",
            lambda p: alignments.write_alignment_tsv(SEGMENTS, p),
            lambda p: assert_equal(alignments.read_alignment_tsv(p), SEGMENTS),
        ),
        "frame labels": (
            "frames.tsv",
            lambda p: alignments.write_frame_label_tsv(FRAMES, p),
            lambda p: assert_equal(p.read_text(), "a\tsil,sil,ah\nb\tk,k\n"),
        ),
        "alignment.jsonl": (
            "align.jsonl",
            lambda p: alignments.write_alignment_jsonl(FRAMES, p),
            lambda p: assert_equal([json.loads(line) for line in p.read_text().splitlines()], [
                {"name": name, "phones": phones} for name, phones in FRAMES.items()
            ]),
        ),
        "abx items": ("x.item", items.write, lambda p: assert_equal(ItemFile.read(p).items, items.items)),
        "k-means centroids": (
            "km.safetensors",
            quantizer.save,
            lambda p: assert_equal(KMeansQuantizer.load(p).centroids.tolist(), quantizer.centroids.tolist()),
        ),
        "figure": (
            "usage.png",
            lambda p: plot_codebook_usage({"layer 0": np.ones((4, 3))}, p),
            lambda p: assert_equal(p.read_bytes()[:8], b"\x89PNG\r\n\x1a\n"),
        ),
        # export_hf writes model.safetensors first: the disk fills up there.
        "hf export": ("model.safetensors", lambda p: export_hf(model, p.parent), check_export),
    }


def assert_equal(got, expected) -> None:
    assert got == expected


CASES = (
    *("config", "manifest.tsv", "manifest.csv", "manifest.jsonl"),
    *("alignment.tsv", "frame labels", "alignment.jsonl", "abx items"),
    *("k-means centroids", "figure", "hf export"),
)


def test_every_case_is_run(tmp_path):
    assert set(_cases(tmp_path, None)) == set(CASES)


@pytest.mark.parametrize("name", CASES)
def test_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch, tiny_model, name):
    filename, write, check = _cases(tmp_path, tiny_model)[name]
    path = tmp_path / "out" / filename
    path.parent.mkdir()
    path.write_bytes(OLD)
    real_fdopen = os.fdopen
    # fileio opens its temporary file with os.fdopen; nothing else these writers call uses it.
    monkeypatch.setattr(fileio.os, "fdopen", lambda *a, **k: _DiskFillsUp(real_fdopen(*a, **k)))
    with pytest.raises(OSError, match=os.strerror(errno.ENOSPC)):
        write(path)
    monkeypatch.undo()
    assert path.read_bytes() == OLD
    assert os.listdir(path.parent) == [filename]  # and the half-written temporary file is gone
    write(path)
    check(path)


def test_a_missing_directory_is_reported_by_the_name_asked_for(tmp_path):
    target = tmp_path / "missing" / "config.json"
    with pytest.raises(FileNotFoundError) as info:
        fileio.atomic_write_text(target, "{}")
    assert info.value.filename == str(target)  # not the temporary ".config.json.<random>.tmp"


EVAL_OUTPUTS = ("counts.npz", "report.html", "metrics.json")


@pytest.mark.parametrize("filename", EVAL_OUTPUTS)
def test_interrupted_evaluation_output_keeps_the_previous_file(tmp_path, monkeypatch, filename):
    """run_evaluation writes three files in turn; the disk fills up while writing ``filename``."""
    pytest.importorskip("matplotlib")
    from dinosr.evaluate import runner
    from dinosr.evaluate.report import load_counts

    counts = {"units/2": np.arange(12).reshape(3, 4), "mfcc_kmeans": np.ones((3, 2), dtype=np.int64)}
    data = {"num_utterances": 1, "seconds": 1.0, "speakers": ["a"], "abx_items": 0, "abx_utterances": 0}
    data |= {"phones": ["sil", "ah", "k"]}
    data |= {"train_utterances": 1, "train_seconds": 1.0, "train_speakers": ["b"]}
    metrics = {"units": {}, "layers": {}, "baselines": {}, "data": data, "source": {}, "settings": {}}
    # the evaluation itself is not under test: its result is given
    monkeypatch.setattr(runner, "evaluate", lambda *args: (json.loads(json.dumps(metrics)), dict(counts)))
    out = tmp_path / "eval"
    out.mkdir()
    for name in EVAL_OUTPUTS:
        (out / name).write_bytes(OLD)
    prefixes = []
    real_mkstemp, real_fdopen = fileio.tempfile.mkstemp, fileio.os.fdopen

    def mkstemp(**kwargs):
        prefixes.append(kwargs["prefix"])
        return real_mkstemp(**kwargs)

    def fdopen(*args, **kwargs):
        f = real_fdopen(*args, **kwargs)
        return _DiskFillsUp(f) if prefixes[-1] == fileio.temp_name_prefix(out / filename) else f

    monkeypatch.setattr(fileio.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(fileio.os, "fdopen", fdopen)
    with pytest.raises(OSError, match=os.strerror(errno.ENOSPC)):
        runner.run_evaluation(None, None, None, out, title="new")
    monkeypatch.setattr(fileio.os, "fdopen", real_fdopen)
    assert (out / filename).read_bytes() == OLD
    assert not [p.name for p in out.rglob("*.tmp")]
    runner.run_evaluation(None, None, None, out, title="new")
    assert {k: v.tolist() for k, v in load_counts(out / "counts.npz").items()} == {
        k: v.tolist() for k, v in counts.items()
    }
    assert "<title>new</title>" in (out / "report.html").read_text()
    assert json.loads((out / "metrics.json").read_text()) == {
        **metrics, "title": "new", "report": str(out / "report.html")
    }
