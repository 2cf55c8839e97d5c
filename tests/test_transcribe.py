"""`dinosr transcribe` (dinosr.asr.transcribe): batched transcripts equal one-utterance-at-a-time decoding,
resume after a kill (partial last line), JSONL output, bad files, and the command line with `dinosr wer`."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import soundfile
import torch

from asr_utils import DICT, biased_ctc_model
from dinosr.asr.decode import greedy_decode
from dinosr.asr.transcribe import ctc_logits, entries_from_inputs, run_transcription
from dinosr.asr.transcripts import TranscriptError, read_transcripts
from dinosr.cli import main
from dinosr.data.audio import load_audio
from dinosr.data.corpus import bundled_corpus
from dinosr.data.manifest import read_manifest
from dinosr.errors import AudioError
from dinosr.interop.ctc_pretrained import save_ctc_model

NUM_UTTS = 6


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = bundled_corpus()
    lines = (root / "valid.tsv").read_text().splitlines()
    path = tmp_path_factory.mktemp("data") / "some.tsv"
    path.write_text("\n".join([str(root), *lines[1 : 1 + NUM_UTTS]]) + "\n")
    return path


def _reference(model, manifest) -> dict[str, str]:
    """One utterance at a time, no padding, no batching: the simple path."""
    out = {}
    for e in read_manifest(manifest):
        wav = torch.from_numpy(load_audio(e.path))[None]  # standardised by load_audio
        with torch.no_grad():
            o = model(wav)
        out[e.name] = greedy_decode(o.logits, o.frame_lengths, DICT)[0]
    return out


def test_batched_transcripts_equal_one_at_a_time(manifest, tmp_path):
    model = biased_ctc_model()
    expected = _reference(model, manifest)
    assert all(expected.values())  # non-empty
    assert len(set(expected.values())) == NUM_UTTS  # and different
    out = tmp_path / "hyp.tsv"
    # 8 s per batch: several padded batches of 2-3 utterances
    summary = run_transcription(model, DICT, read_manifest(manifest), out, batch_seconds=8.0, progress=False)
    assert read_transcripts(out) == expected
    assert summary.done == NUM_UTTS
    durations = sum(e.num_samples for e in read_manifest(manifest)) / 16000
    assert summary.audio_seconds == pytest.approx(durations)
    assert summary.real_time_factor == pytest.approx(summary.elapsed_seconds / durations)


def test_chunked_long_audio_keeps_every_frame():
    model = biased_ctc_model()
    wav = torch.randn(16000 * 3, generator=torch.Generator().manual_seed(0))
    whole, n_whole = ctc_logits(model, [wav], chunk_seconds=None)
    chunked, n_chunked = ctc_logits(model, [wav], chunk_seconds=0.5, context_seconds=0.25)
    assert chunked.shape == whole.shape
    assert torch.equal(n_chunked, n_whole)
    # the CNN frames are exact; the transformer sees +-0.25 s, so most frames' best symbol agrees
    agree = (chunked.argmax(-1) == whole.argmax(-1)).float().mean()
    assert agree > 0.5


@pytest.mark.parametrize(
    ("filename", "damage"),
    [("hyp.tsv", "partial"), ("hyp.jsonl", "partial"), ("hyp.jsonl", "unparsable"), ("hyp.jsonl", "both")],
)
def test_resume_after_a_kill_drops_the_damaged_end(manifest, tmp_path, caplog, filename, damage):
    model = biased_ctc_model()
    entries = read_manifest(manifest)
    expected = _reference(model, manifest)
    out = tmp_path / filename
    run_transcription(model, DICT, entries, out, batch_seconds=8.0, progress=False)
    lines = out.read_bytes().splitlines(keepends=True)
    # as if killed: two complete lines, then half of the third (with its newline: half a JSON record)
    half = lines[2][: len(lines[2]) // 2]
    tail = {"partial": half, "unparsable": half + b"\n", "both": half + b"\n" + lines[3][:5]}[damage]
    out.write_bytes(lines[0] + lines[1] + tail)
    with caplog.at_level(logging.WARNING):
        summary = run_transcription(model, DICT, entries, out, batch_seconds=8.0, progress=False)
    assert f"{out}: dropping the last {len(tail)} byte(s)" in caplog.text
    assert summary.skipped == 2
    assert summary.done == NUM_UTTS - 2
    assert out.read_bytes().startswith(lines[0] + lines[1])
    assert len(out.read_text().splitlines()) == NUM_UTTS  # one line per utterance, the half line gone
    assert read_transcripts(out) == expected  # each utterance once (read_transcripts refuses repeats)
    again = run_transcription(model, DICT, entries, out, progress=False)
    assert (again.done, again.skipped) == (0, NUM_UTTS)


def test_resume_refuses_a_bad_line_before_the_end_and_keeps_the_file(manifest, tmp_path):
    model = biased_ctc_model()
    entries = read_manifest(manifest)
    out = tmp_path / "hyp.jsonl"
    run_transcription(model, DICT, entries[:2], out, progress=False)
    lines = out.read_bytes().splitlines(keepends=True)
    damaged = lines[0] + b"not json\n" + lines[1] + lines[1][:5]
    out.write_bytes(damaged)
    with pytest.raises(TranscriptError, match=r"hyp\.jsonl:2: not a JSON object"):
        run_transcription(model, DICT, entries, out, progress=False)
    assert out.read_bytes() == damaged


def test_jsonl_output_has_text_and_seconds(manifest, tmp_path):
    model = biased_ctc_model()
    out = tmp_path / "hyp.jsonl"
    run_transcription(model, DICT, read_manifest(manifest), out, progress=False)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    expected = _reference(model, manifest)
    lengths = {e.name: e.num_samples / 16000 for e in read_manifest(manifest)}
    assert {r["utt"]: r["text"] for r in records} == expected
    for r in records:
        assert r["seconds"] == pytest.approx(lengths[r["utt"]], abs=1e-4)


def test_bad_files(tmp_path):
    model = biased_ctc_model()
    good, bad, short = tmp_path / "good.wav", tmp_path / "bad.wav", tmp_path / "short.wav"
    soundfile.write(good, np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1, 16000)
    bad.write_bytes(b"RIFF not really a wav")
    soundfile.write(short, np.zeros(100, dtype=np.float32), 16000)  # not one 400-sample frame
    entries = entries_from_inputs([good, bad])
    with pytest.raises(AudioError, match=r"bad\.wav"):
        run_transcription(model, DICT, entries, tmp_path / "a.tsv", progress=False)
    with pytest.raises(AudioError, match=r"short\.wav: only 100 samples, shorter than one frame"):
        run_transcription(model, DICT, entries_from_inputs([short]), tmp_path / "a.tsv", progress=False)
    entries = entries_from_inputs([good, bad, short])
    summary = run_transcription(model, DICT, entries, tmp_path / "b.tsv", skip_bad_files=True, progress=False)
    assert sorted(n for n, _ in summary.bad) == ["bad", "short"]
    assert list(read_transcripts(tmp_path / "b.tsv")) == ["good"]


def test_command_line_then_wer(manifest, tmp_path, caplog, capsys):
    model = biased_ctc_model()
    save_ctc_model(model, DICT, tmp_path / "ft")
    expected = _reference(model, manifest)
    # audio files given one by one, and a directory of them
    audio = tmp_path / "audio"
    audio.mkdir()
    for e in read_manifest(manifest):
        shutil.copy(e.path, audio / e.path.name)
    files = sorted(str(p) for p in audio.iterdir())
    out = tmp_path / "hyp.tsv"
    with caplog.at_level(logging.INFO):
        assert main(["transcribe", str(tmp_path / "ft"), *files, "--out", str(out), "--no-progress"]) == 0
    assert "real-time factor" in caplog.text
    assert read_transcripts(out) == expected
    out2 = tmp_path / "dir.tsv"
    assert main(["transcribe", str(tmp_path / "ft"), str(audio), "--out", str(out2), "--no-progress"]) == 0
    assert read_transcripts(out2) == expected
    # scored against itself with one word changed
    ref = tmp_path / "ref.tsv"
    first = next(iter(expected))
    changed = dict(expected, **{first: expected[first] + " EXTRA"})
    ref.write_text("".join(f"{u}\t{t}\n" for u, t in changed.items()))
    capsys.readouterr()
    assert main(["wer", str(ref), str(out), "--json"]) == 0
    rates = json.loads(capsys.readouterr().out)
    assert rates["words"]["deletions"] == 1
    assert rates["words"]["substitutions"] == rates["words"]["insertions"] == 0
    assert rates["words"]["ref_length"] == sum(len(t.split()) for t in changed.values())
