"""`dinosr labels`: fairseq fine-tuning labels (``SPLIT.wrd``, ``.ltr``, ``dict.ltr.txt``) from transcripts.

Input: ``utt<TAB>text`` lines (Kaldi ``utt text`` and ``.jsonl`` as in :mod:`dinosr.asr.transcripts`). Text
is normalised with :func:`dinosr.data.labels.normalize_transcript`. With ``--manifest`` the outputs are
line-aligned with the manifest (utterance id = the audio file stem, as ``read_manifest`` names entries) and
every manifest utterance needs a transcript; without it they follow the transcript file's order.
The dictionary is read from ``--dict`` (default ``DEST/dict.ltr.txt``) when it exists, so a valid split uses
the training split's symbols; when absent it is built from these letters and written there.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from dinosr.data.corpus.layout import atomic_write_text
from dinosr.data.labels import DICT_NAME, Dictionary, normalize_transcript, words_to_letters
from dinosr.errors import LabelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelsResult:
    """What :func:`make_labels` wrote."""

    split: str
    wrd_path: Path
    ltr_path: Path
    dict_path: Path
    dict_built: bool  # True: built (it was absent); False: an existing dictionary was used
    num_utterances: int
    num_unused: int  # transcripts of utterances not in the manifest (ignored)


def _read(path: Path) -> list[tuple[str, str, int]]:
    """(utt, raw text, line number) in file order; malformed files raise LabelError."""
    from dinosr.asr.transcripts import TranscriptError, is_jsonl, parse_transcript_line

    jsonl = is_jsonl(path)
    rows: list[tuple[str, str, int]] = []
    first: dict[str, int] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                parsed = parse_transcript_line(line, jsonl=jsonl, where=f"{path}:{lineno}")
                if parsed is None:
                    continue
                utt, text = parsed
                if utt in first:
                    where = f"{path}:{lineno}"
                    raise LabelError(f"{where}: utterance {utt!r} repeated (first on line {first[utt]})")
                first[utt] = lineno
                rows.append((utt, text, lineno))
    except TranscriptError as err:
        raise LabelError(str(err)) from None
    except FileNotFoundError:
        raise LabelError(f"{path}: no such transcript file") from None
    except (IsADirectoryError, UnicodeDecodeError) as err:
        raise LabelError(f"{path}: not a UTF-8 transcript file ({type(err).__name__})") from None
    return rows


def make_labels(
    transcripts: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    manifest: str | os.PathLike | None = None,
    dict_path: str | os.PathLike | None = None,
    split: str | None = None,
) -> LabelsResult:
    """Write ``DEST/SPLIT.wrd``, ``DEST/SPLIT.ltr`` and (when absent) the dictionary; all writes atomic.

    Args:
        transcripts: ``utt<TAB>text`` file.
        dest: output directory (created).
        manifest: the split's manifest; outputs follow its order and it names the split.
        dict_path: dictionary to use, or to build when absent (default ``DEST/dict.ltr.txt``).
        split: output name (default: the manifest's stem, else the transcript file's).

    Raises:
        LabelError naming ``file:line``: an empty transcript (after normalisation), a repeated utterance, a
        manifest utterance without transcript, a symbol missing from an existing dictionary.
    """
    transcripts, dest = Path(transcripts), Path(dest)
    rows = _read(transcripts)
    if not rows:
        raise LabelError(f"{transcripts}: no transcripts")
    words: dict[str, tuple[str, int]] = {}
    for utt, text, lineno in rows:
        normalized = normalize_transcript(text)
        if not normalized:
            raise LabelError(f"{transcripts}:{lineno}: empty transcript for utterance {utt!r}")
        words[utt] = (normalized, lineno)

    order = list(words)
    if manifest is not None:
        from dinosr.data.manifest import read_manifest

        order = [entry.name for entry in read_manifest(manifest)]
        for index, utt in enumerate(order, start=1):
            if utt not in words:
                raise LabelError(
                    f"{transcripts}: no transcript for utterance {utt!r} (entry {index} of {manifest})"
                )
    num_unused = len(words) - len(set(order))
    if num_unused:
        log.warning("%d transcript(s) of %s are not in %s: ignored", num_unused, transcripts, manifest)

    letters = [words_to_letters(words[utt][0]) for utt in order]
    dict_file = Path(dict_path) if dict_path is not None else dest / DICT_NAME
    built = not dict_file.exists()
    if built:
        dictionary = Dictionary.build(letters)
        dictionary.save(dict_file)
        log.info("built %s: %d symbols", dict_file, len(dictionary) - dictionary.nspecial)
    else:
        dictionary = Dictionary.load(dict_file)
        for utt, line in zip(order, letters):
            unknown = [t for t in line.split() if t not in dictionary]
            if unknown:
                where = f"{transcripts}:{words[utt][1]}"
                raise LabelError(f"{where}: symbol {unknown[0]!r} of utterance {utt!r} is not in {dict_file}")

    name = split or Path(manifest if manifest is not None else transcripts).stem
    wrd_path, ltr_path = dest / f"{name}.wrd", dest / f"{name}.ltr"
    atomic_write_text(wrd_path, "".join(words[utt][0] + "\n" for utt in order))
    atomic_write_text(ltr_path, "".join(line + "\n" for line in letters))
    return LabelsResult(name, wrd_path, ltr_path, dict_file, built, len(order), num_unused)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``labels`` subcommand."""
    p = subparsers.add_parser(
        "labels",
        help="write fairseq fine-tuning labels (.wrd, .ltr, dict.ltr.txt) from utt<TAB>text transcripts",
        description="Normalise transcripts (NFKC, upper case, apostrophes kept, other punctuation dropped) "
        "and write DEST/SPLIT.wrd, DEST/SPLIT.ltr (letters, '|' after every word) and, when absent, "
        "the letter dictionary dict.ltr.txt.",
    )
    p.add_argument("transcripts", metavar="TRANSCRIPTS", help="utt<TAB>text file (or .jsonl with utt/text)")
    p.add_argument("--dest", required=True, help="output directory")
    p.add_argument("--manifest", help="SPLIT.tsv: write the labels line-aligned with it (names the split)")
    p.add_argument("--dict", help="dictionary to use, built when absent (default DEST/dict.ltr.txt)")
    p.add_argument("--split", help="output name SPLIT (default: the manifest's or the transcripts' stem)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = make_labels(
        args.transcripts, args.dest, manifest=args.manifest, dict_path=args.dict, split=args.split
    )
    how = "built" if result.dict_built else "used"
    log.info(
        "wrote %s and %s (%d utterances); %s %s",
        result.wrd_path,
        result.ltr_path,
        result.num_utterances,
        how,
        result.dict_path,
    )
    return 0
