"""Transcript files: ``utt<TAB>text`` TSV (what ``dinosr transcribe`` writes; Kaldi's ``utt text`` with a
space is read too) and JSONL (``{"utt" | "name": ..., "text": ...}`` per line).

The format is chosen by the suffix: ``.jsonl`` is JSONL, anything else TSV. Blank lines are skipped; a
duplicate utterance id, a line without an id or a malformed JSON line is an error naming ``file:line``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dinosr.errors import LabelError

__all__ = ["TranscriptError", "is_jsonl", "parse_transcript_line", "read_transcripts"]


class TranscriptError(LabelError):
    """A transcript file is malformed or does not match another; the message names the file."""


def is_jsonl(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() == ".jsonl"


def parse_transcript_line(line: str, *, jsonl: bool, where: str) -> tuple[str, str] | None:
    """One line -> ``(utt, text)``, or None for a blank line. ``where`` = ``file:line`` for errors."""
    line = line.rstrip("\r\n")
    if not line.strip():
        return None
    if jsonl:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise TranscriptError(f"{where}: not a JSON object ({err.msg})") from None
        if not isinstance(record, dict):
            raise TranscriptError(f"{where}: not a JSON object")
        utt = record.get("utt", record.get("name"))
        text = record.get("text", "")
        if not isinstance(utt, str) or not utt or not isinstance(text, str):
            raise TranscriptError(f'{where}: expected {{"utt": str, "text": str}}')
        return utt, text
    # a tab separates id and text; without one, the first whitespace does (Kaldi ``text`` files)
    utt, sep, text = line.partition("\t") if "\t" in line else line.partition(" ")
    utt = utt.strip()
    if not utt:
        raise TranscriptError(f"{where}: no utterance id before the text")
    return utt, text.strip() if sep else ""


def read_transcripts(path: str | os.PathLike) -> dict[str, str]:
    """``{utt: text}`` in file order."""
    path = Path(path)
    jsonl = is_jsonl(path)
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                parsed = parse_transcript_line(line, jsonl=jsonl, where=f"{path}:{number}")
                if parsed is None:
                    continue
                utt, text = parsed
                if utt in out:
                    raise TranscriptError(
                        f"{path}:{number}: utterance {utt!r} repeated (first on line {first_line[utt]})"
                    )
                out[utt] = text
                first_line[utt] = number
    except FileNotFoundError:
        raise TranscriptError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TranscriptError(f"{path}: is a directory, not a transcript file") from None
    except UnicodeDecodeError:
        raise TranscriptError(f"{path}: not UTF-8 text") from None
    return out
