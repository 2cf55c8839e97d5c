"""Writers for the corpus layout of docs/DESIGN.md ("Corpus layout"), all atomic.

Kept inside ``corpus/`` so the generator depends on nothing but the layout contract; the readers
live in ``dinosr.data.manifest`` and ``dinosr.data.alignments``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from dinosr import fileio


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`dinosr.fileio.atomic_write_text`, creating the parent directory first (corpus layouts are
    written into directories that may not exist yet). A crash never leaves a half-written manifest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_text(path, text)


def atomic_write_json(path: Path, obj: object) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def manifest_text(root: Path, rows: Iterable[tuple[str, int]]) -> str:
    """fairseq manifest: the root on the first line, then ``relative_path<TAB>num_samples``."""
    lines = [str(root)]
    lines += [f"{rel}\t{num_samples}" for rel, num_samples in rows]
    return "\n".join(lines) + "\n"


def normalise_words(words: Iterable[str]) -> list[str]:
    """Upper-case words with only letters and apostrophes kept (LibriSpeech/fairseq style)."""
    out = []
    for word in words:
        clean = re.sub(r"[^A-Z']", "", word.upper())
        if clean:
            out.append(clean)
    return out


def letters(words: list[str]) -> str:
    """fairseq ``.ltr`` line: letters separated by spaces, ``|`` after every word."""
    return " ".join(" ".join(word) + " |" for word in words)


def alignment_lines(utt: str, segments: Iterable[tuple[str, float, float]]) -> list[str]:
    """``utt<TAB>start<TAB>end<TAB>phone`` lines (seconds, 4 decimals)."""
    return [f"{utt}\t{start:.4f}\t{end:.4f}\t{phone}" for phone, start, end in segments]
