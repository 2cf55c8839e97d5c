"""Greedy (best-path) CTC decoding, batched; label ids to text.

Best path: per frame the most likely symbol, then consecutive repeats collapsed, then the blank removed
(so "A A" needs a blank between the two A's). Text follows fairseq's ``post_process(..., "letter")``:
symbols are concatenated, the word separator ``|`` becomes a space, spaces are collapsed and stripped.
The special symbols (blank ``<s>``, ``<pad>``, ``</s>``, ``<unk>``) never appear in the text.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from dinosr.data.labels import Dictionary

__all__ = ["greedy_decode", "greedy_ids", "ids_to_text"]


def ids_to_text(ids: Iterable[int], dictionary: Dictionary) -> str:
    """Label ids -> words: ids of ``"H I | Y O U |"`` -> ``"HI YOU"``. Specials dropped, repeats kept."""
    n = dictionary.nspecial
    symbols = "".join(dictionary.symbols[int(i)] for i in ids if int(i) >= n)
    return " ".join(symbols.replace(dictionary.word_separator, " ").split())


@torch.no_grad()
def greedy_ids(scores: Tensor, frame_lengths: Tensor | None = None, *, blank: int = 0) -> list[list[int]]:
    """Best-path label ids per utterance (repeats collapsed, blank removed).

    Args:
        scores: (B, T, V) logits or log-probabilities (the argmax is the same).
        frame_lengths: (B,) valid frames, or None (all T frames valid).
        blank: blank index.

    Returns:
        B lists of label ids.
    """
    best = scores.argmax(-1)  # (B, T)
    b, t = best.shape
    changed = torch.ones_like(best, dtype=torch.bool)
    changed[:, 1:] = best[:, 1:] != best[:, :-1]
    keep = changed & (best != blank)
    if frame_lengths is not None:
        keep &= torch.arange(t, device=best.device)[None, :] < frame_lengths.to(best.device)[:, None]
    best, keep = best.cpu(), keep.cpu()
    return [best[i][keep[i]].tolist() for i in range(b)]


def greedy_decode(scores: Tensor, frame_lengths: Tensor | None, dictionary: Dictionary) -> list[str]:
    """Batched greedy CTC decoding to text: B transcripts (upper-case words separated by single spaces).

    Args:
        scores: (B, T, V) logits or log-probabilities of a CTC model (blank = ``dictionary.blank``).
        frame_lengths: (B,) valid frames (``CTCOutput.frame_lengths``), or None.
        dictionary: the fine-tuning dictionary (V = ``len(dictionary)``).
    """
    if scores.shape[-1] != len(dictionary):
        raise ValueError(
            f"scores have {scores.shape[-1]} classes but the dictionary {len(dictionary)} symbols"
        )
    best = greedy_ids(scores, frame_lengths, blank=dictionary.blank)
    return [ids_to_text(ids, dictionary) for ids in best]
