"""Greedy CTC decoding (dinosr.asr.decode) against a brute-force per-frame collapse."""

import pytest
import torch

from dinosr.asr.decode import greedy_decode, greedy_ids, ids_to_text
from dinosr.data.labels import Dictionary

D = Dictionary(["|", "A", "B", "C"])  # ids: <s>=0 (blank), <pad>, </s>, <unk>, |=4, A=5, B=6, C=7


def _brute_force(scores: torch.Tensor, length: int) -> str:
    """One utterance, frame by frame: argmax, skip a repeat of the previous frame, skip specials."""
    text, previous = "", None
    for t in range(length):
        best = max(range(scores.shape[-1]), key=lambda v: scores[t, v].item())
        if best != previous and best >= 4:
            symbol = D.symbols[best]
            text += " " if symbol == "|" else symbol
        previous = best
    return " ".join(text.split())


def _one_hot(ids: list[int], vocab: int = len(D)) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(ids), vocab).float()


def test_hand_example():
    #            A  A  _  A  B  B  |  |  C  _  C  |  (padding: A)
    frames = [5, 5, 0, 5, 6, 6, 4, 4, 7, 0, 7, 4, 5, 5]
    scores = _one_hot(frames)[None]
    assert greedy_ids(scores, torch.tensor([12])) == [[5, 5, 6, 4, 7, 7, 4]]
    assert greedy_decode(scores, torch.tensor([12]), D) == ["AAB CC"]
    assert greedy_decode(scores, None, D) == ["AAB CC A"]


def test_against_brute_force_collapse():
    g = torch.Generator().manual_seed(0)
    b, t = 16, 40
    # Few symbols and sticky frames so repeats, blanks and separators all occur.
    ids = torch.randint(0, len(D), (b, t), generator=g)
    sticky = torch.rand(b, t, generator=g) < 0.5
    for j in range(1, t):
        ids[:, j] = torch.where(sticky[:, j], ids[:, j - 1], ids[:, j])
    scores = torch.randn(b, t, len(D), generator=g) * 0.1 + 3 * torch.nn.functional.one_hot(ids, len(D))
    lengths = torch.randint(0, t + 1, (b,), generator=g)
    lengths[0], lengths[1] = t, 0
    expected = [_brute_force(scores[i], int(lengths[i])) for i in range(b)]
    assert greedy_decode(scores, lengths, D) == expected
    assert greedy_decode(scores.log_softmax(-1), lengths, D) == expected  # log-probs decode the same
    assert expected[1] == ""
    assert any(" " in e for e in expected)  # word boundaries were exercised


def test_ids_to_text():
    line = "H E L L O | W O R L D |"
    d = Dictionary.build([line])
    assert ids_to_text(d.encode(line), d) == "HELLO WORLD"
    bar, h, o = d.index("|"), d.index("H"), d.index("O")
    assert ids_to_text([bar, bar, h, 3, 0, bar, o], d) == "H O"  # specials dropped, spaces collapsed
    assert ids_to_text([], d) == ""


def test_vocabulary_size_is_checked():
    with pytest.raises(ValueError, match="9 classes but the dictionary 8"):
        greedy_decode(torch.zeros(1, 3, 9), None, D)
