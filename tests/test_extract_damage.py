"""`dinosr extract` after damage: a cut .npy, a half-written extract.json, an empty manifest, umask."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import soundfile
import torch

from dinosr.data.manifest import ManifestEntry, write_manifest
from dinosr.errors import ExtractionError, ManifestError
from dinosr.interop.extract import ExtractSettings, entries_from_input, run_extraction
from dinosr.model import dinosr_tiny

SETTINGS = ExtractSettings(layers=(1,), units_layer=1)


@pytest.fixture
def corpus(tmp_path):
    rng = np.random.default_rng(0)
    entries = []
    for i, n in enumerate([9000, 6000, 7000]):
        path = tmp_path / f"utt{i}.wav"
        soundfile.write(path, (0.1 * rng.standard_normal(n)).astype(np.float32), 16000)
        entries.append(ManifestEntry(f"utt{i}", path, n))
    torch.manual_seed(0)
    model = dinosr_tiny(num_layers=2, num_codebook_layers=2).eval()
    return tmp_path, model, entries


def _run(model, entries, out):
    return run_extraction(model, entries, out, SETTINGS, progress=False)


def test_cut_npy_is_extracted_again(corpus, caplog):
    root, model, entries = corpus
    out = root / "out"
    _run(model, entries, out)
    feat = out / "layer1" / "utt0.npy"
    good = np.load(feat)
    data = feat.read_bytes()
    feat.write_bytes(data[: len(data) // 2])  # a kill / full disk in the middle of a copy
    (out / "units" / "utt2.npy").write_bytes(b"")  # zero bytes
    summary = _run(model, entries, out)
    assert summary.skipped == 1  # only utt1 was intact
    assert summary.done == 2
    assert "utt0.npy is damaged" in caplog.text
    np.testing.assert_allclose(np.load(feat), good, rtol=1e-5, atol=1e-6)


def test_wrong_shape_npy_is_extracted_again(corpus):
    root, model, entries = corpus
    out = root / "out"
    _run(model, entries, out)
    np.save(out / "layer1" / "utt1.npy", np.zeros((3, 5), np.float32))  # readable, wrong feature dim
    assert _run(model, entries, out).done == 1


def test_half_written_extract_json(corpus):
    root, model, entries = corpus
    out = root / "out"
    out.mkdir()
    (out / "extract.json").write_text('{"layers": [1], "ki')
    _run(model, entries, out)  # no outputs yet: rebuilt
    assert (out / "extract.json").read_text().startswith("{")
    (out / "extract.json").write_text('{"layers": [1], "ki')
    with pytest.raises(ExtractionError, match=r"extract\.json: unreadable"):
        _run(model, entries, out)  # outputs exist: the user decides


def test_other_settings_are_refused(corpus):
    root, model, entries = corpus
    _run(model, entries, root / "out")
    with pytest.raises(ExtractionError, match="other settings"):
        run_extraction(model, entries, root / "out", ExtractSettings(layers=(2,)), progress=False)


def test_empty_inputs_are_errors(tmp_path):
    (tmp_path / "empty.tsv").write_text(f"{tmp_path}\n")
    with pytest.raises(ManifestError, match="lists no utterances"):
        entries_from_input(tmp_path / "empty.tsv")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ManifestError, match="no audio files"):
        entries_from_input(tmp_path / "nothing")


def test_outputs_follow_the_umask(corpus):
    root, model, entries = corpus
    old = os.umask(0o002)
    try:
        _run(model, entries, root / "out")
    finally:
        os.umask(old)
    for name in ("layer1/utt0.npy", "units.km", "extract.json"):
        path = root / "out" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o664, path


def test_entries_from_a_manifest_roundtrip(corpus):
    root, _, entries = corpus
    write_manifest(entries, root / "m.tsv")
    assert [e.name for e in entries_from_input(root / "m.tsv")[0]] == ["utt0", "utt1", "utt2"]
