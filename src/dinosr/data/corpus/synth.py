"""Render sentences to a phone-aligned 16 kHz corpus with several (pseudo-)speakers.

Pipeline per utterance (run in a process pool, one engine process per chunk of utterances):
engine audio + phone segments -> resample to 16 kHz -> length check -> pseudo-speaker
resampling (labels scaled by the same ratio) -> length check -> low-level noise -> 16-bit
FLAC/wav. Each finished utterance also leaves a small JSON record under ``.parts/`` so an
interrupted run resumes where it stopped; the manifests, transcripts and alignments are written
(atomically) from those records at the end, after which ``.parts/`` is removed.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from dinosr.data.corpus import festival, flite, mbrola
from dinosr.data.corpus.layout import (
    alignment_lines,
    atomic_write_json,
    atomic_write_text,
    letters,
    manifest_text,
    normalise_words,
)
from dinosr.data.corpus.phones import PHONES, SILENCE, UnknownPhoneError, merge_segments
from dinosr.data.corpus.speakers import Speaker, engine_and_voice
from dinosr.data.corpus.split import split_metadata
from dinosr.data.corpus.voices import VOICES_FILE, voices_tsv_text

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
TOLERANCE_S = 0.010  # phone durations must add up to the audio length within this
# Festival's diphone voices (kal, ked) emit ~20-30 ms of silence after the end of the final
# `pau` label (the last half-diphone). We trim such a tail when it is silent and short.
TAIL_SLACK_S = 0.05
TAIL_SILENCE_PEAK = 0.02
CHUNK_SIZE = 8  # utterances per engine process
# espeak-ng's rate for the MBROLA voices. Its default (175) gives vowels of ~30 ms and sentences
# ~20 % shorter than Festival's; at 150 the tempo is close to the Festival voices'.
MBROLA_WPM = 150


def available_voices() -> list[str]:
    """All usable voices: Festival voice names, then ``mbrola-us1`` etc., then ``flite-awb`` etc."""
    voices = festival.available_festival_voices()
    voices += [f"mbrola-{v}" for v in mbrola.available_mbrola_voices()]
    voices += [f"flite-{v}" for v in flite.available_flite_voices()]
    return voices


def check_voices(voices: list[str]) -> None:
    """Raise :class:`festival.EngineMissingError` (naming the Debian package) for a missing voice."""
    for voice in voices:
        engine, short = engine_and_voice(voice)
        if engine == "mbrola":
            mbrola.check_mbrola_voice(short)
        elif engine == "flite":
            flite.check_flite_voice(short)
        else:
            festival.check_festival_voice(voice)


@dataclass
class UttPlan:
    """One planned utterance with its random per-utterance settings."""

    utt_id: str
    speaker: Speaker
    text: str
    seed: int
    rate: float
    pitch: float
    phone_factors: list[float] = field(default_factory=list)


def plan_corpus(sentences: list[str], speakers: list[Speaker], *, seed: int) -> list[UttPlan]:
    """Assign sentences to speakers (balanced, shuffled) and draw per-utterance variation."""
    rng = random.Random(seed)
    order = [speakers[i % len(speakers)] for i in range(len(sentences))]
    rng.shuffle(order)
    counters: Counter[str] = Counter()
    plans = []
    for text, spk in zip(sentences, order):
        counters[spk.name] += 1
        plans.append(
            UttPlan(
                utt_id=f"{spk.name}-{counters[spk.name]:05d}",
                speaker=spk,
                text=text,
                seed=rng.randrange(2**31),
                rate=spk.rate * rng.uniform(0.88, 1.12),
                pitch=spk.pitch * rng.uniform(0.92, 1.08),
                phone_factors=[round(rng.uniform(0.8, 1.2), 3) for _ in range(160)],
            )
        )
    return plans


class UtteranceError(ValueError):
    """An utterance failed a check; ``reason`` is a short key for the failure counts."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def reconcile(
    audio: np.ndarray, segments: list[tuple[str, float, float]], *, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Check that ``segments`` cover ``audio`` within :data:`TOLERANCE_S`; trim a silent tail.

    Returns:
        ``audio``, possibly with a short silent tail beyond the last silence label removed.

    Raises:
        UtteranceError: the lengths disagree.
    """
    label_end = segments[-1][2]
    excess = len(audio) / sample_rate - label_end
    if abs(excess) <= TOLERANCE_S:
        return audio
    end = round(label_end * sample_rate)
    tail = audio[end:]
    if 0 < excess <= TAIL_SLACK_S and segments[-1][0] == SILENCE and np.abs(tail).max() < TAIL_SILENCE_PEAK:
        return audio[:end]
    message = f"labels end at {label_end:.3f}s, audio lasts {len(audio) / sample_rate:.3f}s"
    raise UtteranceError("length_mismatch", message)


def speech_power(audio: np.ndarray) -> float:
    """Mean power of the louder half of 20 ms frames (pauses do not lower it)."""
    frame = SAMPLE_RATE // 50
    usable = len(audio) // frame * frame
    if usable == 0:
        return float(np.mean(audio**2)) if len(audio) else 0.0
    powers = np.sort(np.mean(audio[:usable].reshape(-1, frame) ** 2, axis=1))
    return float(np.mean(powers[len(powers) // 2 :]))


def set_level(audio: np.ndarray, level_dbfs: float) -> np.ndarray:
    """Scale ``audio`` so its speech RMS is ``level_dbfs`` (same level for every voice)."""
    power = speech_power(audio)
    if power <= 0.0:
        return audio
    return audio * np.float32(10 ** (level_dbfs / 20) / np.sqrt(power))


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add white noise ``snr_db`` below the speech power (so there is no digital silence)."""
    noise_std = np.sqrt(speech_power(audio) / 10 ** (snr_db / 10))
    return audio + rng.normal(0.0, noise_std, size=audio.shape).astype(audio.dtype)


Segments = list[tuple[str, float, float]]


def _engine_render(plans: list[UttPlan], tmp: Path) -> dict[str, tuple[list[str], Segments]]:
    """Run the engine for a chunk of one voice; return words and ARPAbet segments per utterance."""
    spk = plans[0].speaker
    out: dict[str, tuple[list[str], Segments]] = {}
    if spk.engine == "festival":
        voice = festival.FESTIVAL_VOICES[spk.voice]
        requests = []
        for p in plans:
            requests.append(
                festival.FestivalRequest(
                    p.utt_id, p.text, str(tmp / f"{p.utt_id}.wav"), rate=p.rate,
                    f0_mean=voice.f0_mean * p.pitch, f0_std=voice.f0_mean * 0.14 * p.pitch,
                    phone_factors=[] if voice.hts else p.phone_factors,
                )
            )  # fmt: skip
        for utt, result in festival.run_festival(spk.voice, requests).items():
            try:
                out[utt] = (result.words, festival.festival_segments(result))
            except UnknownPhoneError as err:
                logger.warning("%s: %s", utt, err)
    elif spk.engine == "flite":
        for p in plans:
            try:
                segments = flite.run_flite(
                    spk.voice, p.text, tmp / f"{p.utt_id}.wav", rate=p.rate, pitch_factor=p.pitch
                )
                out[p.utt_id] = (p.text.split(), segments)
            except (RuntimeError, UnknownPhoneError, ValueError) as err:
                logger.warning("%s: %s", p.utt_id, err)
    else:
        for p in plans:
            try:
                phones = mbrola.run_mbrola(
                    spk.voice, p.text, tmp / f"{p.utt_id}.wav",
                    words_per_minute=round(MBROLA_WPM * p.rate), pitch_factor=p.pitch,
                )  # fmt: skip
                out[p.utt_id] = (p.text.split(), mbrola.pho_segments(phones))
            except (RuntimeError, UnknownPhoneError, ValueError) as err:
                logger.warning("%s: %s", p.utt_id, err)
    return out


def _finish_utterance(plan: UttPlan, wav: Path, segments: list, root: Path, opts: dict) -> dict:
    """Post-process one engine output into the corpus; return its record."""
    audio, sr = sf.read(wav, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != SAMPLE_RATE:
        audio = soxr.resample(audio, sr, SAMPLE_RATE)
    audio = reconcile(audio, segments)
    factor = plan.speaker.resample
    if factor != 1.0:
        # Claim the samples were taken at 16 kHz * factor and convert to 16 kHz: the result is
        # 1/factor as long, so every label time scales by 1/factor too.
        audio = soxr.resample(audio, SAMPLE_RATE * factor, SAMPLE_RATE)
        segments = [(ph, s / factor, e / factor) for ph, s, e in segments]
        audio = reconcile(audio, segments)
    duration = len(audio) / SAMPLE_RATE
    segments = merge_segments(segments)
    segments[-1] = (segments[-1][0], segments[-1][1], duration)  # absorb the <= 10 ms residue
    audio = set_level(audio, opts["level_dbfs"])
    if opts["noise_snr"] is not None:
        audio = add_noise(audio, opts["noise_snr"], np.random.default_rng(plan.seed))
    peak = float(np.abs(audio).max())
    if peak > 0.97:
        audio = audio * (0.97 / peak)
    rel = Path("audio") / plan.speaker.name / f"{plan.utt_id}.{opts['audio_format']}"
    dest = root / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_dest = dest.with_name(f".{dest.stem}.tmp.{opts['audio_format']}")
    sf.write(tmp_dest, audio, SAMPLE_RATE, subtype="PCM_16", format=opts["audio_format"].upper())
    tmp_dest.replace(dest)
    return {
        "utt": plan.utt_id, "speaker": plan.speaker.name, "path": str(rel), "num_samples": len(audio),
        "segments": [[ph, round(s, 4), round(e, 4)] for ph, s, e in segments],
    }  # fmt: skip


def render_chunk(plans: list[UttPlan], root: Path, opts: dict) -> tuple[list[dict], Counter]:
    """Render a chunk of same-voice utterances; return records and failure counts (pool worker)."""
    failures: Counter[str] = Counter()
    records = []
    with tempfile.TemporaryDirectory(prefix="dinosr-synth-") as tmp_dir:
        tmp = Path(tmp_dir)
        rendered = _engine_render(plans, tmp)
        for plan in plans:
            if plan.utt_id not in rendered:
                failures["engine_failed"] += 1
                continue
            words, segments = rendered[plan.utt_id]
            try:
                record = _finish_utterance(plan, tmp / f"{plan.utt_id}.wav", segments, root, opts)
            except (UtteranceError, RuntimeError, sf.LibsndfileError) as err:
                failures[getattr(err, "reason", "audio_error")] += 1
                logger.warning("dropping %s: %s", plan.utt_id, err)
                continue
            record["words"] = normalise_words(words)
            atomic_write_json(root / ".parts" / f"{plan.utt_id}.json", record)
            records.append(record)
    return records, failures


def _chunks(plans: list[UttPlan]) -> list[list[UttPlan]]:
    by_speaker: dict[str, list[UttPlan]] = {}
    for p in plans:
        by_speaker.setdefault(p.speaker.name, []).append(p)
    return [g[i : i + CHUNK_SIZE] for g in by_speaker.values() for i in range(0, len(g), CHUNK_SIZE)]


@dataclass
class SynthSummary:
    """What a run produced; ``hours_per_minute`` = hours of audio per minute of wall time."""

    num_utterances: int
    hours: float
    wall_seconds: float
    hours_per_minute: float
    failures: dict[str, int]
    phones_present: list[str]
    missing_phones: list[str]


def synthesize_corpus(
    root: str | Path,
    sentences: list[str],
    speakers: list[Speaker],
    *,
    seed: int,
    valid_speakers: list[str],
    jobs: int = 2,
    noise_snr: float | None = 38.0,
    audio_format: str = "flac",
    level_dbfs: float = -30.0,
    relative_root: bool = False,
) -> SynthSummary:
    """Render ``sentences`` over ``speakers`` into the corpus layout at ``root``.

    Args:
        root: corpus directory (created; utterances already rendered there are reused).
        sentences: one sentence per utterance.
        speakers: from :func:`dinosr.data.corpus.speakers.make_speakers`.
        seed: drives speaker assignment and all per-utterance variation and noise.
        valid_speakers: speaker names held out into ``valid.*``; all others go to ``train.*``
            (the CLI holds out every speaker of one base voice: :mod:`dinosr.data.corpus.split`).
        jobs: worker processes.
        noise_snr: white-noise SNR in dB (None: no noise).
        audio_format: ``"flac"`` or ``"wav"`` (16-bit either way).
        level_dbfs: speech RMS level of the stored audio. Lower than usual recordings on purpose:
            16-bit FLAC of speech costs ~1 bit/sample per 6 dB of level, and the data loader
            standardises every utterance anyway.
        relative_root: write ``.`` as the manifests' root line (a relocatable corpus, e.g. the
            bundled one: readers resolve it against the manifest's directory).

    Returns:
        A :class:`SynthSummary`.
    """
    root = Path(root).resolve()
    check_voices(sorted({s.base_voice for s in speakers}))
    plans = plan_corpus(sentences, speakers, seed=seed)
    opts = {"noise_snr": noise_snr, "audio_format": audio_format, "level_dbfs": level_dbfs}
    parts = root / ".parts"
    records: dict[str, dict] = {}
    for plan in plans:  # resume: reuse utterances finished by an interrupted run
        part = parts / f"{plan.utt_id}.json"
        if part.is_file():
            record = json.loads(part.read_text(encoding="utf-8"))
            if (root / record["path"]).is_file():
                records[plan.utt_id] = record
    todo = [p for p in plans if p.utt_id not in records]
    if records:
        logger.info("reusing %d finished utterances, rendering %d", len(records), len(todo))
    failures: Counter[str] = Counter()
    start = time.perf_counter()
    rendered_samples = 0
    chunks = _chunks(todo)
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(render_chunk, chunk, root, opts) for chunk in chunks]
        for done, future in enumerate(futures, 1):
            chunk_records, chunk_failures = future.result()
            failures.update(chunk_failures)
            for record in chunk_records:
                records[record["utt"]] = record
                rendered_samples += record["num_samples"]
            if done % 25 == 0 or done == len(futures):
                minutes = rendered_samples / SAMPLE_RATE / 60
                logger.info("%d/%d chunks, %.1f min of audio", done, len(futures), minutes)
    wall = time.perf_counter() - start
    ordered = [records[p.utt_id] for p in plans if p.utt_id in records]
    manifest_root = Path(".") if relative_root else root
    phone_counts = write_corpus_files(root, ordered, valid_speakers, manifest_root=manifest_root)
    voice_rows = [(s.name, s.base_voice, s.transform) for s in speakers]
    atomic_write_text(root / VOICES_FILE, voices_tsv_text(voice_rows))
    base_voices = {s.name: s.base_voice for s in speakers}
    hours = sum(r["num_samples"] for r in ordered) / SAMPLE_RATE / 3600
    rendered_hours = rendered_samples / SAMPLE_RATE / 3600
    summary = SynthSummary(
        num_utterances=len(ordered),
        hours=hours,
        wall_seconds=wall,
        hours_per_minute=rendered_hours / (wall / 60) if wall > 0 and rendered_samples else 0.0,
        failures=dict(failures),
        phones_present=[p for p in PHONES if phone_counts[p] > 0],
        missing_phones=[p for p in PHONES if phone_counts[p] == 0],
    )
    atomic_write_json(
        root / "corpus.json",
        {
            "generator": "dinosr corpus synth",
            "voices": sorted({s.voice for s in speakers}),
            "speakers": {s.name: asdict(s) for s in speakers},
            "base_voices": base_voices,
            "train_speakers": sorted({r["speaker"] for r in ordered} - set(valid_speakers)),
            "valid_speakers": sorted(valid_speakers),
            **split_metadata(base_voices, valid_speakers),
            "num_utterances": len(ordered),
            "hours": round(hours, 4),
            "seed": seed,
            "sample_rate": SAMPLE_RATE,
            "noise_snr_db": noise_snr,
            "level_dbfs": level_dbfs,
            "audio_format": audio_format,
            "phone_set": list(PHONES),
            "phone_counts": {p: phone_counts[p] for p in PHONES},
            "failures": dict(failures),
            "synthesis_hours_per_minute": round(summary.hours_per_minute, 4),
        },
    )
    shutil.rmtree(parts, ignore_errors=True)
    return summary


def write_corpus_files(
    root: Path, records: list[dict], valid_speakers: list[str], *, manifest_root: Path
) -> Counter:
    """Write manifests, transcripts, speakers and alignments; return phone segment counts."""
    phone_counts: Counter[str] = Counter()
    align: list[str] = []
    for split in ("train", "valid"):
        rows = [r for r in records if (r["speaker"] in valid_speakers) == (split == "valid")]
        manifest = manifest_text(manifest_root, [(r["path"], r["num_samples"]) for r in rows])
        atomic_write_text(root / f"{split}.tsv", manifest)
        atomic_write_text(root / f"{split}.wrd", "".join(" ".join(r["words"]) + "\n" for r in rows))
        atomic_write_text(root / f"{split}.ltr", "".join(letters(r["words"]) + "\n" for r in rows))
    for r in records:
        align += alignment_lines(r["utt"], [tuple(seg) for seg in r["segments"]])
        phone_counts.update(seg[0] for seg in r["segments"])
    header = "utt\tstart\tend\tphone"
    atomic_write_text(root / "alignments.tsv", "\n".join([header, *align]) + "\n")
    atomic_write_text(root / "speakers.tsv", "".join(f"{r['utt']}\t{r['speaker']}\n" for r in records))
    return phone_counts
