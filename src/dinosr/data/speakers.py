"""The speaker file of a corpus: ``speakers.tsv``, one ``utt<TAB>speaker`` line per utterance.

The one rule, for every reader (ABX, evaluation subsets, probes): blank lines, ``#`` comments and a
first-line header whose first column is ``utt`` or ``utt_id`` are skipped; columns after the speaker are
allowed (and ignored); a line without a non-empty utterance and speaker raises :class:`LabelError`
naming the file and line. An utterance listed twice keeps its last speaker.
"""

from __future__ import annotations

import os
from pathlib import Path

from dinosr.errors import LabelError

__all__ = ["read_speakers"]


def read_speakers(path: str | os.PathLike | None) -> dict[str, str]:
    """``utt<TAB>speaker[<TAB>...]`` lines -> {utt: speaker}; ``None`` -> {} (see the module rule)."""
    if path is None:
        return {}
    out = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        parts = line.rstrip("\r").split("\t")
        if not line.strip() or line.startswith("#") or (lineno == 1 and parts[0] in ("utt", "utt_id")):
            continue
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise LabelError(f"{path}:{lineno}: expected utt<TAB>speaker, got {line!r}")
        out[parts[0]] = parts[1]
    return out
