"""The evaluation data: utterances with audio, phone segments, 20 ms frame labels and speakers.

`load_eval_corpus` reads a manifest and its alignments into an `EvalCorpus`; `corpus_files` finds the
files of a corpus directory in the layout of docs/DESIGN.md; `pick_balanced` draws the seeded,
speaker-balanced subsets that the audio caps (``--max-seconds`` ...) use; `heldout_split` says what
the evaluation set is relative to the training set: which base voices it holds, and whether any of
them (or any speaker) was heard in training.
"""

from __future__ import annotations

import errno
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dinosr.data.alignments import FRAME_STEP, PHONES_39, SILENCE
from dinosr.data.speakers import read_speakers  # the one speaker-file reader
from dinosr.errors import LabelError

log = logging.getLogger(__name__)

__all__ = [
    "FRAME_STEP",
    "PHONE_INVENTORY",
    "SAMPLE_RATE",
    "SILENCE",
    "EvalCorpus",
    "corpus_files",
    "heldout_split",
    "load_eval_corpus",
    "pick_balanced",
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
    skipped: list[str] = field(default_factory=list)  # unreadable files left out (skip_bad_files)

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
            raise FileNotFoundError(
                errno.ENOENT, f"not found: is {root} a corpus directory (dinosr corpus synth)?", str(p)
            )
    return manifest, alignments, speakers if speakers.exists() else None


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
    skip_bad_files: bool = False,
) -> EvalCorpus:
    """Read a manifest's audio and its alignments (utterances without an alignment are skipped).

    Args:
        manifest: fairseq TSV / CSV / JSONL manifest.
        alignments: any format `dinosr.data.alignments.read_alignments` reads (segment TSV,
            TextGrid directory, ...); frame-level formats are read at 20 ms.
        speakers: ``utt<TAB>speaker`` TSV; None: the utterance id up to its first ``-``.
        max_seconds: keep a speaker-balanced random subset of at most this much audio.
        skip_bad_files: log and leave out unreadable audio (counted in ``EvalCorpus.skipped``);
            otherwise the `AudioError` naming the file propagates.
    """
    from tqdm.auto import tqdm

    from dinosr.data.alignments import Segment, frames_from_segments, normalize_phone, read_alignments
    from dinosr.data.audio import AudioError, load_audio
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
        raise LabelError(
            f"{manifest}: no utterance has an alignment in {alignments} "
            "(training and evaluation sets with different alignment files: --train-alignments)"
        )
    rate = {e.name: (e.sample_rate or SAMPLE_RATE) for e in entries}
    keep = pick_balanced(
        [e.name for e in entries], [e.num_samples / rate[e.name] for e in entries], spk, max_seconds, seed
    )
    entries = [entries[i] for i in keep]
    index = {p: i for i, p in enumerate(PHONE_INVENTORY)}
    names, wavs, labels, segments, speakers_out, skipped = [], [], [], {}, {}, []
    for e in tqdm(entries, desc=desc, unit="utt", leave=False):
        try:
            # The manifest's length catches a truncated file (the training loader checks it too).
            wav = load_audio(e.path, expected_samples=e.num_samples if e.num_samples > 0 else None)
        except AudioError as err:
            if not skip_bad_files:
                raise
            log.warning("skipping bad file %s: %s", e.name, err)
            skipped.append(e.name)
            continue
        segs = [(s.start, s.end, normalize_phone(s.phone)) for s in aligned[e.name]]
        frames = frames_from_segments([Segment(*s) for s in segs], frame_step=FRAME_STEP)
        names.append(e.name)
        wavs.append(wav)
        labels.append(np.array([index[p] for p in frames], dtype=np.int64))
        segments[e.name] = segs
        speakers_out[e.name] = speaker_of(e.name, spk)
    if skipped:
        log.warning("%s: %d bad file(s) skipped: %s", manifest, len(skipped), ", ".join(skipped))
    if not names:
        raise LabelError(f"{manifest}: no readable utterance with an alignment is left")
    return EvalCorpus(names, wavs, segments, labels, speakers_out, skipped)


# ------------------------------------------------------------------------------- held-out voices
def manifest_speakers(manifest: str | Path, speakers: str | Path | None) -> list[str]:
    """Every speaker of a manifest (all of it, not a capped subset), sorted."""
    from dinosr.data.manifest import read_manifest

    spk = read_speakers(speakers)
    return sorted({speaker_of(e.name, spk) for e in read_manifest(manifest)})


def base_voices(source: str | Path) -> dict[str, str]:
    """{speaker: base voice} from a ``voices.tsv`` / ``corpus.json`` or the corpus directory holding a
    file (e.g. its manifest); {} without voice metadata (real recordings: each speaker is a voice)."""
    from dinosr.data.corpus.voices import read_base_voices

    try:
        return read_base_voices(source)
    except ValueError as err:  # a malformed metadata file: name it, do not guess
        raise LabelError(str(err)) from None


def heldout_split(
    eval_speakers: Sequence[str],
    train_speakers: Sequence[str] | None,
    voices: Mapping[str, str],
) -> dict:
    """What the evaluation set is, relative to training (JSON-ready; ``metrics.json`` ``data.heldout``).

    Args:
        eval_speakers: every evaluation speaker.
        train_speakers: every training speaker; None when unknown (nothing can be checked).
        voices: speaker -> base voice; a speaker not in it is its own voice.

    Returns:
        ``eval_voices`` {voice: [speakers]}, ``train_voices`` [voices] (or None), ``voice_metadata``
        (whether any evaluation or training speaker had one), ``shared_voices`` {voice: {"eval": [...],
        "train": [...]}}, ``shared_speakers`` [...]. A shared voice means the evaluation speaker is a
        pseudo-speaker of (or is) a training voice: its numbers do not measure unseen voices.
    """

    def voice(s: str) -> str:
        return voices.get(s, s)

    eval_voices: dict[str, list[str]] = {}
    for s in sorted(eval_speakers):
        eval_voices.setdefault(voice(s), []).append(s)
    known = set(eval_speakers) | set(train_speakers or ())
    out: dict = {
        "eval_voices": eval_voices,
        "train_voices": None,
        "voice_metadata": any(s in voices for s in known),
        "shared_voices": {},
        "shared_speakers": [],
    }
    if train_speakers is None:
        log.warning(
            "training speakers unknown (no training manifest): cannot check that the evaluation voices "
            "%s are unseen",
            ", ".join(eval_voices),
        )
        return out
    train_by_voice: dict[str, list[str]] = {}
    for s in sorted(train_speakers):
        train_by_voice.setdefault(voice(s), []).append(s)
    out["train_voices"] = sorted(train_by_voice)
    out["shared_speakers"] = sorted(set(eval_speakers) & set(train_speakers))
    out["shared_voices"] = {
        v: {"eval": eval_voices[v], "train": train_by_voice[v]}
        for v in sorted(eval_voices)
        if v in train_by_voice
    }
    if out["shared_speakers"]:
        log.warning(
            "EVALUATION SPEAKERS HEARD IN TRAINING: %s are in the training set too; "
            "probe and unit numbers are optimistic",
            ", ".join(out["shared_speakers"]),
        )
    for v, who in out["shared_voices"].items():
        if set(who["eval"]) - set(out["shared_speakers"]):
            log.warning(
                "EVALUATION VOICE HEARD IN TRAINING: evaluation speakers %s share the base voice %s with "
                "training speakers %s (pseudo-speakers of a training voice): not an unseen-voice test",
                ", ".join(who["eval"]),
                v,
                ", ".join(who["train"]),
            )
    return out
