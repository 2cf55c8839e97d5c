"""Corpus generator: .pho and Festival parsing, length checks, a tiny Festival run, the bundled corpus."""

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dinosr.data.corpus import bundled_corpus
from dinosr.data.corpus.festival import (
    FESTIVAL_VOICES,
    FestivalRequest,
    build_script,
    festival_segments,
    parse_festival_output,
)
from dinosr.data.corpus.layout import letters, normalise_words
from dinosr.data.corpus.mbrola import parse_pho, pho_segments, scale_pho_pitch
from dinosr.data.corpus.phones import PHONES
from dinosr.data.corpus.speakers import choose_valid_speakers, make_speakers
from dinosr.data.corpus.split import default_heldout_voice, resplit_corpus, split_metadata
from dinosr.data.corpus.synth import UtteranceError, add_noise, reconcile, speech_power
from dinosr.data.corpus.voices import read_base_voices, voices_tsv_text

# A hand-written .pho in the format espeak-ng --pho writes for mb-us1 ("the boy").
PHO_SAMPLE = """\
; espeak-ng output for mb-us1
_ 120
D 45 0 110 80 105
@ 60 50 100
b 70
OI 180 20 130 80 120
_ 225 ; final pause
#
"""

# Captured `festival --batch` output of build_script() for "Hello world." with kal_diphone.
FESTIVAL_SAMPLE = """\
UTT u1
WORD Hello
WORD world
SEG pau 0.220000
SEG hh 0.265391
SEG ax 0.310772
SEG l 0.365541
SEG ow 0.520117
SEG w 0.587413
SEG er 0.701226
SEG l 0.793540
SEG d 0.884901
SEG pau 1.104901
DONE u1
UTT u2
FAILED
"""


def test_parse_pho():
    phones = parse_pho(PHO_SAMPLE)
    assert [p for p, _ in phones] == ["_", "D", "@", "b", "OI", "_"]
    assert phones[1][1] == pytest.approx(0.045)
    segs = pho_segments(phones)
    assert [s[0] for s in segs] == ["sil", "DH", "AH", "B", "OY", "sil"]
    assert segs[-1][2] == pytest.approx(0.7)
    assert all(a[2] == b[1] for a, b in itertools.pairwise(segs))


def test_parse_pho_rejects_bad_line():
    with pytest.raises(ValueError, match="bad"):
        parse_pho("D\n")


def test_parse_festival_output():
    results = parse_festival_output(FESTIVAL_SAMPLE)
    assert list(results) == ["u1"]  # u2 failed and is left out
    res = results["u1"]
    assert res.words == ["Hello", "world"]
    segs = festival_segments(res)
    assert [s[0] for s in segs] == ["sil", "HH", "AH", "L", "OW", "W", "ER", "L", "D", "sil"]
    assert segs[0][1] == 0.0
    assert segs[-1][2] == pytest.approx(1.104901)


def test_build_script_escapes_text():
    req = FestivalRequest("u1", 'He said "hi" \\ bye', "/tmp/x.wav", phone_factors=[1.1, 0.9])
    script = build_script(FESTIVAL_VOICES["kal"], [req])
    assert '"He said \\"hi\\" \\\\ bye"' in script
    assert "'(1.1000 0.9000)" in script
    assert "(voice_kal_diphone)" in script
    hts = build_script(FESTIVAL_VOICES["slt"], [req])
    assert """'(("-r" 1.0000))""" in hts  # the only hts_engine option Debian's Festival reads
    assert "1.1000" not in hts


def test_reconcile_checks_length():
    sr = 16000
    audio = np.zeros(sr, dtype=np.float32)
    segs = [("sil", 0.0, 0.5), ("AH", 0.5, 0.995)]
    assert reconcile(audio, segs) is audio  # 5 ms off: fine
    with pytest.raises(UtteranceError):
        reconcile(audio, [("sil", 0.0, 0.5), ("AH", 0.5, 0.9)])  # 100 ms off
    # a short silent tail after a final silence label is trimmed (diphone voices emit one) ...
    trimmed = reconcile(audio, [("AH", 0.0, 0.5), ("sil", 0.5, 0.97)])
    assert len(trimmed) == round(0.97 * sr)
    # ... but not when it holds sound
    loud = audio.copy()
    loud[-200:] = 0.5
    with pytest.raises(UtteranceError):
        reconcile(loud, [("AH", 0.0, 0.5), ("sil", 0.5, 0.97)])


def test_noise_snr():
    rng = np.random.default_rng(0)
    speech = np.sin(np.arange(32000) * 0.05).astype(np.float32) * 0.1
    noisy = add_noise(speech, 40.0, rng)
    snr = 10 * np.log10(speech_power(speech) / np.mean((noisy - speech) ** 2))
    assert snr == pytest.approx(40.0, abs=0.5)


def test_speakers_and_valid_split():
    speakers = make_speakers(["kal", "slt"])
    assert [s.name for s in speakers] == ["kala", "kalb", "kalc", "slta", "sltb", "sltc"]
    valid = choose_valid_speakers(speakers, 2)
    assert len(valid) == 2
    assert {v[:3] for v in valid} == {"kal", "slt"}


def test_scale_pho_pitch_scales_only_pitch_targets():
    scaled = scale_pho_pitch(PHO_SAMPLE, 1.5)
    assert parse_pho(scaled) == parse_pho(PHO_SAMPLE)  # durations untouched
    lines = [line.split() for line in scaled.splitlines()]
    assert lines[2] == ["D", "45", "0", "165.0", "80", "157.5"]
    assert lines[5][:4] == ["OI", "180", "20", "195.0"]
    assert scale_pho_pitch(PHO_SAMPLE, 1.0) == PHO_SAMPLE


def test_pseudo_speaker_transforms():
    resample = {s.name: s for s in make_speakers(["kal", "slt", "mbrola-us1"])}
    assert resample["kala"].transform == "none"
    assert resample["kalb"].transform == "resample f0=0.855 formant=0.900 tempo=0.972"
    # HTS (slt): Festival ignores hts_engine's f0 option, so only the resampling moves f0
    assert resample["sltb"].transform == "resample f0=0.900 formant=0.900 tempo=0.972"
    assert resample["us1b"].base_voice == "mbrola-us1"
    warp = {s.name: s for s in make_speakers(["kal"], variants=5, method="warp")}
    # net factors asked for: formant 0.88 with f0 1.20 at the plain tempo (b), 1.18 / 1.40 / 1.05 (d)
    assert warp["kalb"].transform == "warp f0=1.200 formant=0.880 tempo=1.000"
    assert warp["kald"].transform == "warp f0=1.400 formant=1.180 tempo=1.050"
    assert warp["kalb"].resample * warp["kalb"].pitch == pytest.approx(1.2)
    with pytest.raises(ValueError, match="1-3"):
        make_speakers(["kal"], variants=5)
    with pytest.raises(ValueError, match="unknown pseudo-speaker method"):
        make_speakers(["kal"], method="sox")


def test_voices_tsv_round_trip_and_errors(tmp_path):
    rows = [("kala", "kal", "none"), ("us1b", "mbrola-us1", "resample f0=0.855 formant=0.900 tempo=0.972")]
    (tmp_path / "voices.tsv").write_text(voices_tsv_text(rows))
    expected = {"kala": "kal", "us1b": "mbrola-us1"}
    assert read_base_voices(tmp_path) == expected
    assert read_base_voices(tmp_path / "voices.tsv") == expected
    (tmp_path / "valid.tsv").write_text(".\n")
    assert read_base_voices(tmp_path / "valid.tsv") == expected  # any file of the corpus
    with pytest.raises(ValueError, match="nothing_here"):
        read_base_voices(tmp_path / "nothing_here")
    empty = tmp_path / "real"
    empty.mkdir()
    assert read_base_voices(empty) == {}  # no metadata: real speech
    (tmp_path / "voices.tsv").write_text("speaker\tbase_voice\ttransform\nkala\tkal\n")
    with pytest.raises(ValueError, match=r"voices.tsv:2"):
        read_base_voices(tmp_path)
    (tmp_path / "voices.tsv").write_text("kala\tkal\tnone\n")
    with pytest.raises(ValueError, match="header"):
        read_base_voices(tmp_path)


def test_split_metadata_and_default_heldout_voice():
    base = {"kala": "kal", "kalb": "kal", "slta": "slt", "sltb": "slt"}
    voice_split = {"split": "voice", "heldout_voices": ["slt"], "shared_voices": []}
    assert split_metadata(base, ["slta", "sltb"]) == voice_split
    assert split_metadata(base, ["kalb"])["split"] == "speaker"
    assert split_metadata(base, ["kalb"])["shared_voices"] == ["kal"]
    assert default_heldout_voice(["kal", "ked", "slt"]) == "slt"
    assert default_heldout_voice(["mbrola-us1", "mbrola-us2"]) == "mbrola-us2"


def test_resplit_keeps_rows_and_transcripts_together(tmp_path):
    root = tmp_path / "corpus"
    shutil.copytree(bundled_corpus(), root, ignore=shutil.ignore_patterns("audio", "voices.tsv"))
    before = _rows(root)
    info = resplit_corpus(root, ["kala", "kalb", "kalc"])
    assert info == {"split": "voice", "heldout_voices": ["kal"], "shared_voices": []}
    after = _rows(root)
    assert {u: r[:3] for u, r in after.items()} == {u: r[:3] for u, r in before.items()}
    assert {u for u, r in after.items() if r[3] == "valid"} == {u for u in after if u.startswith("kal")}
    assert read_base_voices(root)["kalb"] == "kal"  # voices.tsv derived from corpus.json
    meta = json.loads((root / "corpus.json").read_text())
    assert meta["valid_speakers"] == ["kala", "kalb", "kalc"]
    assert meta["split"] == "voice"
    with pytest.raises(ValueError, match="unknown valid speakers"):
        resplit_corpus(root, ["nobody"])


def _rows(root: Path) -> dict[str, tuple[str, str, str, str]]:
    """utt -> (manifest row, .wrd line, .ltr line, split)."""
    out = {}
    for split in ("train", "valid"):
        tsv = (root / f"{split}.tsv").read_text().splitlines()[1:]
        wrd = (root / f"{split}.wrd").read_text().splitlines()
        ltr = (root / f"{split}.ltr").read_text().splitlines()
        assert len(tsv) == len(wrd) == len(ltr)
        for row, words, chars in zip(tsv, wrd, ltr, strict=True):
            out[Path(row.split("\t")[0]).stem] = (row, words, chars, split)
    return out


def test_cli_holds_out_a_whole_voice():
    from argparse import Namespace

    from dinosr.data.corpus.cli import _valid_speakers

    speakers = make_speakers(["kal", "ked", "slt"])

    def pick(**options):
        args = Namespace(**{"heldout_voice": None, "valid_speakers": None, **options})
        return _valid_speakers(args, speakers)

    assert pick() == ["slta", "sltb", "sltc"]  # default: slt
    assert pick(heldout_voice="ked") == ["keda", "kedb", "kedc"]
    assert pick(heldout_voice="all") == [s.name for s in speakers]
    assert pick(valid_speakers="kalb") == ["kalb"]  # the older speaker split, on request
    with pytest.raises(ValueError, match="no speaker has base voice"):
        pick(heldout_voice="rab")
    with pytest.raises(ValueError, match="leaves no training speaker"):
        pick(heldout_voice="kal,ked,slt")
    one_voice = make_speakers(["kal"])
    assert len(_valid_speakers(Namespace(heldout_voice=None, valid_speakers=None), one_voice)) == 1


def test_transcripts():
    words = normalise_words(["Hello,", "world's", "42"])
    assert words == ["HELLO", "WORLD'S"]
    assert letters(["AB", "C"]) == "A B | C |"


@pytest.mark.skipif(shutil.which("festival") is None or not Path(FESTIVAL_VOICES["kal"].directory).is_dir(),
                    reason="needs Debian packages festival and festvox-kallpc16k")  # fmt: skip
def test_tiny_festival_synthesis(tmp_path):
    from dinosr.data.corpus.synth import synthesize_corpus

    speakers = make_speakers(["kal"], variants=2)  # kala (plain) and kalb (resampled)
    sentences = ["The boy found a coin.", "Measure the treasure quickly."]
    summary = synthesize_corpus(tmp_path, sentences, speakers, seed=0, valid_speakers=["kalb"], jobs=1)
    assert summary.num_utterances == 2
    assert not summary.failures
    corpus = _load(tmp_path)
    for utt, (path, _) in corpus["audio"].items():
        info = sf.info(path)
        assert info.samplerate == 16000
        assert info.channels == 1
        segs = corpus["align"][utt]
        assert abs(segs[-1][1] - info.frames / 16000) <= 0.010
        assert segs[0][0] == 0.0
    assert corpus["train_speakers"] == {"kala"}
    assert corpus["valid_speakers"] == {"kalb"}
    assert read_base_voices(tmp_path) == {"kala": "kal", "kalb": "kal"}
    assert json.loads((tmp_path / "corpus.json").read_text())["split"] == "speaker"  # kalb shares kal
    assert (tmp_path / "train.wrd").read_text().split("\n")[0] in {
        "THE BOY FOUND A COIN",
        "MEASURE THE TREASURE QUICKLY",
    }


def _load(root: Path) -> dict:
    """Read a corpus directory with nothing but the stdlib and soundfile."""
    audio, split_of = {}, {}
    for split in ("train", "valid"):
        lines = (root / f"{split}.tsv").read_text().splitlines()
        base = Path(lines[0])
        base = base if base.is_absolute() else root / base
        for line in lines[1:]:
            rel, n = line.split("\t")
            utt = Path(rel).stem
            audio[utt] = (base / rel, int(n))
            split_of[utt] = split
        assert len((root / f"{split}.wrd").read_text().splitlines()) == len(lines) - 1
        assert len((root / f"{split}.ltr").read_text().splitlines()) == len(lines) - 1
    align: dict[str, list[tuple[float, float, str]]] = {}
    for line in (root / "alignments.tsv").read_text().splitlines()[1:]:  # skip the header
        utt, start, end, phone = line.split("\t")
        align.setdefault(utt, []).append((float(start), float(end), phone))
    speakers = dict(line.split("\t") for line in (root / "speakers.tsv").read_text().splitlines())
    return {
        "audio": audio,
        "align": align,
        "speakers": speakers,
        "train_speakers": {speakers[u] for u, s in split_of.items() if s == "train"},
        "valid_speakers": {speakers[u] for u, s in split_of.items() if s == "valid"},
    }


def test_bundled_corpus():
    root = bundled_corpus()
    corpus = _load(root)
    meta = json.loads((root / "corpus.json").read_text())
    assert len(corpus["audio"]) == meta["num_utterances"] >= 100
    assert corpus["train_speakers"]
    assert corpus["valid_speakers"]
    assert not corpus["train_speakers"] & corpus["valid_speakers"]
    # valid.* is a voice training never heard: no valid speaker shares a base voice with training
    base = read_base_voices(root)
    assert set(base) == set(corpus["speakers"].values())
    assert {base[s] for s in corpus["valid_speakers"]} == {"slt"}
    assert {base[s] for s in corpus["train_speakers"]} == {"kal", "ked", "flite-awb", "flite-rms"}
    assert meta["split"] == "voice"
    assert meta["heldout_voices"] == ["slt"]
    assert meta["base_voices"] == base
    assert set(corpus["align"]) == set(corpus["audio"]) == set(corpus["speakers"])
    phones = set()
    for _utt, (path, num_samples) in sorted(corpus["audio"].items())[::10]:  # a sample keeps it fast
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, num_samples)
    for utt, segs in corpus["align"].items():
        _, num_samples = corpus["audio"][utt]
        assert segs[0][0] == 0.0
        assert segs[-1][1] == pytest.approx(num_samples / 16000, abs=1e-3)
        assert all(a[1] == b[0] for a, b in itertools.pairwise(segs))  # contiguous
        phones.update(p for _, _, p in segs)
    assert phones <= set(PHONES)
    assert len(phones) == 40  # all 39 ARPAbet phones + sil occur
    minutes = sum(n for _, n in corpus["audio"].values()) / 16000 / 60
    assert minutes == pytest.approx(meta["hours"] * 60, rel=1e-3)
    assert minutes > 10


def test_bundled_corpus_reads_with_library_readers():
    """The manifest's relative root resolves against the manifest; alignments cover every utterance."""
    from dinosr.data.alignments import load_frame_labels
    from dinosr.data.manifest import read_manifest

    root = bundled_corpus()
    entries = read_manifest(root / "train.tsv") + read_manifest(root / "valid.tsv")
    assert all(e.path.is_file() for e in entries)
    labels = load_frame_labels(root / "alignments.tsv")
    assert {e.name for e in entries} == set(labels)
    for e in entries[:20]:
        # 20 ms frames: the label sequence spans the audio within one frame
        assert abs(len(labels[e.name]) - e.num_samples / 320) <= 1.5
