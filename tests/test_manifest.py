"""Manifests: `dinosr manifest` matches wav2vec_manifest.py byte for byte; readers/writers round-trip."""

from __future__ import annotations

import glob
import os
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dinosr.cli import main
from dinosr.data.manifest import ManifestEntry, ManifestError, read_manifest, write_manifest


def _wav(num_samples: int) -> bytes:
    """A 16-bit mono 16 kHz WAV, built by hand: thousands of files in well under a second."""
    data = bytes(2 * num_samples)
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, 16000, 32000, 2, 16)
    return (
        struct.pack("<4sI4s", b"RIFF", 36 + len(data), b"WAVE")
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )


def _tree(root: Path, n: int, *, ext: str = "wav") -> dict[str, int]:
    """n tiny files in nested folders; returns realpath -> number of samples."""
    rng = np.random.default_rng(0)
    sizes = {}
    for i in range(n):
        d = root / f"spk{i % 7}" / f"ch{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        size = int(rng.integers(1, 40))
        path = d / f"utt{i}.{ext}"
        if ext == "wav":
            path.write_bytes(_wav(size))
        else:
            sf.write(path, np.zeros(size, dtype=np.int16), 16000, subtype="PCM_16")
        sizes[os.path.realpath(path)] = size
    return sizes


def _expected(
    root: Path, sizes: dict[str, int], ext: str, valid_percent: float, seed: int, contain: str = ""
):
    """fairseq's rule, written out: glob order, rand.random() > valid_percent -> train."""
    dir_path = os.path.realpath(root)
    rand = random.Random(seed)
    train, valid = [dir_path], [dir_path]
    for fname in glob.iglob(os.path.join(dir_path, "**/*." + ext), recursive=True):
        path = os.path.realpath(fname)
        if contain not in path or path not in sizes:  # not in sizes = the unreadable file
            continue
        line = f"{os.path.relpath(path, dir_path)}\t{sizes[path]}"
        (train if rand.random() > valid_percent else valid).append(line)
    return "\n".join(train) + "\n", "\n".join(valid) + "\n"


def test_manifest_matches_fairseq_and_reports_bad_file(tmp_path, caplog):
    root = tmp_path / "corpus"
    sizes = _tree(root, 2000)
    (root / "spk1" / "broken.wav").write_bytes(os.urandom(300))  # unreadable: reported, not fatal
    dest = tmp_path / "out"
    args = [
        "manifest",
        str(root),
        "--dest",
        str(dest),
        "--ext",
        "wav",
        "--valid-percent",
        "0.1",
        "--seed",
        "7",
    ]
    assert main(args) == 0
    train, valid = _expected(root, sizes, "wav", 0.1, 7)
    assert (dest / "train.tsv").read_text() == train
    assert (dest / "valid.tsv").read_text() == valid
    assert 100 < valid.count("\n") < 300
    assert "broken.wav" in caplog.text
    entries = read_manifest(dest / "train.tsv")
    assert all(e.path.is_absolute() and e.num_samples == sizes[str(e.path)] for e in entries)
    assert entries[0].name == Path(entries[0].path).stem


def test_manifest_filters_and_no_valid(tmp_path):
    root = tmp_path / "c"
    sizes = _tree(root, 60)
    dest = tmp_path / "o"
    args = ["manifest", str(root), "--dest", str(dest), "--ext", "wav", "--valid-percent", "0"]
    assert main([*args, "--path-must-contain", "spk3"]) == 0
    assert not (dest / "valid.tsv").exists()
    train, _ = _expected(root, sizes, "wav", 0.0, 42, contain="spk3")
    assert (dest / "train.tsv").read_text() == train
    assert all("spk3" in line for line in train.splitlines()[1:])


def test_manifest_several_extensions(tmp_path):
    root = tmp_path / "c"
    _tree(root / "a", 5, ext="wav")
    _tree(root / "b", 4, ext="flac")
    dest = tmp_path / "o"
    assert (
        main(["manifest", str(root), "--dest", str(dest), "--ext", "wav,flac", "--valid-percent", "0"]) == 0
    )
    lines = (dest / "train.tsv").read_text().splitlines()[1:]
    assert [ln.split("\t")[0].rsplit(".", 1)[1] for ln in lines] == ["wav"] * 5 + ["flac"] * 4


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".jsonl"])
def test_round_trip(tmp_path, suffix):
    entries = [
        ManifestEntry(f"u{i}", tmp_path / "audio" / f"s{i % 2}" / f"u{i}.flac", 1000 + i) for i in range(5)
    ]
    path = tmp_path / f"m{suffix}"
    write_manifest(entries, path)
    assert read_manifest(path) == entries


def test_round_trip_keeps_sample_rate(tmp_path):
    entries = [ManifestEntry("a", tmp_path / "a.wav", 8000, sample_rate=8000)]
    for suffix in (".csv", ".jsonl"):
        write_manifest(entries, tmp_path / f"m{suffix}")
        assert read_manifest(tmp_path / f"m{suffix}")[0].sample_rate == 8000


def test_tsv_exact_text(tmp_path):
    entries = [ManifestEntry("x", tmp_path / "d" / "x.wav", 12), ManifestEntry("y", tmp_path / "y.wav", 3)]
    write_manifest(entries, tmp_path / "m.tsv", root=tmp_path)
    assert (tmp_path / "m.tsv").read_text() == f"{tmp_path}\nd/x.wav\t12\ny.wav\t3\n"


def test_readers_accept_fileid_and_relative_paths(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"fileid": "a", "path": "w/a.wav", "num_samples": 5}\n')
    (tmp_path / "m.csv").write_text("fileid,path,num_samples\nb,w/b.wav,6\n")
    assert read_manifest(tmp_path / "m.jsonl") == [ManifestEntry("a", tmp_path / "w" / "a.wav", 5)]
    assert read_manifest(tmp_path / "m.csv") == [ManifestEntry("b", tmp_path / "w" / "b.wav", 6)]


@pytest.mark.parametrize(
    ("suffix", "text", "line"),
    [
        (".tsv", "/root\na.wav\t10\nb.wav 20\n", 3),
        (".tsv", "/root\na.wav\tten\n", 2),
        (".tsv", "/root\na.wav\t10\textra\n", 2),
        (".csv", "fileid,path,num_samples\na,a.wav,1\nb,b.wav\n", 3),
        (".csv", "fileid,path,num_samples\na,a.wav,-1\n", 2),
        (".jsonl", '{"name": "a", "path": "a.wav", "num_samples": 1}\n{"name": "b"\n', 2),
        (".jsonl", '{"name": "a", "path": "a.wav"}\n', 1),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, suffix, text, line):
    path = tmp_path / f"bad{suffix}"
    path.write_text(text)
    with pytest.raises(ManifestError, match=rf"bad\{suffix}:{line}:"):
        read_manifest(path)


def test_bad_header_and_unknown_format(tmp_path):
    (tmp_path / "m.csv").write_text("id,file\n")
    with pytest.raises(ManifestError, match=r"m\.csv:1"):
        read_manifest(tmp_path / "m.csv")
    with pytest.raises(ManifestError, match="unknown manifest format"):
        read_manifest(tmp_path / "m.txt")
