"""Beam search with a word n-gram LM (dinosr.asr.lm, optional extra dinosr[lm] = flashlight-text).

The LM is a hand-written ARPA bigram file of a few words. CI installs the extra, so these tests run there;
they skip only where flashlight-text is absent (e.g. Python 3.13, which has no wheel)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from asr_utils import DICT as MODEL_DICT
from asr_utils import biased_ctc_model
from dinosr.asr.decode import greedy_decode
from dinosr.asr.lm import LMError, arpa_unigrams, read_lexicon
from dinosr.cli import main
from dinosr.data.labels import Dictionary
from dinosr.interop.ctc_pretrained import save_ctc_model

DICT = Dictionary(["C", "A", "T", "B", "|"])


def write_arpa(path, unigrams: dict[str, float], bigrams: dict[str, float]) -> None:
    """ARPA text (fields separated by tabs, as KenLM requires); KenLM needs at least a bigram model."""
    rows = ["\\data\\", f"ngram 1={len(unigrams)}", f"ngram 2={len(bigrams)}", "", "\\1-grams:"]
    rows += [f"{p}\t{w}\t-0.3" if w != "</s>" else f"{p}\t{w}" for w, p in unigrams.items()]
    rows += ["", "\\2-grams:", *(f"{p}\t{ws}" for ws, p in bigrams.items()), "", "\\end\\", ""]
    path.write_text("\n".join(rows), encoding="utf-8")


@pytest.fixture
def arpa(tmp_path):
    path = tmp_path / "lm.arpa"
    # CAT is likely, CAB is rare
    unigrams = {"<s>": -99.0, "</s>": -1.0, "<unk>": -3.0, "CAT": -0.05, "CAB": -3.0}
    write_arpa(path, unigrams, {"<s> CAT": -0.1, "CAT </s>": -0.1})
    return path


def _frame(**probs: float) -> torch.Tensor:
    v = torch.full((len(DICT),), 1e-4)
    for symbol, p in probs.items():
        v[0 if symbol == "blank" else DICT.index(symbol)] = p
    return (v / v.sum()).log()


def _emissions() -> torch.Tensor:
    """C, blank, A, then B slightly above T, then the word separator: acoustically 'CAB'."""
    frames = [
        _frame(C=0.9, blank=0.1),
        _frame(blank=0.9),
        _frame(A=0.9, blank=0.1),
        _frame(B=0.55, T=0.45),
        _frame(**{"|": 0.9, "blank": 0.1}),
    ]
    return torch.stack(frames)[None]


def test_arpa_unigrams_and_lexicon_files(arpa, tmp_path):
    assert arpa_unigrams(arpa) == ["CAT", "CAB"]
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("CAT\tC A T |\nCAT C A T T |\n\nCAB C A B |\n")
    assert read_lexicon(lexicon) == {
        "CAT": [["C", "A", "T", "|"], ["C", "A", "T", "T", "|"]],
        "CAB": [["C", "A", "B", "|"]],
    }
    bad = tmp_path / "bad.txt"
    bad.write_text("CAT\n")
    with pytest.raises(LMError, match=r"bad\.txt:1: expected 'WORD W O R D \|'"):
        read_lexicon(bad)
    (tmp_path / "x.arpa").write_text("hello\n")
    with pytest.raises(LMError, match=r"x\.arpa: no \\1-grams: section"):
        arpa_unigrams(tmp_path / "x.arpa")


def test_a_strong_lm_turns_the_hypothesis_into_the_likely_word(arpa):
    pytest.importorskip("flashlight.lib.text", reason="optional extra dinosr[lm] (flashlight-text) absent")
    from dinosr.asr.lm import BeamSearchDecoder, BeamSettings

    emissions = _emissions()
    assert greedy_decode(emissions, None, DICT) == ["CAB"]
    no_lm = BeamSearchDecoder(DICT, arpa, settings=BeamSettings(lm_weight=0.0))
    assert no_lm(emissions, torch.tensor([5])) == ["CAB"]  # the acoustics alone: the beam finds greedy's word
    strong = BeamSearchDecoder(DICT, arpa, settings=BeamSettings(lm_weight=2.0))
    assert strong(emissions, torch.tensor([5])) == ["CAT"]
    # a batch (each row read at its own offset): row 1 is clearly CAT; both padded with 3 frames of C that
    # the frame lengths cut off
    cat = emissions.clone()
    cat[0, 3] = _frame(T=0.9, B=0.1)
    pad = torch.stack([_frame(C=0.99)] * 3)[None]
    batch = torch.cat([torch.cat([emissions, pad], 1), torch.cat([cat, pad], 1)])
    assert no_lm(batch, torch.tensor([5, 5])) == ["CAB", "CAT"]


def test_lm_errors(arpa, tmp_path):
    pytest.importorskip("flashlight.lib.text", reason="optional extra dinosr[lm] (flashlight-text) absent")
    from dinosr.asr.lm import BeamSearchDecoder

    with pytest.raises(LMError, match="no such language model file"):
        BeamSearchDecoder(DICT, tmp_path / "missing.arpa")
    unigram_only = tmp_path / "uni.arpa"
    unigram_only.write_text(
        "\\data\\\nngram 1=3\n\n\\1-grams:\n-1.0\t<s>\n-1.0\t</s>\n-1.0\tCAT\n\n\\end\\\n"
    )
    with pytest.raises(LMError, match=r"uni\.arpa: KenLM cannot read it: .*bigram"):
        BeamSearchDecoder(DICT, unigram_only)
    other = tmp_path / "other.arpa"
    write_arpa(other, {"<s>": -99.0, "</s>": -1.0, "<unk>": -1.0, "DOG": -0.1}, {"<s> DOG": -0.1})
    with pytest.raises(LMError, match="no lexicon word is spelt with the dictionary's symbols"):
        BeamSearchDecoder(DICT, other)


def test_lexicon_without_lm_is_a_one_line_error(tmp_path, capsys):
    save_ctc_model(biased_ctc_model(), MODEL_DICT, tmp_path / "ft")
    soundfile.write(tmp_path / "a.wav", np.zeros(8000, dtype=np.float32), 16000)
    assert main(["transcribe", str(tmp_path / "ft"), str(tmp_path / "a.wav"), "--lexicon", "lex.txt"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "dinosr transcribe: error: --lexicon needs --lm (the lexicon constrains the LM beam search)"
    )
