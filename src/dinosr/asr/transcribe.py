"""Transcription with a fine-tuned CTC model: batched by length, resumable, with the real-time factor.

Output (one line per utterance, in the order the batches finish):

* ``.jsonl``: ``{"utt": name, "text": transcript, "seconds": audio duration}``;
* anything else: ``utt<TAB>text`` (the file ``dinosr wer`` reads).

Resuming: utterances already in the output file are skipped. Each batch's lines are appended with one
write, flushed and fsync-ed, so a kill leaves at most one partial last line; the next run cuts it off, as
it does a last line that does not parse (the utterances of that batch are transcribed again). Unreadable
audio is an error, or with ``skip_bad_files`` a logged skip with no line (a rerun retries it).

Audio is decoded at 16 kHz (resampled if needed) and standardised per utterance, as in training; utterances
longer than ``chunk_seconds`` (+ 2 x ``context_seconds``) are encoded in windows (``dinosr.inference``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import torch
from torch import Tensor

from dinosr.asr.decode import greedy_decode
from dinosr.asr.transcripts import TranscriptError, is_jsonl, parse_transcript_line
from dinosr.data.labels import Dictionary
from dinosr.data.manifest import FORMATS, ManifestEntry
from dinosr.errors import ManifestError
from dinosr.inference import SAMPLE_RATE, map_frames, pad_waveforms, standardize
from dinosr.model.ctc import DinoSRForCTC

log = logging.getLogger(__name__)

__all__ = [
    "Decoder",
    "TranscribeSummary",
    "ctc_logits",
    "entries_from_inputs",
    "run_transcription",
    "transcribe",
]

# (B, T, V) logits, (B,) frame lengths -> B transcripts
Decoder = Callable[[Tensor, Tensor], list[str]]


@dataclass
class TranscribeSummary:
    """Counts of a run, the audio it transcribed and the time it took (loading audio included)."""

    done: int = 0
    skipped: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)
    audio_seconds: float = 0.0
    elapsed_seconds: float = 0.0

    @property
    def real_time_factor(self) -> float:
        """Processing time / audio duration (below 1 = faster than real time); nan if nothing was done."""
        return self.elapsed_seconds / self.audio_seconds if self.audio_seconds > 0 else float("nan")


def entries_from_inputs(paths: Sequence[str | os.PathLike]) -> list[ManifestEntry]:
    """One manifest (.tsv/.csv/.jsonl) or audio directory, or any number of audio files -> entries."""
    import soundfile

    from dinosr.interop.extract import entries_from_input

    paths = [Path(p) for p in paths]
    if len(paths) == 1 and (paths[0].is_dir() or paths[0].suffix.lower() in FORMATS):
        return entries_from_input(paths[0])[0]
    entries = []
    for path in paths:
        if path.is_dir() or path.suffix.lower() in FORMATS:
            raise ManifestError(f"{path}: give a manifest or a directory alone, not among audio files")
        if not path.is_file():
            raise ManifestError(f"{path}: no such audio file")
        try:
            frames = soundfile.info(str(path)).frames
        except Exception:  # unreadable: load_audio names it when the batch is loaded
            frames = 0
        entries.append(ManifestEntry(path.stem, path.resolve(), frames))
    return entries


@torch.no_grad()
def ctc_logits(
    model: DinoSRForCTC,
    waveforms: Sequence[Tensor | np.ndarray],
    *,
    chunk_seconds: float | None = 20.0,
    context_seconds: float = 2.0,
) -> tuple[Tensor, Tensor]:
    """(B, T, V) float32 logits and (B,) frame lengths of raw 16 kHz waveforms (standardised here; eval)."""
    model.eval()
    device = model.head.weight.device
    wav, lengths = pad_waveforms(list(waveforms))
    wav = standardize(wav.to(device), lengths)
    out, frame_lengths = map_frames(
        model,
        wav,
        lengths,
        lambda w, n: model(w, n),
        lambda o: {0: o.logits.float()},
        chunk_seconds=chunk_seconds,
        context_seconds=context_seconds,
    )
    return out[0], frame_lengths


def transcribe(
    model: DinoSRForCTC,
    dictionary: Dictionary,
    waveforms: Sequence[Tensor | np.ndarray],
    *,
    decoder: Decoder | None = None,
    chunk_seconds: float | None = 20.0,
    context_seconds: float = 2.0,
) -> list[str]:
    """Transcripts of raw 16 kHz waveforms (greedy CTC decoding unless ``decoder`` is given)."""
    logits, frame_lengths = ctc_logits(
        model, waveforms, chunk_seconds=chunk_seconds, context_seconds=context_seconds
    )
    if decoder is None:
        return greedy_decode(logits, frame_lengths, dictionary)
    return decoder(logits, frame_lengths)


# ----------------------------------------------------------------------------- output file


def _parse_output_line(raw: bytes, *, jsonl: bool, where: str) -> tuple[str, str] | None:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TranscriptError(f"{where}: not UTF-8 text; not a transcript file to resume") from None
    return parse_transcript_line(line, jsonl=jsonl, where=where)


def _resume(path: Path) -> set[str]:
    """Utterances already in ``path``, after cutting off what an interrupted write left at its end.

    A last line without its newline, or a last line that does not parse (e.g. half a JSON record), is
    not written: the file is truncated to the line before it, so that utterance is transcribed again
    and the file stays one valid line per utterance. A bad line anywhere else is an error (not our
    file, or damaged by something else); the file is then left as it was.
    """
    if not path.exists():
        return set()
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1  # bytes after the last newline: a partial line
    reasons = ["a partial last line"] if keep < len(data) else []
    # split on "\n" only: str.splitlines would also split JSON text at a raw U+2028 (ensure_ascii=False)
    lines = data[:keep].split(b"\n")[:-1]
    jsonl = is_jsonl(path)
    done: set[str] = set()
    for number, raw in enumerate(lines, 1):
        try:
            parsed = _parse_output_line(raw, jsonl=jsonl, where=f"{path}:{number}")
        except TranscriptError:
            if number < len(lines):
                raise
            keep -= len(raw) + 1
            reasons.insert(0, "an unparsable last complete line")
            parsed = None
        if parsed is not None:
            done.add(parsed[0])
    if keep < len(data):
        log.warning(
            "%s: dropping the last %d byte(s), %s left by an interrupted write; transcribing again",
            path,
            len(data) - keep,
            " and ".join(reasons),
        )
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    return done


def _format(name: str, text: str, seconds: float, jsonl: bool) -> str:
    if jsonl:
        return (
            json.dumps({"utt": name, "text": text, "seconds": round(seconds, 4)}, ensure_ascii=False) + "\n"
        )
    return f"{name}\t{text}\n"


def _append(f: IO[str], lines: list[str]) -> None:
    f.write("".join(lines))  # one write per batch: a kill cuts at most the last line
    f.flush()
    if f is not sys.stdout:
        os.fsync(f.fileno())


def run_transcription(
    model: DinoSRForCTC,
    dictionary: Dictionary,
    entries: Sequence[ManifestEntry],
    out: str | os.PathLike | None,
    *,
    decoder: Decoder | None = None,
    batch_seconds: float = 20.0,
    chunk_seconds: float | None = 20.0,
    context_seconds: float = 2.0,
    skip_bad_files: bool = False,
    progress: bool = True,
) -> TranscribeSummary:
    """Transcribe ``entries`` into ``out`` (TSV or ``.jsonl``; None = TSV on stdout, not resumable).

    Args:
        decoder: ``(logits, frame_lengths) -> texts``; default greedy CTC decoding.
        batch_seconds: padded audio per batch (B x longest utterance).
        skip_bad_files: log and skip unreadable audio (named in the summary); otherwise raise AudioError.
    """
    from tqdm import tqdm

    from dinosr.data.audio import load_model_inputs
    from dinosr.data.sampler import pack_by_length

    if not entries:
        raise ManifestError("nothing to transcribe: no utterances were given")
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:10]
        raise ManifestError(f"utterance names must be unique (transcripts are keyed by them): {dup}")
    summary = TranscribeSummary()
    path = None if out is None else Path(out)
    finished = set() if path is None else _resume(path)
    todo = [e for e in entries if e.name not in finished]
    summary.skipped = len(entries) - len(todo)
    if summary.skipped:
        log.info("skipping %d utterance(s) already in %s", summary.skipped, path)
    jsonl = path is not None and is_jsonl(path)
    long_samples = None if chunk_seconds is None else int((chunk_seconds + 2 * context_seconds) * SAMPLE_RATE)
    batches = pack_by_length(
        [e.num_samples for e in todo], int(batch_seconds * SAMPLE_RATE), alone_above=long_samples
    )
    min_samples = model.cfg.receptive_field
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    sink = sys.stdout if path is None else open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed below)
    bar = tqdm(total=len(todo), unit="utt", desc="transcribe", disable=not progress)
    start = time.perf_counter()
    try:
        for batch in batches:
            wavs, batch_names = load_model_inputs(
                [todo[j] for j in batch], min_samples, skip_bad_files=skip_bad_files, bad=summary.bad
            )
            if wavs:
                texts = transcribe(
                    model,
                    dictionary,
                    [torch.from_numpy(w) for w in wavs],
                    decoder=decoder,
                    chunk_seconds=chunk_seconds,
                    context_seconds=context_seconds,
                )
                seconds = [len(w) / SAMPLE_RATE for w in wavs]
                _append(sink, [_format(n, t, s, jsonl) for n, t, s in zip(batch_names, texts, seconds)])
                summary.done += len(wavs)
                summary.audio_seconds += sum(seconds)
            bar.update(len(batch))
    finally:
        summary.elapsed_seconds = time.perf_counter() - start
        bar.close()
        if sink is not sys.stdout:
            sink.close()
    if summary.bad:
        log.warning("%d bad file(s): %s", len(summary.bad), ", ".join(n for n, _ in summary.bad))
    return summary
