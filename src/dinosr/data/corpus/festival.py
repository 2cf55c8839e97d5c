"""Festival voices driven as a subprocess: a generated Scheme script in, wav files and segments out.

One ``festival --batch`` process renders a chunk of utterances of one voice (starting Festival
and loading a voice costs ~0.1-0.3 s, so a chunk amortises it). For each utterance the script runs
the Text utterance type's modules one by one so that per-phone duration factors can be applied
between ``Duration`` and ``Int_Targets`` (diphone voices only: HTS voices predict their own
durations, so for them we vary the global rate with hts_engine's ``-r``), saves the waveform and
prints the Word and Segment relations, which :func:`parse_festival_output` reads back.

HTS voices: Debian's Festival (2.5, hts_engine API 1.07) reads only ``-m``, ``-r`` and its output
options from ``hts_engine_params``; ``-fm`` (f0 shift) and ``-a`` (all-pass warp) are ignored
(measured: byte-identical waves), so neither pitch nor vocal-tract length of slt can be set here.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from dinosr.data.corpus.phones import FESTIVAL_RADIO_TO_ARPABET
from dinosr.errors import DinosrError

FESTIVAL_PACKAGE = "festival"


@dataclass(frozen=True)
class FestivalVoice:
    """A Festival voice: how to select it, where Debian installs it and which package has it."""

    name: str  # short name used for speakers ("kal")
    select: str  # Scheme function that selects the voice
    package: str  # Debian package providing it
    directory: str  # installed voice directory (used to detect it)
    hts: bool  # HTS voice (hts_engine params) rather than a diphone voice
    f0_mean: float  # the voice's own target f0 mean in Hz (diphone voices: int_lr_params)


FESTIVAL_VOICES: dict[str, FestivalVoice] = {
    v.name: v
    for v in (
        FestivalVoice(
            "kal", "voice_kal_diphone", "festvox-kallpc16k",
            "/usr/share/festival/voices/english/kal_diphone", hts=False, f0_mean=105.0,
        ),
        FestivalVoice(
            "ked", "voice_ked_diphone", "festvox-kdlpc16k",
            "/usr/share/festival/voices/english/ked_diphone", hts=False, f0_mean=105.0,
        ),
        FestivalVoice(
            "slt", "voice_cmu_us_slt_arctic_hts", "festvox-us-slt-hts",
            "/usr/share/festival/voices/us/cmu_us_slt_arctic_hts", hts=True, f0_mean=180.0,
        ),
    )
}  # fmt: skip


class EngineMissingError(DinosrError, RuntimeError):
    """A synthesis engine or voice is not installed; the message names the Debian package."""


def festival_available() -> bool:
    """Return True when the ``festival`` executable is on PATH."""
    return shutil.which("festival") is not None


def available_festival_voices() -> list[str]:
    """Names of the Festival voices of :data:`FESTIVAL_VOICES` installed on this machine."""
    if not festival_available():
        return []
    return [name for name, v in FESTIVAL_VOICES.items() if Path(v.directory).is_dir()]


def check_festival_voice(name: str) -> FestivalVoice:
    """Return the voice, or raise :class:`EngineMissingError` naming the package to install."""
    if name not in FESTIVAL_VOICES:
        raise ValueError(f"unknown Festival voice {name!r}; known: {sorted(FESTIVAL_VOICES)}")
    voice = FESTIVAL_VOICES[name]
    if not festival_available():
        raise EngineMissingError(
            f"Festival is not installed: `apt-get install {FESTIVAL_PACKAGE} {voice.package}`"
        )
    if not Path(voice.directory).is_dir():
        raise EngineMissingError(
            f"Festival voice {name!r} is not installed: `apt-get install {voice.package}`"
        )
    return voice


@dataclass
class FestivalRequest:
    """One utterance to render.

    ``rate`` > 1 speaks faster; ``f0_mean`` is in Hz (diphone voices only: the HTS voices take
    their f0 from their own model); ``phone_factors`` scale successive phone durations (diphone
    voices).
    """

    utt_id: str
    text: str
    wav_path: str
    rate: float = 1.0
    f0_mean: float = 105.0
    f0_std: float = 15.0
    phone_factors: list[float] = field(default_factory=list)


@dataclass
class FestivalResult:
    """What Festival printed for one utterance: words and ``(radio phone, end seconds)``."""

    words: list[str]
    segments: list[tuple[str, float]]


_PRELUDE = r"""
(define (dinosr-stretch utt factors)
  "Scale each segment's duration by the next factor, keeping segments contiguous."
  (let ((prev 0.0) (newend 0.0) (fs factors) (end 0.0))
    (mapcar
     (lambda (s)
       (set! end (item.feat s "end"))
       (set! newend (+ newend (* (if fs (car fs) 1.0) (- end prev))))
       (set! prev end)
       (item.set_feat s "end" newend)
       (if fs (set! fs (cdr fs))))
     (utt.relation.items utt 'Segment))))

(define (dinosr-synth text factors)
  (let ((utt (eval (list 'Utterance 'Text text))))
    (Initialize utt) (Text utt) (Token_POS utt) (Token utt) (POS utt) (Phrasify utt)
    (Word utt) (Pauses utt) (Intonation utt) (PostLex utt) (Duration utt)
    (if factors (dinosr-stretch utt factors))
    (Int_Targets utt) (Wave_Synth utt)
    utt))

(define (dinosr-print utt id)
  (mapcar (lambda (w) (format t "WORD %s\n" (item.name w))) (utt.relation.items utt 'Word))
  (mapcar (lambda (s) (format t "SEG %s %f\n" (item.name s) (item.feat s "end")))
          (utt.relation.items utt 'Segment))
  (format t "DONE %s\n" id))
"""


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_script(voice: FestivalVoice, requests: list[FestivalRequest]) -> str:
    """Return the Scheme script that renders ``requests`` with ``voice``.

    Each utterance is wrapped in ``unwind-protect`` because a Scheme error would otherwise end
    the whole batch; a failed utterance simply prints no ``DONE`` line.
    """
    lines = [_PRELUDE, f"({voice.select})", "(set! dinosr-hts-base hts_engine_params)" if voice.hts else ""]
    for req in requests:
        lines.append(f'(format t "UTT %s\\n" {_scheme_string(req.utt_id)})')
        if voice.hts:
            params = f'\'(("-r" {req.rate:.4f}))'
            lines.append(f"(set! hts_engine_params (append dinosr-hts-base {params}))")
            factors = "nil"
        else:
            lines.append(f"(Parameter.set 'Duration_Stretch {1.0 / req.rate:.4f})")
            lines.append(
                f"(set! int_lr_params '((target_f0_mean {req.f0_mean:.2f}) (target_f0_std {req.f0_std:.2f})"
                " (model_f0_mean 170) (model_f0_std 34)))"
            )
            factors = "'(" + " ".join(f"{f:.4f}" for f in req.phone_factors) + ")"
            if not req.phone_factors:
                factors = "nil"
        lines.append(
            "(unwind-protect (let ((u (dinosr-synth "
            f"{_scheme_string(req.text)} {factors})))"
            f" (utt.save.wave u {_scheme_string(req.wav_path)} 'riff)"
            f' (dinosr-print u {_scheme_string(req.utt_id)})) (format t "FAILED\\n"))'
        )
    return "\n".join(lines) + "\n"


def parse_festival_output(stdout: str) -> dict[str, FestivalResult]:
    """Parse the ``UTT``/``WORD``/``SEG``/``DONE`` lines printed by :func:`build_script`.

    Args:
        stdout: Festival's standard output.

    Returns:
        Results keyed by utterance id, only for utterances that reached ``DONE``.
    """
    results: dict[str, FestivalResult] = {}
    current: FestivalResult | None = None
    for line in stdout.splitlines():
        parts = line.split()
        if not parts:
            continue
        tag = parts[0]
        if tag == "UTT":
            current = FestivalResult([], [])
        elif current is None:
            continue
        elif tag == "WORD" and len(parts) >= 2:
            current.words.append(" ".join(parts[1:]))
        elif tag == "SEG" and len(parts) == 3:
            current.segments.append((parts[1], float(parts[2])))
        elif tag == "DONE" and len(parts) == 2:
            results[parts[1]] = current
            current = None
        elif tag == "FAILED":
            current = None
    return results


def festival_segments(result: FestivalResult) -> list[tuple[str, float, float]]:
    """Convert end times to ``(arpabet phone, start, end)`` segments (unmapped phones raise)."""
    from dinosr.data.corpus.phones import map_phone

    segments = []
    start = 0.0
    for phone, end in result.segments:
        segments.append((map_phone(phone, FESTIVAL_RADIO_TO_ARPABET), start, end))
        start = end
    return segments


def run_festival(
    voice_name: str, requests: list[FestivalRequest], *, timeout: float = 600.0
) -> dict[str, FestivalResult]:
    """Render ``requests`` in one Festival process; return the utterances that succeeded.

    Raises:
        EngineMissingError: Festival or the voice is not installed.
    """
    voice = check_festival_voice(voice_name)
    with tempfile.TemporaryDirectory(prefix="dinosr-festival-") as tmp:
        script = Path(tmp) / "synth.scm"
        script.write_text(build_script(voice, requests), encoding="utf-8")
        proc = subprocess.run(
            ["festival", "--batch", str(script)],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
    return parse_festival_output(proc.stdout)
