"""Fine-tuning labels in fairseq's layout: ``SPLIT.ltr`` / ``.wrd`` beside ``SPLIT.tsv``, ``dict.ltr.txt``.

* ``SPLIT.wrd``: one transcript per manifest entry, words separated by single spaces.
* ``SPLIT.ltr``: the same as letters separated by spaces with ``|`` after every word
  (``"H E L L O | W O R L D |"``), line-aligned with the manifest.
* ``dict.ltr.txt``: a fairseq dictionary, one ``symbol count`` line per symbol (specials not listed).

:class:`Dictionary` numbers symbols like fairseq's: ``<s>`` = 0, ``<pad>`` = 1, ``</s>`` = 2, ``<unk>`` = 3,
then the file's symbols in file order. Index 0 is the CTC blank (fairseq's ``wav2vec_ctc`` uses bos as blank).

Text normalisation (:func:`normalize_transcript`, used by ``dinosr labels``): Unicode NFKC, upper case,
typographic apostrophes (’ ‘ ʼ ´ `) become ``'`` and apostrophes are kept, dashes and slashes separate words,
every other punctuation or symbol character is dropped, whitespace is collapsed; a word made only of
apostrophes is dropped. Letters, digits and combining marks of any script are kept.
"""

from __future__ import annotations

import os
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from dinosr.data.corpus.layout import atomic_write_text
from dinosr.errors import LabelError

__all__ = [
    "DICT_NAME",
    "SPECIAL_SYMBOLS",
    "WORD_SEPARATOR",
    "Dictionary",
    "LabelError",
    "labels_path",
    "load_labels",
    "normalize_transcript",
    "read_label_lines",
    "words_to_letters",
]

SPECIAL_SYMBOLS = ("<s>", "<pad>", "</s>", "<unk>")  # fairseq Dictionary: bos, pad, eos, unk
WORD_SEPARATOR = "|"
DICT_NAME = "dict.ltr.txt"

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u00b4": "'", "`": "'"})


class Dictionary:
    """fairseq-compatible symbol table (``fairseq.data.Dictionary`` with its default specials).

    Attributes:
        symbols: every symbol by index, specials first (``symbols[0] == "<s>"``).
        counts: occurrence count per symbol (0 for the specials).
        blank: 0, the CTC blank (``<s>``); pad 1, eos 2, unk 3.
        word_separator: ``"|"``, the end-of-word symbol of ``.ltr`` lines.
    """

    blank = 0
    bos, pad, eos, unk = 0, 1, 2, 3
    word_separator = WORD_SEPARATOR

    def __init__(self, symbols: Iterable[str] = (), counts: Iterable[int] | None = None) -> None:
        """Args: symbols: the non-special symbols in index order (from 4); counts: one per symbol."""
        symbols = list(symbols)
        counts = [0] * len(symbols) if counts is None else list(counts)
        if len(counts) != len(symbols):
            raise ValueError(f"{len(symbols)} symbols but {len(counts)} counts")
        self.symbols: list[str] = list(SPECIAL_SYMBOLS)
        self.counts: list[int] = [0] * len(SPECIAL_SYMBOLS)
        self._index = {s: i for i, s in enumerate(self.symbols)}
        for symbol, count in zip(symbols, counts):
            if not symbol or any(c.isspace() for c in symbol):
                raise ValueError(f"symbol {symbol!r} is empty or contains whitespace")
            if symbol in self._index:
                raise ValueError(f"symbol {symbol!r} is repeated")
            self._index[symbol] = len(self.symbols)
            self.symbols.append(symbol)
            self.counts.append(int(count))

    @property
    def nspecial(self) -> int:
        return len(SPECIAL_SYMBOLS)

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Dictionary) and (self.symbols, self.counts) == (other.symbols, other.counts)

    def __repr__(self) -> str:
        return f"Dictionary({len(self)} symbols: {' '.join(self.symbols[self.nspecial :])})"

    def index(self, symbol: str) -> int:
        """Index of ``symbol``; raises LabelError if it is not in the dictionary."""
        try:
            return self._index[symbol]
        except KeyError:
            raise LabelError(f"symbol {symbol!r} is not in the dictionary") from None

    # ------------------------------------------------------------------------- files
    @classmethod
    def load(cls, path: str | os.PathLike) -> Dictionary:
        """Read a fairseq ``dict.*.txt``: ``symbol count`` per line (a trailing ``#fairseq:overwrite`` flag is
        accepted and ignored). Blank lines are skipped; a malformed line, a repeated symbol or a special
        symbol is a LabelError naming ``file:line``."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise LabelError(f"{path}: no such dictionary file") from None
        except (IsADirectoryError, UnicodeDecodeError) as err:
            raise LabelError(f"{path}: not a UTF-8 dictionary file ({type(err).__name__})") from None
        symbols, counts, first_line = [], [], {}
        for lineno, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if fields[-1] == "#fairseq:overwrite":
                fields = fields[:-1]
            if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
                raise LabelError(f"{path}:{lineno}: expected 'symbol count', got {line!r}")
            symbol, count = fields[0], int(fields[1])
            if symbol in SPECIAL_SYMBOLS:
                raise LabelError(f"{path}:{lineno}: {symbol!r} is a special symbol, added implicitly")
            if symbol in first_line:
                first = first_line[symbol]
                raise LabelError(f"{path}:{lineno}: symbol {symbol!r} repeated (first on line {first})")
            first_line[symbol] = lineno
            symbols.append(symbol)
            counts.append(count)
        if not symbols:
            raise LabelError(f"{path}: the dictionary is empty")
        return cls(symbols, counts)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``symbol count`` lines (specials left out, as fairseq) atomically; returns the path."""
        path = Path(path)
        lines = [f"{s} {c}\n" for s, c in zip(self.symbols[self.nspecial :], self.counts[self.nspecial :])]
        atomic_write_text(path, "".join(lines))
        return path

    @classmethod
    def build(cls, ltr_lines: Iterable[str]) -> Dictionary:
        """Dictionary of the symbols in ``.ltr`` lines, sorted by count (descending) then symbol, as fairseq's
        ``Dictionary.finalize`` without padding."""
        counter: Counter[str] = Counter()
        for line in ltr_lines:
            counter.update(line.split())
        for special in SPECIAL_SYMBOLS:
            counter.pop(special, None)
        ordered = sorted(counter.items(), key=lambda item: (-item[1], item[0]))
        return cls([s for s, _ in ordered], [c for _, c in ordered])

    # ------------------------------------------------------------------------- encode / decode
    def encode(self, ltr_line: str) -> list[int]:
        """``"H I |"`` -> ids (no eos appended, as fairseq's CTC targets). Unknown symbol: LabelError."""
        return [self.index(token) for token in ltr_line.split()]

    def decode(self, ids: Iterable[int]) -> str:
        """ids -> ``.ltr`` line (symbols joined by spaces), specials (blank, pad, eos, unk) left out.

        The inverse of :meth:`encode` on a valid line; for words use ``dinosr.asr.decode.ids_to_text``.
        """
        n = self.nspecial
        return " ".join(self.symbols[int(i)] for i in ids if int(i) >= n)


# ----------------------------------------------------------------------------- text normalisation
def _normalize_char(char: str) -> str:
    """'' (drop), ' ' (word break) or the character itself."""
    if char == "'" or char.isspace():
        return char
    category = unicodedata.category(char)
    if category[0] in "LNM":  # letters, numbers, combining marks
        return char
    if category == "Pd" or char == "/":  # "TWENTY-ONE", "AND/OR": two words
        return " "
    return ""  # other punctuation, symbols, control characters


def normalize_transcript(text: str) -> str:
    """Normalise one transcript to upper-case words separated by single spaces (see the module docstring).

    >>> normalize_transcript("  Don’t   stop—now, Mr. Smith!  ")
    "DON'T STOP NOW MR SMITH"
    """
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).upper()
    text = "".join(_normalize_char(c) for c in text)
    return " ".join(word for word in text.split() if word.strip("'"))


def words_to_letters(words: str) -> str:
    """``"HELLO WORLD"`` -> ``"H E L L O | W O R L D |"`` (fairseq ``.ltr`` line); ``""`` -> ``""``."""
    return " ".join(" ".join(word) + " " + WORD_SEPARATOR for word in words.split())


# ----------------------------------------------------------------------------- label files
def labels_path(manifest_path: str | os.PathLike, ext: str = "ltr") -> Path:
    """``dir/SPLIT.tsv`` -> ``dir/SPLIT.<ext>`` (the fairseq ``AddTargetDataset`` layout)."""
    return Path(manifest_path).with_suffix("." + ext.lstrip("."))


def read_label_lines(path: str | os.PathLike) -> list[str]:
    """Lines of a ``.ltr`` / ``.wrd`` file (without newlines); a missing or non-UTF-8 file is a LabelError."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise LabelError(f"{path}: no such label file") from None
    except (IsADirectoryError, UnicodeDecodeError) as err:
        raise LabelError(f"{path}: not a UTF-8 label file ({type(err).__name__})") from None


def load_labels(
    manifest_path: str | os.PathLike, dictionary: Dictionary, *, ext: str = "ltr"
) -> list[list[int]]:
    """Label ids of every manifest entry, read from ``SPLIT.<ext>`` beside ``SPLIT.tsv`` (or .csv/.jsonl).

    Args:
        manifest_path: the split's manifest; its entries and the label lines correspond one to one, in order.
        dictionary: e.g. ``Dictionary.load(data_dir / "dict.ltr.txt")``.
        ext: label file suffix (``"ltr"``; ``"wrd"`` only with a word dictionary).

    Returns:
        One list of ids per manifest entry (no eos; blank never appears).

    Raises:
        LabelError naming ``file:line`` for a line-count mismatch with the manifest, an empty transcript or a
        symbol missing from the dictionary.
    """
    from dinosr.data.manifest import read_manifest  # manifest.py needs soundfile; keep labels.py light

    manifest_path = Path(manifest_path)
    num_entries = len(read_manifest(manifest_path))
    path = labels_path(manifest_path, ext)
    lines = read_label_lines(path)
    if len(lines) != num_entries:
        raise LabelError(
            f"{path}: {len(lines)} lines but the manifest {manifest_path} has {num_entries} entries "
            "(one transcript per audio file, in manifest order)"
        )
    labels = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            raise LabelError(f"{path}:{lineno}: empty transcript")
        try:
            labels.append(dictionary.encode(line))
        except LabelError as err:
            raise LabelError(f"{path}:{lineno}: {err}") from None
    return labels

