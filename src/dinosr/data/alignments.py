"""Phone alignments for evaluation: readers for four formats, conversion to 20 ms frame labels, phone folding.

Formats (all read into ``{utt: [Segment(start, end, phone), ...]}``, times in seconds):

* our TSV: header ``utt<TAB>start<TAB>end<TAB>phone``, one segment per line (extra columns ignored,
  so FSDD's ``utt_id start_s end_s phone word`` file reads too);
* fairseq frame labels: ``uid<TAB>p1,p2,...``, one label per frame of ``frame_step`` seconds;
* JSONL: ``{"name": ..., "phones": [p1, p2, ...]}``, one label per frame of ``frame_step`` seconds;
* Praat TextGrid (e.g. Montreal Forced Aligner output), one file per utterance named by its stem;
  read with praatio (the ``eval`` extra), imported only when needed.

Frame rule (`frames_from_segments`): frame ``i`` covers ``[i*step, (i+1)*step)`` and takes the label of
the segment containing its centre ``(i + 0.5)*step``, segments being half-open ``[start, end)``.
Frames in a gap between segments, and frames past the end of the alignment when more are asked
for, are ``"sil"`` (we do not invent phone frames where the aligner said nothing). Times are
compared in integer microseconds, so 0.03 s boundaries do not flip on float rounding. Frame
labels at another step are first turned into segments, so 10 ms labels map to 20 ms frames by
the same rule (frame ``i`` takes 10 ms frame ``2i+1``, the one starting at its centre).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from dinosr.errors import LabelError
from dinosr.fileio import atomic_write_text

SILENCE = "sil"
FRAME_STEP = 0.02  # DinoSR's frame rate (320-sample hop at 16 kHz)

# CMU dictionary ARPAbet, stress removed: the 39-phone set used by DinoSR/HuBERT phone metrics.
_ARPABET_39 = """
AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH
"""
PHONES_39 = frozenset(_ARPABET_39.split())
# Silence, pause and noise markers of common aligners (MFA, Kaldi, TIMIT, pocketsphinx, Praat).
_SILENCES = frozenset({"", "sil", "sp", "spn", "pau", "h#", "<sil>", "<eps>", "nsn", "noise", "<unk>"})
_FILLER = re.compile(r"^(\+.*\+|\[.*\]|<.*>)$")  # +NSN+, [noise], <s> ...


class Segment(NamedTuple):
    """One aligned phone: ``[start, end)`` in seconds."""

    start: float
    end: float
    phone: str


class AlignmentError(LabelError):
    """A malformed alignment file; the message names the file and the line."""


def normalize_phone(phone: str, *, strict: bool = True) -> str:
    """Fold a phone label to the 39-phone ARPAbet set plus ``"sil"``.

    Upper-cases, strips stress digits (``AH0`` -> ``AH``) and maps silence/noise markers
    (``sil``, ``sp``, ``spn``, ``SIL``, ``pau``, ``h#``, ``+NSN+``, empty) to ``"sil"``.

    Raises:
        ValueError: a label outside the set when ``strict`` (else it is returned upper-cased).
    """
    p = phone.strip()
    if p.lower() in _SILENCES or _FILLER.match(p):
        return SILENCE
    folded = p.upper().rstrip("012")
    if folded in PHONES_39:
        return folded
    if strict:
        raise ValueError(f"phone {phone!r} is not in the 39-phone ARPAbet set")
    return folded


def _micro(t: float) -> int:
    return round(t * 1_000_000)


def _first_frame_at_or_after(t_us: int, step_us: int) -> int:
    """Index of the first frame whose centre ``(i + 0.5) * step`` is >= ``t``: ``ceil(2t / step) // 2``."""
    return max(0, -(-2 * t_us // step_us) // 2)


def frames_from_segments(
    segments: Sequence[Segment], *, frame_step: float = FRAME_STEP, num_frames: int | None = None
) -> list[str]:
    """Per-frame labels: each frame takes the phone of the segment containing its centre.

    Args:
        segments: aligned phones (any order; a later segment wins where two overlap).
        frame_step: frame hop in seconds (0.02 for DinoSR).
        num_frames: number of frames wanted (e.g. the model's); default = every frame whose
            centre lies before the end of the last segment. Extra frames are ``"sil"``.
    Returns:
        A list of ``num_frames`` labels.
    """
    step_us = _micro(frame_step)
    if step_us <= 0:
        raise ValueError("frame_step must be > 0")
    if num_frames is None:
        num_frames = max((_first_frame_at_or_after(_micro(s.end), step_us) for s in segments), default=0)
    labels = [SILENCE] * num_frames
    for seg in segments:
        lo = _first_frame_at_or_after(_micro(seg.start), step_us)
        hi = min(num_frames, _first_frame_at_or_after(_micro(seg.end), step_us))
        labels[lo:hi] = [seg.phone] * max(0, hi - lo)
    return labels


def segments_from_frames(labels: Sequence[str], frame_step: float) -> list[Segment]:
    """Run-length segments of per-frame labels at ``frame_step`` seconds (frame j = ``[j, j+1) * step``)."""
    segments: list[Segment] = []
    start = 0
    for j in range(1, len(labels) + 1):
        if j == len(labels) or labels[j] != labels[start]:
            segments.append(Segment(start * frame_step, j * frame_step, labels[start]))
            start = j
    return segments


# ----------------------------------------------------------------------------- readers / writers


def read_alignment_tsv(path: str | os.PathLike) -> dict[str, list[Segment]]:
    """Read our ``utt<TAB>start<TAB>end<TAB>phone`` TSV (header line required)."""
    out: dict[str, list[Segment]] = {}
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if len(header) < 4 or header[0] not in ("utt", "utt_id"):
            raise AlignmentError(f"{path}:1: expected the header 'utt<TAB>start<TAB>end<TAB>phone'")
        for lineno, line in enumerate(f, start=2):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            try:
                utt, start, end, phone = fields[0], float(fields[1]), float(fields[2]), fields[3]
            except (IndexError, ValueError):
                raise AlignmentError(
                    f"{path}:{lineno}: expected utt, start, end, phone; got {line!r}"
                ) from None
            if end < start:
                raise AlignmentError(f"{path}:{lineno}: segment ends ({end}) before it starts ({start})")
            out.setdefault(utt, []).append(Segment(start, end, phone))
    return out


def write_alignment_tsv(alignments: Mapping[str, Sequence[Segment]], path: str | os.PathLike) -> None:
    """Write ``{utt: segments}`` as our TSV (times with 6 decimals: microseconds)."""
    lines = ["utt\tstart\tend\tphone"]
    for utt, segments in alignments.items():
        lines += [f"{utt}\t{s.start:.6g}\t{s.end:.6g}\t{s.phone}" for s in segments]
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_frame_label_tsv(path: str | os.PathLike, *, frame_step: float) -> dict[str, list[Segment]]:
    """Read fairseq-style ``uid<TAB>p1,p2,...`` frame labels at ``frame_step`` seconds."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 2 or not fields[0] or not fields[1]:
                raise AlignmentError(f"{path}:{lineno}: expected 'uid<TAB>p1,p2,...', got {line[:80]!r}")
            out[fields[0]] = segments_from_frames(fields[1].split(","), frame_step)
    return out


def write_frame_label_tsv(labels: Mapping[str, Sequence[str]], path: str | os.PathLike) -> None:
    """Write ``{uid: per-frame labels}`` as ``uid<TAB>p1,p2,...`` lines."""
    atomic_write_text(path, "".join(f"{u}\t{','.join(ls)}\n" for u, ls in labels.items()))


def read_alignment_jsonl(path: str | os.PathLike, *, frame_step: float) -> dict[str, list[Segment]]:
    """Read ``{"name", "phones": [...]}`` lines, one label per frame of ``frame_step`` seconds."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                name, phones = str(obj["name"]), obj["phones"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise AlignmentError(
                    f"{path}:{lineno}: expected an object with 'name' and 'phones'"
                ) from None
            if not isinstance(phones, list):
                raise AlignmentError(f"{path}:{lineno}: 'phones' must be a list of frame labels")
            out[name] = segments_from_frames([str(p) for p in phones], frame_step)
    return out


def write_alignment_jsonl(labels: Mapping[str, Sequence[str]], path: str | os.PathLike) -> None:
    """Write ``{name: per-frame labels}`` as JSONL ``{"name", "phones"}``."""
    lines = [json.dumps({"name": name, "phones": list(phones)}) + "\n" for name, phones in labels.items()]
    atomic_write_text(path, "".join(lines))


def read_textgrid(path: str | os.PathLike, *, tier: str = "phones") -> list[Segment]:
    """Intervals of one TextGrid tier (empty labels become ``""``, folded to "sil" by `normalize_phone`)."""
    try:
        from praatio import textgrid
    except ImportError:
        raise ImportError("reading TextGrid alignments needs praatio: pip install 'dinosr[eval]'") from None
    try:
        grid = textgrid.openTextgrid(str(path), includeEmptyIntervals=True)
    except Exception as err:  # praatio raises assorted types on malformed files
        raise AlignmentError(f"{path}: cannot parse TextGrid ({err})") from None
    if tier not in grid.tierNames:
        raise AlignmentError(f"{path}: no tier {tier!r} (tiers: {', '.join(grid.tierNames)})")
    return [Segment(float(e.start), float(e.end), e.label) for e in grid.getTier(tier).entries]


def read_alignments(
    path: str | os.PathLike, *, frame_step: float | None = None, tier: str = "phones"
) -> dict[str, list[Segment]]:
    """Read alignments in any supported format, chosen by the path.

    ``*.tsv`` with an ``utt`` header: segment TSV; other ``*.tsv``: fairseq frame labels (needs
    ``frame_step``); ``*.jsonl``: frame labels (needs ``frame_step``); ``*.TextGrid``: one utterance
    named by the stem; a directory: every ``*.TextGrid`` under it.
    """
    path = Path(path)
    if path.is_dir():
        grids = sorted(path.rglob("*.TextGrid"))
        return {p.stem: read_textgrid(p, tier=tier) for p in grids}
    suffix = path.suffix.lower()
    if suffix == ".textgrid":
        return {path.stem: read_textgrid(path, tier=tier)}
    if suffix == ".tsv":
        with open(path, encoding="utf-8") as f:
            first = f.readline().split("\t")[0]
        if first in ("utt", "utt_id"):
            return read_alignment_tsv(path)
    if suffix in (".tsv", ".jsonl"):
        if frame_step is None:
            raise ValueError(f"{path}: frame-level labels need frame_step (seconds per label)")
        reader = read_frame_label_tsv if suffix == ".tsv" else read_alignment_jsonl
        return reader(path, frame_step=frame_step)
    raise AlignmentError(
        f"{path}: unknown alignment format (expected .tsv, .jsonl, .TextGrid or a directory)"
    )


def load_frame_labels(
    path: str | os.PathLike,
    *,
    frame_step: float | None = None,
    tier: str = "phones",
    target_step: float = FRAME_STEP,
    normalize: bool = True,
    strict: bool = True,
) -> dict[str, list[str]]:
    """Read alignments and convert them to per-frame labels at ``target_step`` (20 ms).

    Args:
        path, frame_step, tier: as in `read_alignments`.
        normalize: fold phones with `normalize_phone` (39 ARPAbet + "sil").
        strict: with ``normalize``, fail on phones outside the set.
    Returns:
        ``{utt: labels}``; pass a label list and the model's frame count to `frames_from_segments`
        instead when the two must have equal length.
    """
    out = {}
    for utt, segments in read_alignments(path, frame_step=frame_step, tier=tier).items():
        if normalize:
            segments = [s._replace(phone=normalize_phone(s.phone, strict=strict)) for s in segments]
        out[utt] = frames_from_segments(segments, frame_step=target_step)
    return out
