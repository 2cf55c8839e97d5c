"""The flite engine: its segment parser, voice names and speakers, and a tiny run when flite is installed."""

import json
import shutil

import pytest
import soundfile as sf

from dinosr.data.corpus.flite import FLITE_VOICES, parse_psdur
from dinosr.data.corpus.phones import SILENCE, UnknownPhoneError
from dinosr.data.corpus.speakers import engine_and_voice, make_speakers
from dinosr.data.corpus.split import voice_speakers
from dinosr.data.corpus.voices import read_base_voices

# What `flite -voice awb -psdur -t "the boy"` prints: phone:end-seconds items.
PSDUR_SAMPLE = "pau:0.253 dh:0.280 ax:0.310 b:0.409 oy:0.627 pau:0.827 \n"


def test_parse_psdur_gives_contiguous_arpabet_segments():
    segments = parse_psdur(PSDUR_SAMPLE)
    assert segments == [
        (SILENCE, 0.0, 0.253), ("DH", 0.253, 0.28), ("AH", 0.28, 0.31),
        ("B", 0.31, 0.409), ("OY", 0.409, 0.627), (SILENCE, 0.627, 0.827),
    ]  # fmt: skip


@pytest.mark.parametrize("text", ["", "pau 0.2", "pau:0.3 dh:0.2", "pau:x"])
def test_parse_psdur_rejects_malformed_output(text):
    with pytest.raises(ValueError, match="flite"):
        parse_psdur(text)


def test_parse_psdur_rejects_unknown_phone():
    with pytest.raises(UnknownPhoneError):
        parse_psdur("pau:0.1 qq:0.2")


def test_flite_voice_names_speakers_and_base_voices():
    assert engine_and_voice("flite-awb") == ("flite", "awb")
    assert engine_and_voice("mbrola-us1") == ("mbrola", "us1")
    assert engine_and_voice("kal") == ("festival", "kal")
    speakers = {s.name: s for s in make_speakers(["flite-awb", "flite-rms"])}
    assert sorted(speakers) == ["awba", "awbb", "awbc", "rmsa", "rmsb", "rmsc"]
    assert speakers["awbb"].base_voice == "flite-awb"
    # awb's f0 follows the engine's f0 setting, rms's does not: only the resampling moves it
    assert speakers["awbb"].transform == "resample f0=0.855 formant=0.900 tempo=0.972"
    assert speakers["rmsb"].transform == "resample f0=0.900 formant=0.900 tempo=0.972"
    base = {name: s.base_voice for name, s in speakers.items()}
    assert voice_speakers(base, "awb") == voice_speakers(base, "flite-awb") == ["awba", "awbb", "awbc"]


def test_base_voices_of_an_older_corpus_json_name_the_flite_engine(tmp_path):
    speakers = {"awba": {"engine": "flite", "voice": "awb"}, "kala": {"engine": "festival", "voice": "kal"}}
    (tmp_path / "corpus.json").write_text(json.dumps({"speakers": speakers}))
    assert read_base_voices(tmp_path) == {"awba": "flite-awb", "kala": "kal"}


def test_the_flite_voices_are_speakers_festival_lacks():
    # flite's own slt and kal are Festival's slt and kal speakers: offering them would count one
    # speaker as two voices and leak the held-out slt into training
    assert set(FLITE_VOICES) == {"awb", "rms"}


@pytest.mark.skipif(shutil.which("flite") is None, reason="needs the Debian package flite")
def test_tiny_flite_synthesis(tmp_path):
    from dinosr.data.corpus.synth import synthesize_corpus

    speakers = make_speakers(["flite-awb", "flite-rms"], variants=2)
    sentences = ["The boy found a coin.", "Measure the treasure.", "A quiet noise.", "Look at the book."]
    valid = ["rmsa", "rmsb"]
    summary = synthesize_corpus(tmp_path, sentences, speakers, seed=0, valid_speakers=valid, jobs=1)
    assert summary.num_utterances == 4
    assert not summary.failures
    ends = {}
    for line in (tmp_path / "alignments.tsv").read_text().splitlines()[1:]:
        utt, _, end, _ = line.split("\t")
        ends[utt] = float(end)
    for line in (tmp_path / "speakers.tsv").read_text().splitlines():
        utt, speaker = line.split("\t")
        info = sf.info(tmp_path / "audio" / speaker / f"{utt}.flac")
        assert info.samplerate == 16000
        assert abs(ends[utt] - info.frames / 16000) <= 0.010  # labels cover the audio
    assert read_base_voices(tmp_path)["rmsb"] == "flite-rms"
    meta = json.loads((tmp_path / "corpus.json").read_text())
    assert meta["split"] == "voice"
    assert meta["heldout_voices"] == ["flite-rms"]
