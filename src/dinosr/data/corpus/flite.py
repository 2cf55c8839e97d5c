"""Flite's CMU ARCTIC voices (``flite-awb``, ``flite-rms``) as corpus speakers.

Flite (CMU's small synthesizer, Debian package ``flite``, BSD-style licence like the CMU ARCTIC
databases its voices are built from) is a second engine with voices of speakers that Festival's
Debian voices do not have: awb (Scottish English, male) and rms (US English, male). Its ``slt`` and
``kal`` are the speakers of Festival's slt and kal voices, so they are not offered: a corpus must
not count one speaker as two voices.

``flite -psdur`` prints each segment with its end time (``pau:0.253 dh:0.280 ...``), in the same
phone set as Festival's radio phones; the wave it writes is the one those times describe
(checked: the last end time and the audio length agree within a few milliseconds).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dinosr.data.corpus.festival import EngineMissingError
from dinosr.data.corpus.phones import FESTIVAL_RADIO_TO_ARPABET, map_phone

FLITE_PACKAGE = "flite"


@dataclass(frozen=True)
class FliteVoice:
    """A flite voice and whether its f0 can be set (``f0_shift`` acts on awb, not on rms: measured)."""

    name: str
    sets_f0: bool


FLITE_VOICES: dict[str, FliteVoice] = {
    v.name: v for v in (FliteVoice("awb", sets_f0=True), FliteVoice("rms", sets_f0=False))
}


@functools.cache  # asked before every utterance (check_flite_voice): one `flite -lv` per process is enough
def listed_flite_voices() -> tuple[str, ...]:
    """Voices the installed ``flite`` binary lists (``flite -lv``); empty when flite is missing."""
    if shutil.which("flite") is None:
        return ()
    proc = subprocess.run(["flite", "-lv"], capture_output=True, text=True, timeout=60, check=False)
    _, _, names = proc.stdout.partition(":")
    return tuple(names.split())


def available_flite_voices() -> list[str]:
    """Names (``"awb"``...) of the voices of :data:`FLITE_VOICES` usable here."""
    listed = set(listed_flite_voices())
    return [name for name in FLITE_VOICES if name in listed]


def check_flite_voice(name: str) -> FliteVoice:
    """Return the voice, or raise :class:`EngineMissingError` naming the package to install."""
    if name not in FLITE_VOICES:
        raise ValueError(f"unknown flite voice {name!r}; known: {['flite-' + v for v in FLITE_VOICES]}")
    if shutil.which("flite") is None:
        raise EngineMissingError(f"flite is not installed: `apt-get install {FLITE_PACKAGE}`")
    if name not in listed_flite_voices():
        raise EngineMissingError(f"this flite build has no voice {name!r} (`flite -lv` lists its voices)")
    return FLITE_VOICES[name]


def parse_psdur(text: str) -> list[tuple[str, float, float]]:
    """Parse ``flite -psdur`` output into contiguous ``(arpabet phone, start, end)`` segments.

    Args:
        text: what flite printed: whitespace-separated ``phone:end_seconds`` items.

    Raises:
        ValueError: an item is not ``phone:seconds`` or the end times go backwards.
        UnknownPhoneError: a phone the radio phone table does not cover.
    """
    segments = []
    start = 0.0
    for item in text.split():
        phone, sep, end_text = item.rpartition(":")
        try:
            end = float(end_text)
        except ValueError:
            end = -1.0
        if not sep or not phone or end < start:
            raise ValueError(f"bad flite segment {item!r}")
        segments.append((map_phone(phone, FESTIVAL_RADIO_TO_ARPABET), start, end))
        start = end
    if not segments:
        raise ValueError("flite printed no segments")
    return segments


def run_flite(
    voice: str, text: str, wav_path: str | Path, *, rate: float = 1.0, pitch_factor: float = 1.0
) -> list[tuple[str, float, float]]:
    """Render ``text`` with flite ``voice`` to ``wav_path`` (16 kHz); return its phone segments.

    Args:
        voice: ``"awb"`` or ``"rms"``.
        text: the sentence.
        wav_path: output wav.
        rate: speaking-rate multiplier (> 1 faster), as flite's ``duration_stretch = 1 / rate``.
        pitch_factor: f0 multiplier (flite's ``f0_shift``); ignored by voices that do not set f0.

    Raises:
        EngineMissingError: flite or the voice is missing.
        RuntimeError: flite failed.
    """
    spec = check_flite_voice(voice)
    command = ["flite", "-voice", voice, "--setf", f"duration_stretch={1.0 / rate:.4f}"]
    if spec.sets_f0:
        command += ["--setf", f"f0_shift={pitch_factor:.4f}"]
    command += ["-psdur", "-t", text, "-o", str(wav_path)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0 or not Path(wav_path).is_file():
        raise RuntimeError(f"flite failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return parse_psdur(proc.stdout)
