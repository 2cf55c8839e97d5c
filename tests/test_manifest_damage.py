"""Manifests as editors and other tools write them: byte-order marks, Latin-1, duplicates, wrong paths."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile

from dinosr.data.config import DataConfig
from dinosr.data.loader import build_train_loader
from dinosr.data.manifest import read_manifest
from dinosr.errors import AudioError, ManifestError

BOM = b"\xef\xbb\xbf"


def test_bom_is_dropped_in_every_format(tmp_path):
    (tmp_path / "a.tsv").write_bytes(BOM + f"{tmp_path}\nx.wav\t5\n".encode())
    (tmp_path / "a.csv").write_bytes(BOM + b"fileid,path,num_samples\nx,x.wav,5\n")
    (tmp_path / "a.jsonl").write_bytes(BOM + b'{"name": "x", "path": "x.wav", "num_samples": 5}\n')
    for name in ("a.tsv", "a.csv", "a.jsonl"):
        (entry,) = read_manifest(tmp_path / name)
        assert entry.path == tmp_path / "x.wav", name
        assert entry.name == "x"


@pytest.mark.parametrize("name", ["l.tsv", "l.csv", "l.jsonl"])
def test_latin1_is_named_with_the_line(tmp_path, name):
    body = {
        "l.tsv": f"{tmp_path}\nok.wav\t5\ncaf\xe9.wav\t5\n",
        "l.csv": "fileid,path,num_samples\nok,ok.wav,5\ncaf\xe9,x.wav,5\n",
        "l.jsonl": '{"path": "ok.wav", "num_samples": 5}\n{"path": "caf\xe9.wav", "num_samples": 5}\n',
    }[name]
    (tmp_path / name).write_bytes(body.encode("latin-1"))
    line = 3 if name != "l.jsonl" else 2
    with pytest.raises(ManifestError, match=rf"{name}:{line}: byte 0xe9: not UTF-8 text"):
        read_manifest(tmp_path / name)


def test_missing_and_directory_manifests(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "none.tsv")
    (tmp_path / "dir.tsv").mkdir()
    with pytest.raises(ManifestError, match="is a directory"):
        read_manifest(tmp_path / "dir.tsv")


def _wavs(tmp_path, n):
    rng = np.random.default_rng(0)
    lines = [str(tmp_path)]
    for i in range(n):
        soundfile.write(tmp_path / f"u{i}.wav", rng.standard_normal(4000).astype(np.float32) * 0.1, 16000)
        lines.append(f"u{i}.wav\t4000")
    return lines


def test_duplicate_lines_are_counted_in_a_warning(tmp_path, caplog):
    lines = _wavs(tmp_path, 3)
    (tmp_path / "m.tsv").write_text("\n".join([*lines, lines[1], lines[1], lines[2]]) + "\n")
    cfg = DataConfig(min_sample_size=1000, max_sample_size=4000, max_tokens=8000, num_workers=0)
    with caplog.at_level(logging.WARNING):
        build_train_loader(cfg, read_manifest(tmp_path / "m.tsv"))
    assert "the manifest has 3 duplicate line(s)" in caplog.text


def test_worker_audio_error_reaches_the_caller_as_itself(tmp_path):
    lines = _wavs(tmp_path, 2)
    (tmp_path / "u1.wav").write_bytes(b"")
    (tmp_path / "m.tsv").write_text("\n".join(lines) + "\n")
    cfg = DataConfig(min_sample_size=1000, max_sample_size=4000, max_tokens=8000, num_workers=1)
    loader = build_train_loader(cfg, read_manifest(tmp_path / "m.tsv"))
    with pytest.raises(AudioError) as info:
        list(loader)
    assert str(info.value) == f"{tmp_path / 'u1.wav'}: empty file (0 bytes)"
