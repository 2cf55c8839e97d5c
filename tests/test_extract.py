"""`dinosr extract`: features (.npy), units (.km, JSONL), resume, bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
import torch

import dinosr
from dinosr.cli import main
from dinosr.data.audio import AudioError
from dinosr.data.manifest import ManifestEntry, write_manifest
from dinosr.interop.extract import ExtractSettings, entries_from_input, run_extraction
from dinosr.model import dinosr_tiny


@pytest.fixture
def corpus(tmp_path):
    rng = np.random.default_rng(0)
    audio = tmp_path / "audio"
    audio.mkdir()
    entries = []
    for i, n in enumerate([16000, 5000, 12000, 7000]):
        path = audio / f"utt{i}.wav"
        soundfile.write(path, (0.1 * rng.standard_normal(n)).astype(np.float32), 16000)
        entries.append(ManifestEntry(f"utt{i}", path, n))
    write_manifest(entries, tmp_path / "train.tsv")
    torch.manual_seed(0)
    model = dinosr_tiny(num_layers=2, num_codebook_layers=2).eval()
    dinosr.save_pretrained(model, tmp_path / "model")
    return tmp_path, model, entries


def test_extract_writes_features_and_units_and_resumes(corpus):
    root, model, entries = corpus
    out = root / "out"
    argv = ["extract", str(root / "model"), str(root / "train.tsv"), str(out), "--layers", "0,2", "--units",
            "--layer", "2", "--no-progress", "--batch-seconds", "2"]  # fmt: skip
    assert main(argv) == 0
    km = (out / "train.km").read_text().splitlines()
    jsonl = [json.loads(line) for line in (out / "train.units.jsonl").read_text().splitlines()]
    assert len(km) == len(entries) == len(jsonl)
    for e, line, rec in zip(entries, km, jsonl):
        wav = soundfile.read(e.path, dtype="float32")[0]
        feats, lengths = dinosr.extract_features(model, wav, layers=[0, 2])
        for layer in (0, 2):
            saved = np.load(out / f"layer{layer}" / f"{e.name}.npy")
            assert saved.shape == (int(lengths[0]), model.cfg.embed_dim)
            np.testing.assert_allclose(saved, feats[layer][0].numpy(), atol=1e-4)
        units = dinosr.units(model, wav, layer=2).units[0].tolist()
        assert [int(x) for x in line.split()] == units
        assert rec == {"name": e.name, "units": units}
    # a second run skips everything that is done; a deleted output is redone
    (out / "layer2" / "utt1.npy").unlink()
    settings = ExtractSettings(layers=(0, 2), units_layer=2)
    summary = run_extraction(model, entries, out, settings, stem="train", progress=False)
    assert (summary.skipped, summary.done) == (3, 1)
    assert (out / "layer2" / "utt1.npy").exists()
    with pytest.raises(ValueError, match="other settings"):
        run_extraction(model, entries, out, ExtractSettings(layers=(1,)), progress=False)


def test_bad_files_are_reported_and_skipped_when_asked(corpus):
    root, model, entries = corpus
    bad = root / "audio" / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00")
    entries = [*entries[:2], ManifestEntry("broken", bad, 100), *entries[2:]]
    settings = ExtractSettings(units_layer=2, source="head", dedup=True)
    with pytest.raises(AudioError, match=r"broken\.wav"):
        run_extraction(model, entries, root / "o1", settings, progress=False)
    summary = run_extraction(model, entries, root / "o2", settings, skip_bad_files=True, progress=False)
    assert [name for name, _ in summary.bad] == ["broken"]
    assert summary.done == 4
    km = summary.km_path.read_text().splitlines()
    assert len(km) == 5
    assert km[2] == ""
    records = [json.loads(x) for x in summary.jsonl_path.read_text().splitlines()]
    assert [r["name"] for r in records] == ["utt0", "utt1", "utt2", "utt3"]
    for r, line in zip(records, [km[0], km[1], km[3], km[4]]):
        frames = [int(x) for x in line.split()]
        assert sum(r["durations"]) == len(frames)
        assert np.repeat(r["units"], r["durations"]).tolist() == frames


def test_directory_input(corpus):
    root, _, entries = corpus
    found, stem = entries_from_input(root / "audio")
    assert stem == "units"
    assert [e.name for e in found] == sorted(e.name for e in entries)
    assert [e.num_samples for e in found] == [16000, 5000, 12000, 7000]
