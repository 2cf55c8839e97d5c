"""espeak-ng driving MBROLA voices (``mbrola-us1``, ``mbrola-us2``, ``mbrola-us3``).

espeak-ng turns text into MBROLA's ``.pho`` format (``--pho`` with an ``mb-us*`` voice); the
``mbrola`` binary renders that file. Rendering the very ``.pho`` we parse guarantees that the
phone durations describe the audio. The MBROLA voices live in Debian's contrib/non-free, so they
are optional: :func:`available_mbrola_voices` detects them at run time.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from dinosr.data.corpus.festival import EngineMissingError
from dinosr.data.corpus.phones import MBROLA_US_TO_ARPABET, map_phone

MBROLA_VOICES = ("us1", "us2", "us3")
MBROLA_DIRS = (Path("/usr/share/mbrola"), Path("/usr/local/share/mbrola"))


def mbrola_voice_file(voice: str) -> Path | None:
    """Return the database file of an installed MBROLA voice, or None."""
    for root in MBROLA_DIRS:
        for candidate in (root / voice / voice, root / voice):
            if candidate.is_file():
                return candidate
    return None


def available_mbrola_voices() -> list[str]:
    """Names (``"us1"``...) of the MBROLA US voices usable here (needs espeak-ng and mbrola)."""
    if shutil.which("espeak-ng") is None or shutil.which("mbrola") is None:
        return []
    return [v for v in MBROLA_VOICES if mbrola_voice_file(v) is not None]


def check_mbrola_voice(voice: str) -> Path:
    """Return the voice database path or raise :class:`EngineMissingError` naming the packages."""
    if shutil.which("espeak-ng") is None:
        raise EngineMissingError("espeak-ng is not installed: `apt-get install espeak-ng`")
    path = mbrola_voice_file(voice)
    if shutil.which("mbrola") is None or path is None:
        raise EngineMissingError(
            f"MBROLA voice {voice!r} is not installed: `apt-get install mbrola mbrola-{voice}` "
            "(Debian contrib/non-free)"
        )
    return path


def parse_pho(text: str) -> list[tuple[str, float]]:
    """Parse MBROLA ``.pho`` text into ``(phone, duration seconds)``.

    Each non-comment line is ``PHONE DURATION_MS [POSITION% PITCH_HZ]...``; ``;`` starts a
    comment and lines starting with ``#`` are flush markers.

    Args:
        text: the ``.pho`` file contents.

    Returns:
        The phones in order with their durations in seconds.
    """
    phones = []
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2:
            raise ValueError(f"bad .pho line: {raw!r}")
        phones.append((fields[0], float(fields[1]) / 1000.0))
    return phones


def pho_segments(phones: list[tuple[str, float]]) -> list[tuple[str, float, float]]:
    """Map parsed ``.pho`` phones to contiguous ``(arpabet phone, start, end)`` segments."""
    segments = []
    start = 0.0
    for phone, duration in phones:
        segments.append((map_phone(phone, MBROLA_US_TO_ARPABET), start, start + duration))
        start += duration
    return segments


def scale_pho_pitch(text: str, factor: float) -> str:
    """Multiply every pitch target (Hz) of ``.pho`` text by ``factor``; durations are kept.

    espeak-ng's ``-p`` (0-99) moves the pitch along its own non-linear scale; scaling the
    targets MBROLA renders is an exact f0 factor, like the Festival voices' f0 settings.
    """
    if factor == 1.0:
        return text
    out = []
    for raw in text.splitlines():
        line, sep, comment = raw.partition(";")
        fields = line.split()
        if len(fields) > 2 and not fields[0].startswith("#"):
            points = fields[2:]
            for i in range(1, len(points), 2):  # (position %, pitch Hz) pairs
                points[i] = f"{float(points[i]) * factor:.1f}"
            line = "\t".join([*fields[:2], *points])
        out.append(line + (sep + comment if sep else ""))
    return "\n".join(out) + "\n"


def run_mbrola(
    voice: str, text: str, wav_path: str | Path, *, words_per_minute: int = 150, pitch_factor: float = 1.0
) -> list[tuple[str, float]]:
    """Render ``text`` with espeak-ng + MBROLA ``voice`` to ``wav_path``; return the parsed phones.

    Args:
        voice: ``"us1"``, ``"us2"`` or ``"us3"``.
        text: the sentence.
        wav_path: output wav (MBROLA's native 16 kHz).
        words_per_minute: espeak-ng ``-s`` (speaking rate).
        pitch_factor: multiplies espeak-ng's pitch targets (:func:`scale_pho_pitch`).

    Raises:
        EngineMissingError: espeak-ng, mbrola or the voice is missing.
        RuntimeError: a subprocess failed.
    """
    database = check_mbrola_voice(voice)
    with tempfile.TemporaryDirectory(prefix="dinosr-mbrola-") as tmp:
        pho_path = Path(tmp) / "utt.pho"
        espeak = subprocess.run(
            ["espeak-ng", "-v", f"mb-{voice}", "-q", "--pho", "-s", str(words_per_minute), "--", text],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if espeak.returncode != 0 or not espeak.stdout.strip():
            raise RuntimeError(f"espeak-ng failed: {espeak.stderr.strip()}")
        pho = scale_pho_pitch(espeak.stdout, pitch_factor)
        pho_path.write_text(pho, encoding="utf-8")
        # No -e: with it mbrola renders a diphone missing from the database as silence, and the
        # label of that phone would then describe silence. Without it the utterance fails and is
        # dropped (us3 lacks a few diphones espeak-ng asks for, e.g. u-l=; us1/us2 lack none
        # for the built-in sentences).
        proc = subprocess.run(
            ["mbrola", str(database), str(pho_path), str(wav_path)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"mbrola failed: {proc.stderr.strip()}")
        return parse_pho(pho)
