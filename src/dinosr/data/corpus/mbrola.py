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


def run_mbrola(
    voice: str, text: str, wav_path: str | Path, *, words_per_minute: int = 170, pitch: int = 50
) -> list[tuple[str, float]]:
    """Render ``text`` with espeak-ng + MBROLA ``voice`` to ``wav_path``; return the parsed phones.

    Args:
        voice: ``"us1"``, ``"us2"`` or ``"us3"``.
        text: the sentence.
        wav_path: output wav (MBROLA's native 16 kHz).
        words_per_minute: espeak-ng ``-s`` (speaking rate).
        pitch: espeak-ng ``-p`` (0-99, 50 = the voice's default).

    Raises:
        EngineMissingError: espeak-ng, mbrola or the voice is missing.
        RuntimeError: a subprocess failed.
    """
    database = check_mbrola_voice(voice)
    with tempfile.TemporaryDirectory(prefix="dinosr-mbrola-") as tmp:
        pho_path = Path(tmp) / "utt.pho"
        espeak = subprocess.run(
            ["espeak-ng", "-v", f"mb-{voice}", "-q", "--pho", "-s", str(words_per_minute),
             "-p", str(pitch), "--", text],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if espeak.returncode != 0 or not espeak.stdout.strip():
            raise RuntimeError(f"espeak-ng failed: {espeak.stderr.strip()}")
        pho_path.write_text(espeak.stdout, encoding="utf-8")
        # -e: ignore unknown diphones (replaced by silence) rather than aborting the utterance.
        proc = subprocess.run(
            ["mbrola", "-e", str(database), str(pho_path), str(wav_path)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"mbrola failed: {proc.stderr.strip()}")
        return parse_pho(espeak.stdout)
