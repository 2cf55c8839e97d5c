"""CTC beam search with a word n-gram language model (KenLM), through flashlight-text's lexicon decoder.

The optional extra ``dinosr[lm]`` installs ``flashlight-text`` (the decoder behind torchaudio's
``ctc_decoder``; its PyPI wheels bundle KenLM, so ARPA and KenLM binary files load without a separate
``kenlm`` package). docs/finetuning.md ("Decoding") says why this library and not pyctcdecode.

The search (fairseq's ``--w2l-decoder kenlm``): hypotheses are letter sequences constrained by a lexicon
(``word -> letters + "|"``, a trie), scored by ``log p_ctc + lm_weight * log p_lm + word_score * words``; the
word separator ``|`` is the silence token, the dictionary's blank the CTC blank, and out-of-lexicon words
are never produced (``unk_score = -inf``). The lexicon is read from a file (``WORD<TAB>W O R D |`` or
``WORD W O R D |`` lines, fairseq/wav2letter layout) or, for an ARPA file, built from the LM's unigrams
(spelling = the word's characters + ``|``). Words must use the dictionary's symbols (upper case after
``dinosr labels`` normalisation); words with other characters are left out of the lexicon (counted in a
warning).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from dinosr.data.labels import SPECIAL_SYMBOLS, Dictionary
from dinosr.errors import DinosrError, LabelError

log = logging.getLogger(__name__)

__all__ = ["BeamSearchDecoder", "BeamSettings", "LMError", "arpa_unigrams", "read_lexicon"]

INSTALL_HINT = "pip install 'dinosr[lm]' (flashlight-text; PyPI wheels for Python 3.10-3.12)"


class LMError(DinosrError, ValueError):
    """The language model or lexicon cannot be used (missing package, bad file); names the file."""


@dataclass(frozen=True)
class BeamSettings:
    """Beam search parameters (defaults: torchaudio's ``ctc_decoder``).

    beam_size: hypotheses kept per frame; beam_size_token: tokens considered per frame (None = all);
    beam_threshold: prune hypotheses this far below the best; lm_weight: weight of the LM log-probability;
    word_score: added per emitted word (insertion bonus); sil_score: added per silence (``|``) token.
    """

    beam_size: int = 50
    beam_size_token: int | None = None
    beam_threshold: float = 50.0
    lm_weight: float = 2.0
    word_score: float = 0.0
    sil_score: float = 0.0

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise LMError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.beam_size_token is not None and self.beam_size_token < 1:
            raise LMError(f"beam_size_token must be >= 1, got {self.beam_size_token}")


def arpa_unigrams(path: str | os.PathLike) -> list[str]:
    """The words of an ARPA file's ``\\1-grams:`` section (sentence markers and ``<unk>`` left out)."""
    path = Path(path)
    words: list[str] = []
    in_unigrams = False
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line.startswith("\\"):
                    if in_unigrams:
                        break  # \2-grams: or \end\
                    in_unigrams = line == "\\1-grams:"
                    continue
                if in_unigrams and line:
                    fields = line.split()
                    if len(fields) < 2:
                        raise LMError(f"{path}: malformed unigram line {line!r}")
                    words.append(fields[1])
    except FileNotFoundError:
        raise LMError(f"{path}: no such language model file") from None
    except UnicodeDecodeError:
        raise LMError(
            f"{path}: not a text ARPA file (a KenLM binary needs --lexicon to list its words)"
        ) from None
    if not words:
        raise LMError(f"{path}: no \\1-grams: section; not an ARPA file (give --lexicon for a binary LM)")
    return [w for w in words if w not in ("<s>", "</s>", "<unk>")]


def read_lexicon(path: str | os.PathLike) -> dict[str, list[list[str]]]:
    """``WORD<TAB>W O R D |`` (or space separated) lines -> {word: [spelling, ...]} (one or more each)."""
    path = Path(path)
    lexicon: dict[str, list[list[str]]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise LMError(f"{path}: no such lexicon file") from None
    except UnicodeDecodeError:
        raise LMError(f"{path}: not a UTF-8 lexicon file") from None
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise LMError(f"{path}:{number}: expected 'WORD W O R D |', got {line!r}")
        lexicon.setdefault(fields[0], []).append(fields[1:])
    if not lexicon:
        raise LMError(f"{path}: the lexicon is empty")
    return lexicon


def _spell(words: list[str], dictionary: Dictionary) -> dict[str, list[list[str]]]:
    return {w: [[*w, dictionary.word_separator]] for w in words}


class BeamSearchDecoder:
    """``decoder(logits (B, T, V), frame_lengths (B,)) -> B transcripts`` with a KenLM word LM.

    Args:
        dictionary: the model's dictionary (blank = index 0, word separator ``|``).
        lm_path: ARPA (``.arpa``) or KenLM binary file.
        lexicon: a lexicon file, or None to build it from the ARPA unigrams.
        settings: beam search parameters.
    """

    def __init__(
        self,
        dictionary: Dictionary,
        lm_path: str | os.PathLike,
        lexicon: str | os.PathLike | None = None,
        settings: BeamSettings | None = None,
    ) -> None:
        try:
            from flashlight.lib.text.decoder import (
                CriterionType,
                LexiconDecoder,
                LexiconDecoderOptions,
                SmearingMode,
                Trie,
            )
            from flashlight.lib.text.decoder.kenlm import KenLM
            from flashlight.lib.text.dictionary import Dictionary as FlDictionary
            from flashlight.lib.text.dictionary import create_word_dict
        except ImportError:
            raise LMError(
                f"beam search with a language model needs flashlight-text: {INSTALL_HINT}"
            ) from None
        lm_path = Path(lm_path)
        if not lm_path.is_file():
            raise LMError(f"{lm_path}: no such language model file")
        self.settings = settings = settings or BeamSettings()
        self.dictionary = dictionary
        sep = dictionary.word_separator
        if sep not in dictionary:
            raise LabelError(f"the dictionary has no word separator {sep!r}; a word LM needs word boundaries")
        words = read_lexicon(lexicon) if lexicon is not None else _spell(arpa_unigrams(lm_path), dictionary)
        usable = {
            w: [s for s in spellings if all(t in dictionary and t not in SPECIAL_SYMBOLS for t in s)]
            for w, spellings in words.items()
        }
        usable = {w: s for w, s in usable.items() if s}
        if len(usable) < len(words):
            dropped = sorted(set(words) - set(usable))
            log.warning(
                "%d of %d lexicon words use symbols outside the dictionary and are left out (e.g. %s)",
                len(dropped), len(words), ", ".join(dropped[:5]),
            )  # fmt: skip
        if not usable:
            raise LMError(f"{lexicon or lm_path}: no lexicon word is spelt with the dictionary's symbols")

        self._tokens = FlDictionary(list(dictionary.symbols))
        # flashlight's word dictionary needs an "<unk>" entry (its default index); it gets no spelling
        self._words = create_word_dict({**usable, "<unk>": []})
        try:
            self._lm = KenLM(str(lm_path), self._words)
        except Exception as err:  # KenLM's C++ exception: source location line, then the reason
            reason = [line.strip() for line in str(err).splitlines() if line.strip()][-1:] or [
                "unknown error"
            ]
            raise LMError(f"{lm_path}: KenLM cannot read it: {reason[0][:200]}") from None
        sil = dictionary.index(sep)
        trie = Trie(len(dictionary), sil)
        start = self._lm.start(False)
        for word, spellings in usable.items():
            index = self._words.get_index(word)
            _, score = self._lm.score(start, index)
            for spelling in spellings:
                trie.insert([dictionary.index(t) for t in spelling], index, score)
        trie.smear(SmearingMode.MAX)
        options = LexiconDecoderOptions(
            beam_size=settings.beam_size,
            beam_size_token=settings.beam_size_token or len(dictionary),
            beam_threshold=settings.beam_threshold,
            lm_weight=settings.lm_weight,
            word_score=settings.word_score,
            unk_score=-math.inf,
            sil_score=settings.sil_score,
            log_add=False,
            criterion_type=CriterionType.CTC,
        )
        self._trie = trie  # the decoder keeps a reference only on the C++ side
        self._decoder = LexiconDecoder(
            options, trie, self._lm, sil, dictionary.blank, self._words.get_index("<unk>"), [], False
        )

    def __call__(self, logits: Tensor, frame_lengths: Tensor | None = None) -> list[str]:
        if logits.shape[-1] != len(self.dictionary):
            raise ValueError(
                f"logits have {logits.shape[-1]} classes but the dictionary {len(self.dictionary)}"
            )
        emissions = torch.log_softmax(logits.detach().float(), dim=-1).cpu().contiguous()
        b, t, v = emissions.shape
        lengths = [t] * b if frame_lengths is None else [int(n) for n in frame_lengths]
        texts = []
        for i in range(b):
            # the C++ decoder reads T x V float32 values from this address (row i of the contiguous batch)
            pointer = emissions.data_ptr() + i * emissions.stride(0) * emissions.element_size()
            results = self._decoder.decode(pointer, lengths[i], v)
            best = results[0].words if results else []
            texts.append(" ".join(self._words.get_entry(w) for w in best if w >= 0))
        return texts
