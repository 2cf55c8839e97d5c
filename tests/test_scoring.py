"""WER/CER (dinosr.asr.scoring) against hand-computed alignments and a brute-force edit distance;
`dinosr wer` file matching and its errors."""

from __future__ import annotations

import json
import random

import pytest

from dinosr.asr.scoring import EditCounts, score, score_files
from dinosr.asr.transcripts import TranscriptError, read_transcripts
from dinosr.cli import main


def _levenshtein(a: list, b: list) -> int:
    """Reference edit distance (unit costs), the textbook dynamic programme."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def test_substitution_and_insertion_by_hand():
    r = score(["THE CAT SAT"], ["THE BAT SAT ON"])
    # words: CAT->BAT (S), ON inserted (I), THE/SAT hits, 3 reference words
    assert r.words == EditCounts(substitutions=1, deletions=0, insertions=1, hits=2)
    assert r.words.ref_length == 3
    assert r.wer == pytest.approx(200 / 3)
    # chars (spaces count): C->B, then " ON" inserted: 1 S + 3 I over 11 reference characters
    assert r.chars == EditCounts(substitutions=1, deletions=0, insertions=3, hits=10)
    assert r.cer == pytest.approx(400 / 11)


def test_deletion_by_hand():
    r = score(["A B C D"], ["A C D"])
    assert r.words == EditCounts(0, 1, 0, 3)
    assert r.wer == pytest.approx(25.0)
    # "A B C D" (7 chars) -> "A C D": "B" and one space deleted
    assert r.chars == EditCounts(0, 2, 0, 5)
    assert r.cer == pytest.approx(200 / 7)


def test_rates_are_corpus_level_not_averaged_per_utterance():
    r = score(["A B", "C D E F"], ["A B", "C X"])
    # utt 2: C hit, D->X, E F deleted; 3 errors over 6 words = 50 % (the per-utterance mean would be 37.5 %)
    assert r.words == EditCounts(1, 2, 0, 3)
    assert r.wer == pytest.approx(50.0)
    assert r.num_utterances == 2


def test_empty_reference_and_empty_hypothesis():
    r = score(["", "A"], ["X Y", "A"])  # empty reference: every hypothesis token is an insertion
    assert r.words == EditCounts(0, 0, 2, 1)
    assert r.wer == pytest.approx(200.0)
    assert r.chars == EditCounts(0, 0, 3, 1)  # "X Y" = 3 characters
    r = score(["AB CD"], [""])
    assert r.words == EditCounts(0, 2, 0, 0)
    assert r.chars == EditCounts(0, 5, 0, 0)
    assert (r.wer, r.cer) == (100.0, 100.0)
    assert score([""], [""]).wer == 0.0
    assert score([""], ["A"]).wer == float("inf")


def test_whitespace_is_collapsed_and_nothing_else_normalised():
    assert score(["A  B "], [" A\tB"]).cer == 0.0
    r = score(["IT'S"], ["it's"])  # case is the caller's job
    assert r.words.substitutions == 1


def test_total_errors_equal_brute_force_edit_distance():
    rng = random.Random(0)
    vocab = ["A", "B", "C", "AB", "BA"]
    refs, hyps = [], []
    for _ in range(40):
        refs.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 7))))
        hyps.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 7))))
    r = score(refs, hyps)
    assert r.words.errors == sum(_levenshtein(a.split(), b.split()) for a, b in zip(refs, hyps))
    assert r.chars.errors == sum(_levenshtein(list(a), list(b)) for a, b in zip(refs, hyps))
    assert r.words.ref_length == sum(len(a.split()) for a in refs)
    assert r.chars.ref_length == sum(len(a) for a in refs)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        score(["A", "B"], ["A"])


# ----------------------------------------------------------------------------- files and `dinosr wer`


@pytest.fixture
def ref_file(tmp_path):
    path = tmp_path / "ref.tsv"
    path.write_text("u1\tTHE CAT SAT\nu2\tA B C D\n\nu3\tHELLO\n", encoding="utf-8")
    return path


def test_files_are_matched_by_utterance_id(ref_file, tmp_path):
    hyp = tmp_path / "hyp.tsv"
    hyp.write_text("u3\tHELLO\nu2\tA C D\nu1\tTHE BAT SAT ON\n", encoding="utf-8")
    r = score_files(ref_file, hyp)
    assert r.words == EditCounts(1, 1, 1, 6)
    assert r.num_utterances == 3


def test_kaldi_and_jsonl_transcripts(tmp_path):
    kaldi = tmp_path / "text"
    kaldi.write_text("u1 THE CAT\nu2\n", encoding="utf-8")
    assert read_transcripts(kaldi) == {"u1": "THE CAT", "u2": ""}
    js = tmp_path / "hyp.jsonl"
    js.write_text('{"utt": "u1", "text": "THE BAT", "seconds": 1.5}\n{"name": "u2", "text": ""}\n')
    assert read_transcripts(js) == {"u1": "THE BAT", "u2": ""}
    assert score_files(kaldi, js).words == EditCounts(1, 0, 0, 1)


def test_missing_hypothesis_is_an_error_naming_file_and_utt(ref_file, tmp_path):
    hyp = tmp_path / "hyp.tsv"
    hyp.write_text("u1\tTHE CAT SAT\nu3\tHELLO\n", encoding="utf-8")
    with pytest.raises(TranscriptError, match=r"hyp\.tsv: no hypothesis for 1 utterance\(s\) .*: u2 "):
        score_files(ref_file, hyp)
    r = score_files(ref_file, hyp, allow_missing=True)  # u2 scored as empty: 4 deletions
    assert r.words == EditCounts(0, 4, 0, 4)


def test_extra_hypothesis_is_an_error(ref_file, tmp_path):
    hyp = tmp_path / "hyp.tsv"
    hyp.write_text("u1\tX\nu2\tX\nu3\tX\nu9\tX\n", encoding="utf-8")
    with pytest.raises(TranscriptError, match=r"hyp\.tsv: 1 utterance\(s\) not in .*ref\.tsv: u9"):
        score_files(ref_file, hyp, allow_missing=True)


def test_malformed_transcript_files(tmp_path):
    dup = tmp_path / "dup.tsv"
    dup.write_text("u1\tA\nu2\tB\nu1\tC\n", encoding="utf-8")
    with pytest.raises(TranscriptError, match=r"dup\.tsv:3: utterance 'u1' repeated \(first on line 1\)"):
        read_transcripts(dup)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"utt": "u1", "text": "A"}\n{"utt": "u2", "te\n', encoding="utf-8")
    with pytest.raises(TranscriptError, match=r"bad\.jsonl:2: not a JSON object"):
        read_transcripts(bad)
    latin = tmp_path / "latin.tsv"
    latin.write_bytes("u1\tCAF\u00c9\n".encode("latin-1"))
    with pytest.raises(TranscriptError, match=r"latin\.tsv: not UTF-8"):
        read_transcripts(latin)
    with pytest.raises(TranscriptError, match=r"nope\.tsv: no such file"):
        read_transcripts(tmp_path / "nope.tsv")


def test_wer_command(ref_file, tmp_path, capsys):
    hyp = tmp_path / "hyp.tsv"
    hyp.write_text("u1\tTHE BAT SAT ON\nu2\tA C D\nu3\tHELLO\n", encoding="utf-8")
    assert main(["wer", str(ref_file), str(hyp)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("WER 37.50 % (S 1 D 1 I 1 / 8 words)")
    assert main(["wer", str(ref_file), str(hyp), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["wer"] == pytest.approx(37.5)
    assert data["words"] == {
        "rate": pytest.approx(37.5), "substitutions": 1, "deletions": 1, "insertions": 1, "hits": 6,
        "ref_length": 8,
    }  # fmt: skip
    assert data["chars"]["ref_length"] == len("THE CAT SAT") + len("A B C D") + len("HELLO")
