"""Base voices of a synthetic corpus's speakers (``voices.tsv``) and the split by base voice.

Several corpus speakers derive from one synthesizer voice (``kala``, ``kalb``, ``kalc`` are the voice
``kal`` as is and two pseudo-speakers of it). A speaker held out from training is only unseen when
its *base voice* is: ``voices.tsv`` records it so that an evaluation can check.

``voices.tsv`` (tab-separated, one header line)::

    speaker  base_voice  transform
    kala     kal         none
    kalb     kal         resample f0=0.855 formant=0.900 tempo=0.972

``base_voice`` is the name given to ``dinosr corpus synth --voices`` (``kal``, ``slt``,
``mbrola-us1``); ``transform`` is how the speaker differs from the plain voice, as the net factors
applied to f0, formant frequencies and tempo (``none`` for the plain voice), after the method:
``resample`` (pitch, formants and tempo move together) or ``warp`` (decoupled; docs/corpus.md).

Only the standard library is used here, so readers (e.g. ``dinosr evaluate``) can import it cheaply.
"""

from __future__ import annotations

import json
from pathlib import Path

VOICES_FILE = "voices.tsv"
HEADER = ("speaker", "base_voice", "transform")


def voices_tsv_text(rows: list[tuple[str, str, str]]) -> str:
    """``voices.tsv`` contents for ``(speaker, base_voice, transform)`` rows."""
    return "".join("\t".join(row) + "\n" for row in [HEADER, *rows])


def _read_voices_tsv(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or tuple(lines[0].split("\t")) != HEADER:
        raise ValueError(f"{path}: first line must be the header {'<TAB>'.join(HEADER)!r}")
    voices: dict[str, str] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3 or not fields[0] or not fields[1]:
            raise ValueError(f"{path}:{number}: expected speaker<TAB>base_voice<TAB>transform, got {line!r}")
        if fields[0] in voices:
            raise ValueError(f"{path}:{number}: speaker {fields[0]!r} listed twice")
        voices[fields[0]] = fields[1]
    return voices


def _voices_from_corpus_json(path: Path) -> dict[str, str]:
    """Corpora written before ``voices.tsv`` existed: ``corpus.json`` lists each speaker's voice."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if "base_voices" in meta:
        return dict(meta["base_voices"])
    out = {}
    for name, spk in meta.get("speakers", {}).items():
        voice = spk["voice"]
        engine = spk.get("engine", "festival")
        out[name] = voice if engine == "festival" else f"{engine}-{voice}"
    return out


def read_base_voices(path: str | Path) -> dict[str, str]:
    """Return ``{speaker: base_voice}`` of a corpus.

    Args:
        path: the corpus directory, its ``voices.tsv`` or ``corpus.json``, or any other file in the
            corpus directory (e.g. its ``valid.tsv`` manifest), whose directory is then used.

    Returns:
        The base voice of every speaker; an empty dict when the corpus has no voice metadata
        (e.g. real recordings, where every speaker is their own voice). Corpora generated before
        ``voices.tsv`` existed are read from ``corpus.json``.

    Raises:
        ValueError: ``path`` does not exist, or ``voices.tsv`` / ``corpus.json`` is malformed (the
            message names the file).
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such corpus directory or file")
    if path.is_file() and path.name == VOICES_FILE:
        return _read_voices_tsv(path)
    if path.is_file() and path.suffix == ".json":
        return _voices_from_corpus_json(path)
    root = path if path.is_dir() else path.parent
    if (root / VOICES_FILE).is_file():
        return _read_voices_tsv(root / VOICES_FILE)
    if (root / "corpus.json").is_file():
        return _voices_from_corpus_json(root / "corpus.json")
    return {}
