"""Corpus speakers: synthesizer voices and their pseudo-speakers (docs/corpus.md, "Speakers")."""

from __future__ import annotations

from dataclasses import dataclass

from dinosr.data.corpus import festival, flite

# Voices of engines other than Festival are named ENGINE-VOICE in ``--voices`` (``mbrola-us1``).
PREFIXED_ENGINES = ("mbrola", "flite")


def engine_and_voice(voice: str) -> tuple[str, str]:
    """Split a ``--voices`` name into engine and voice.

    ``"mbrola-us1"`` -> ``("mbrola", "us1")``, ``"flite-awb"`` -> ``("flite", "awb")``,
    ``"kal"`` -> ``("festival", "kal")``.
    """
    engine, sep, short = voice.partition("-")
    if sep and engine in PREFIXED_ENGINES:
        return engine, short
    return "festival", voice


@dataclass(frozen=True)
class Speaker:
    """A corpus speaker: an engine voice, a base rate/pitch and a resampling factor.

    ``resample`` > 1 plays the voice's audio as if recorded at ``16 kHz * resample`` and
    converts back to 16 kHz: pitch, formants and tempo all rise by that factor (a
    pseudo-speaker). The engine's own ``rate`` and ``pitch`` act before it, so the net factors
    are f0 ``pitch * resample``, formants ``resample``, tempo ``rate * resample``.
    """

    name: str
    engine: str  # "festival", "mbrola" or "flite"
    voice: str
    resample: float = 1.0
    rate: float = 1.0  # speaking-rate multiplier before resampling
    pitch: float = 1.0  # f0 multiplier (diphone and MBROLA voices; no effect on HTS voices)
    alpha: float = 0.42  # hts_engine all-pass constant: ignored by Debian's Festival (festival.py);
    # kept because corpus.json files store it
    method: str = "resample"  # how the variants were made: "resample" or "warp" (PSEUDO_SPEAKERS)

    @property
    def base_voice(self) -> str:
        """The voice this speaker derives from, named as in ``--voices`` (``kal``, ``mbrola-us1``)."""
        return self.voice if self.engine == "festival" else f"{self.engine}-{self.voice}"

    @property
    def engine_sets_f0(self) -> bool:
        """False where ``pitch`` has no effect: the HTS voices (Festival ignores hts_engine's f0
        option) and flite voices whose f0 cannot be set."""
        if self.engine == "flite":
            return flite.FLITE_VOICES[self.voice].sets_f0
        return not (self.engine == "festival" and festival.FESTIVAL_VOICES[self.voice].hts)

    @property
    def transform(self) -> str:
        """How the speaker differs from its plain voice (the ``voices.tsv`` column): net factors.

        The factors are what reaches the audio (measured on a corpus: docs/corpus.md), e.g. an HTS
        voice's f0 moves only with the resampling.
        """
        f0 = self.resample * (self.pitch if self.engine_sets_f0 else 1.0)
        if (self.resample, self.rate, f0) == (1.0, 1.0, 1.0):
            return "none"
        return f"{self.method} f0={f0:.3f} formant={self.resample:.3f} tempo={self.rate * self.resample:.3f}"


# "resample" (the default; the bundled corpus's): (suffix, resample, rate, pitch, hts alpha).
# Three variants per voice, values chosen by ear to sound like different speakers while staying
# intelligible. Resampling moves f0, formants and tempo together, so a voice's pseudo-speakers
# keep its f0-to-formant relation: they are close relatives of the voice.
_RESAMPLE_VARIANTS = (
    ("a", 1.0, 1.0, 1.0, 0.42), ("b", 0.9, 1.08, 0.95, 0.45), ("c", 1.12, 0.92, 1.04, 0.39),
)  # fmt: skip
# "warp": (suffix, formant, f0, tempo) as net factors, decoupled. Formants move by resampling (a
# linear warp of the whole spectrum, as in VTLP); the engine renders f0 / formant and the rate
# tempo / formant, so after resampling f0 and tempo land where asked and every phone label is
# still exact (no time-stretching of audio). Pairs such as lower formants with a higher f0 (b) or
# shorter tract with a much higher f0 (d) are voices that resampling cannot make. Not for HTS voices
# (slt): their f0 cannot be set, so it follows the formant factor there as with resampling.
_WARP_VARIANTS = (
    ("a", 1.0, 1.0, 1.0), ("b", 0.88, 1.20, 1.00), ("c", 1.14, 0.84, 0.96),
    ("d", 1.18, 1.40, 1.05), ("e", 0.90, 0.78, 0.94),
)  # fmt: skip
PSEUDO_SPEAKERS = {"resample": len(_RESAMPLE_VARIANTS), "warp": len(_WARP_VARIANTS)}  # method: max variants


def make_speakers(voices: list[str], *, variants: int = 3, method: str = "resample") -> list[Speaker]:
    """Return ``variants`` speakers per voice (the first one is the unmodified voice).

    Args:
        voices: ``kal``, ``slt``, ``mbrola-us1``, ``flite-awb``...
        variants: speakers per voice, 1 to ``PSEUDO_SPEAKERS[method]``.
        method: ``"resample"`` (pitch, formants and tempo scaled together) or ``"warp"``
            (formants, f0 and tempo set independently); docs/corpus.md, "Speakers".
    """
    if method not in PSEUDO_SPEAKERS:
        raise ValueError(f"unknown pseudo-speaker method {method!r}; choose from {sorted(PSEUDO_SPEAKERS)}")
    if not 1 <= variants <= PSEUDO_SPEAKERS[method]:
        limit = PSEUDO_SPEAKERS[method]
        raise ValueError(f"variants must be 1-{limit} with method {method!r}, got {variants}")
    speakers = []
    for voice in voices:
        engine, short = engine_and_voice(voice)
        if method == "resample":
            for suffix, resample, rate, pitch, alpha in _RESAMPLE_VARIANTS[:variants]:
                speakers.append(Speaker(f"{short}{suffix}", engine, short, resample, rate, pitch, alpha))
            continue
        for suffix, formant, f0, tempo in _WARP_VARIANTS[:variants]:
            speakers.append(
                Speaker(f"{short}{suffix}", engine, short, resample=formant, rate=tempo / formant,
                        pitch=f0 / formant, method="warp")
            )  # fmt: skip
    return speakers


def choose_valid_speakers(speakers: list[Speaker], count: int) -> list[str]:
    """Pick ``count`` held-out speakers, spread over voices and variants (deterministic)."""
    by_voice: dict[str, list[Speaker]] = {}
    for spk in speakers:
        by_voice.setdefault(spk.voice, []).append(spk)
    voices = list(by_voice)
    chosen: list[str] = []
    i = 0
    while len(chosen) < min(count, len(speakers) - 1):
        group = by_voice[voices[i % len(voices)]]
        # voice k holds out its variant (last - k): different voices hold out different variants
        for offset in range(len(group)):
            cand = group[(len(group) - 1 - i - offset) % len(group)].name
            if cand not in chosen:
                chosen.append(cand)
                break
        i += 1
    return chosen
