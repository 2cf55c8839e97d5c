"""The evaluation data: utterances with audio, phone segments, 20 ms frame labels and speakers.

`load_eval_corpus` reads a manifest and its alignments into an `EvalCorpus`; `corpus_files` finds the
files of a corpus directory in the layout of docs/DESIGN.md; `pick_balanced` draws the seeded,
speaker-balanced subsets that the audio caps (``--max-seconds`` ...) use.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dinosr.data.alignments import FRAME_STEP, PHONES_39, SILENCE

log = logging.getLogger(__name__)

__all__ = [
    "FRAME_STEP",
    "PHONE_INVENTORY",
    "SAMPLE_RATE",
    "SILENCE",
    "EvalCorpus",
    "corpus_files",
    "load_eval_corpus",
    "pick_balanced",
    "read_speakers",
]

SAMPLE_RATE = 16000
PHONE_INVENTORY: list[str] = [*sorted(PHONES_39), SILENCE]  # 39 ARPAbet phones + sil: rows of every count


@dataclass
class EvalCorpus:
    """Utterances with audio, phone segments, 20 ms frame labels (phone ids) and speakers."""

    names: list[str]
    wavs: list[np.ndarray]
    segments: dict[str, list[tuple[float, float, str]]]
    labels: list[np.ndarray]  # per utterance, (T,) ids into PHONE_INVENTORY at 20 ms
    speakers: dict[str, str]

    @property
    def seconds(self) -> float:
        return sum(len(w) for w in self.wavs) / SAMPLE_RATE


def corpus_files(root: str | Path, split: str) -> tuple[Path, Path, Path | None]:
    """(manifest, alignments, speakers) of a corpus directory in the DESIGN.md layout."""
    root = Path(root)
    manifest = root / f"{split}.tsv"
    alignments = root / "alignments.tsv"
    speakers = root / "speakers.tsv"
    for p in (manifest, alignments):
        if not p.exists():
            raise FileNotFoundError(f"{p} not found: is {root} a corpus directory (dinosr corpus synth)?")
    return manifest, alignments, speakers if speakers.exists() else None


# TODO(MODEL): replace with the single speaker-file reader MODEL is adding under dinosr/data/.
def read_speakers(path: str | Path | None) -> dict[str, str]:
    """``utt<TAB>speaker[<TAB>...]`` lines -> {utt: speaker}; None -> {}.

    Blank lines, ``#`` comments and a first-line ``utt`` header are skipped; extra columns are allowed
    (e.g. a base voice); a line without a tab raises ``ValueError`` naming the file and line.
    """
    if path is None:
        return {}
    out = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        parts = line.rstrip("\r").split("\t")
        if not line.strip() or line.startswith("#") or (lineno == 1 and parts[0] in ("utt", "utt_id")):
            continue
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise ValueError(f"{path}:{lineno}: expected utt<TAB>speaker, got {line!r}")
        out[parts[0]] = parts[1]
    return out


def speaker_of(name: str, speakers: Mapping[str, str]) -> str:
    """The listed speaker, else the utterance id up to its first ``-`` (the LibriSpeech convention)."""
    return speakers.get(name, name.split("-")[0])


def pick_balanced(
    names: Sequence[str],
    seconds: Sequence[float],
    speakers: Mapping[str, str],
    budget: float | None,
    seed: int,
) -> list[int]:
    """Indices of a seeded, speaker-balanced subset of utterances totalling at most ``budget`` seconds.

    Speakers take turns (round robin over shuffled per-speaker queues), so a cap never drops a whole
    speaker, which ABX across speakers and a speaker-disjoint probe need.
    """
    if budget is None or sum(seconds) <= budget:
        return list(range(len(names)))
    rng = random.Random(seed)
    queues: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        queues.setdefault(speaker_of(n, speakers), []).append(i)
    for q in queues.values():
        rng.shuffle(q)
    order = sorted(queues)
    picked, total = [], 0.0
    while any(queues.values()):
        for spk in order:
            if queues[spk]:
                i = queues[spk].pop()
                if total + seconds[i] > budget and picked:
                    return sorted(picked)
                picked.append(i)
                total += seconds[i]
    return sorted(picked)


def load_eval_corpus(
    manifest: str | Path,
    alignments: str | Path,
    speakers: str | Path | None = None,
    *,
    max_seconds: float | None = None,
    seed: int = 0,
    desc: str = "audio",
) -> EvalCorpus:
    """Read a manifest's audio and its alignments (utterances without an alignment are skipped).

    Args:
        manifest: fairseq TSV / CSV / JSONL manifest.
        alignments: any format `dinosr.data.alignments.read_alignments` reads (segment TSV,
            TextGrid directory, ...); frame-level formats are read at 20 ms.
        speakers: ``utt<TAB>speaker`` TSV; None: the utterance id up to its first ``-``.
        max_seconds: keep a speaker-balanced random subset of at most this much audio.
    """
    from tqdm.auto import tqdm

    from dinosr.data.alignments import Segment, frames_from_segments, normalize_phone, read_alignments
    from dinosr.data.audio import load_audio
    from dinosr.data.manifest import read_manifest

    entries = read_manifest(manifest)
    aligned = read_alignments(alignments, frame_step=FRAME_STEP)
    spk = read_speakers(speakers)
    missing = [e.name for e in entries if e.name not in aligned]
    if missing:
        log.warning(
            "%d utterances of %s have no alignment and are skipped (e.g. %s)",
            len(missing),
            manifest,
            missing[0],
        )
    entries = [e for e in entries if e.name in aligned]
    if not entries:
        raise ValueError(f"no utterance of {manifest} has an alignment in {alignments}")
    rate = {e.name: (e.sample_rate or SAMPLE_RATE) for e in entries}
    keep = pick_balanced(
        [e.name for e in entries], [e.num_samples / rate[e.name] for e in entries], spk, max_seconds, seed
    )
    entries = [entries[i] for i in keep]
    index = {p: i for i, p in enumerate(PHONE_INVENTORY)}
    names, wavs, labels, segments, speakers_out = [], [], [], {}, {}
    for e in tqdm(entries, desc=desc, unit="utt", leave=False):
        wav = load_audio(e.path)
        segs = [(s.start, s.end, normalize_phone(s.phone)) for s in aligned[e.name]]
        frames = frames_from_segments([Segment(*s) for s in segs], frame_step=FRAME_STEP)
        names.append(e.name)
        wavs.append(wav)
        labels.append(np.array([index[p] for p in frames], dtype=np.int64))
        segments[e.name] = segs
        speakers_out[e.name] = speaker_of(e.name, spk)
    return EvalCorpus(names, wavs, segments, labels, speakers_out)
