"""Word and character error rates (WER, CER) of transcripts, computed with jiwer's edit-distance alignment.

Text normalisation is the caller's job (``dinosr labels`` documents ours: upper case, apostrophes kept,
other punctuation dropped); here every text only has its whitespace collapsed (runs of spaces/tabs -> one
space, ends stripped), so ``"A  B "`` and ``"A B"`` score the same.

* WER: words = whitespace-separated tokens.
* CER: characters of the whitespace-collapsed text, **spaces included** (as jiwer's ``cer``), so a missing
  word boundary counts as one deleted character.

Rates are corpus-level: ``100 * (S + D + I) / N`` with the counts summed over all utterances and N the
reference length (``S + D + hits``); they can exceed 100 when the hypotheses have many insertions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["EditCounts", "ErrorRates", "normalize_whitespace", "score", "score_files"]


@dataclass(frozen=True)
class EditCounts:
    """Alignment counts summed over a corpus (words or characters)."""

    substitutions: int
    deletions: int
    insertions: int
    hits: int

    @property
    def ref_length(self) -> int:
        return self.substitutions + self.deletions + self.hits

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """Error rate in percent; 0 for an empty reference without insertions, inf with some."""
        if self.ref_length == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return 100.0 * self.errors / self.ref_length

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "substitutions": self.substitutions,
            "deletions": self.deletions,
            "insertions": self.insertions,
            "hits": self.hits,
            "ref_length": self.ref_length,
        }


@dataclass(frozen=True)
class ErrorRates:
    """Result of :func:`score`: ``wer``/``cer`` in percent and the counts behind them."""

    words: EditCounts
    chars: EditCounts
    num_utterances: int

    @property
    def wer(self) -> float:
        return self.words.rate

    @property
    def cer(self) -> float:
        return self.chars.rate

    def to_dict(self) -> dict[str, Any]:
        return {
            "wer": self.wer,
            "cer": self.cer,
            "num_utterances": self.num_utterances,
            "words": self.words.to_dict(),
            "chars": self.chars.to_dict(),
        }

    def summary(self) -> str:
        """One line, e.g. ``WER 12.50 % (S 3 D 1 I 1 / 40 words) | CER 4.10 % (...)``."""
        w, c = self.words, self.chars
        return (
            f"WER {self.wer:.2f} % (S {w.substitutions} D {w.deletions} I {w.insertions} / "
            f"{w.ref_length} words) | CER {self.cer:.2f} % (S {c.substitutions} D {c.deletions} "
            f"I {c.insertions} / {c.ref_length} chars) | {self.num_utterances} utterances"
        )


def normalize_whitespace(text: str) -> str:
    """Runs of whitespace -> one space, ends stripped (the only normalisation :func:`score` applies)."""
    return " ".join(text.split())


def _counts(output: Any) -> EditCounts:
    return EditCounts(
        substitutions=int(output.substitutions),
        deletions=int(output.deletions),
        insertions=int(output.insertions),
        hits=int(output.hits),
    )


def score(refs: Sequence[str], hyps: Sequence[str]) -> ErrorRates:
    """Corpus WER and CER of ``hyps`` against ``refs`` (same order, same length).

    Empty strings are allowed on both sides (an empty hypothesis = all deletions).
    """
    import jiwer

    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    refs = [normalize_whitespace(r) for r in refs]
    hyps = [normalize_whitespace(h) for h in hyps]
    # jiwer 3.x refuses empty references: against an empty reference every hypothesis token is an
    # insertion, so those pairs are counted here and only the others are aligned by jiwer.
    aligned = [i for i, r in enumerate(refs) if r]
    word_ins = sum(len(h.split()) for r, h in zip(refs, hyps) if not r)
    char_ins = sum(len(h) for r, h in zip(refs, hyps) if not r)
    words = chars = EditCounts(0, 0, 0, 0)
    if aligned:
        # jiwer's default transforms split on spaces (words) or into characters (spaces kept); the
        # whitespace collapse above makes both independent of spacing quirks.
        r, h = [refs[i] for i in aligned], [hyps[i] for i in aligned]
        words = _counts(jiwer.process_words(r, h))
        chars = _counts(jiwer.process_characters(r, h))
    return ErrorRates(
        replace(words, insertions=words.insertions + word_ins),
        replace(chars, insertions=chars.insertions + char_ins),
        len(refs),
    )


def score_files(
    ref_path: str | os.PathLike, hyp_path: str | os.PathLike, *, allow_missing: bool = False
) -> ErrorRates:
    """Score two transcript files (``utt<TAB>text`` or JSONL) matched by utterance id.

    Every reference utterance needs a hypothesis (``allow_missing=True`` scores a missing one as empty,
    i.e. all deletions); a hypothesis for an utterance not in the reference is always an error.
    """
    from dinosr.asr.transcripts import TranscriptError, read_transcripts

    refs, hyps = read_transcripts(ref_path), read_transcripts(hyp_path)
    if not refs:
        raise TranscriptError(f"{ref_path}: no transcripts")
    extra = [u for u in hyps if u not in refs]
    if extra:
        raise TranscriptError(
            f"{hyp_path}: {len(extra)} utterance(s) not in {ref_path}: {_first(extra)}"
        )
    missing = [u for u in refs if u not in hyps]
    if missing and not allow_missing:
        raise TranscriptError(
            f"{hyp_path}: no hypothesis for {len(missing)} utterance(s) of {ref_path}: {_first(missing)} "
            "(--allow-missing scores them as empty)"
        )
    return score(list(refs.values()), [hyps.get(u, "") for u in refs])


def _first(names: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names) - n} more)" if len(names) > n else "")
