"""Phone sets: Festival's radio phones and MBROLA's US SAMPA phones mapped to 39 ARPAbet phones + sil.

The target inventory is the CMU dictionary's 39 phones (upper case, no stress marks) plus ``sil``
for every kind of silence, pause or breath. The tables below are written out explicitly (rather
than derived by rules) so that a reviewer can check every entry; ``tests/test_corpus_phones.py``
checks that every mapped value lies in :data:`PHONES`.
"""

from __future__ import annotations

SILENCE = "sil"

# The 39 CMU ARPAbet phones (http://www.speech.cs.cmu.edu/cgi-bin/cmudict), without stress.
ARPABET_39: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH",
    "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH",
    "UH", "UW", "V", "W", "Y", "Z", "ZH",
)  # fmt: skip

#: The corpus phone set: 39 ARPAbet phones plus silence (40 labels).
PHONES: tuple[str, ...] = (*ARPABET_39, SILENCE)

# Festival's "radio" phone set (festival/lib/radio_phones.scm), used by kal_diphone and the
# CMU ARCTIC HTS voices. Identity entries are listed too so the table is the whole phone set.
# Deliberate foldings (the TIMIT-style reductions the CMU set already implies):
#   ax -> AH (CMUdict writes schwa as AH0), axr -> ER, dx (flap) -> T, nx -> N,
#   el/em/en (syllabic consonants) -> L/M/N, hv -> HH, pau/h#/brth -> sil.
FESTIVAL_RADIO_TO_ARPABET: dict[str, str] = {
    "aa": "AA", "ae": "AE", "ah": "AH", "ao": "AO", "aw": "AW", "ax": "AH", "axr": "ER",
    "ay": "AY", "b": "B", "ch": "CH", "d": "D", "dh": "DH", "dx": "T", "eh": "EH", "el": "L",
    "em": "M", "en": "N", "er": "ER", "ey": "EY", "f": "F", "g": "G", "hh": "HH", "hv": "HH",
    "ih": "IH", "iy": "IY", "jh": "JH", "k": "K", "l": "L", "m": "M", "n": "N", "nx": "N",
    "ng": "NG", "ow": "OW", "oy": "OY", "p": "P", "r": "R", "s": "S", "sh": "SH", "t": "T",
    "th": "TH", "uh": "UH", "uw": "UW", "v": "V", "w": "W", "y": "Y", "z": "Z", "zh": "ZH",
    "pau": SILENCE, "h#": SILENCE, "brth": SILENCE,
}  # fmt: skip

# MBROLA us1/us2/us3 phone names (SAMPA-like, as espeak-ng's mb-us* voices emit them in --pho).
# "_" is silence; r= is the r-coloured vowel of "bird"; 4 is the flap; l=/m=/n= syllabic;
# p_h/t_h/k_h are the aspirated stops us1/us2 get from espeak-ng ("pin", "tin", "kin"); O2 is
# us3's vowel of "on", "soft", "song" (CMUdict writes most of these words with AO).
MBROLA_US_TO_ARPABET: dict[str, str] = {
    "_": SILENCE, "#": SILENCE,
    "p": "P", "b": "B", "t": "T", "d": "D", "k": "K", "g": "G", "4": "T", "?": "T",
    "p_h": "P", "t_h": "T", "k_h": "K",
    "f": "F", "v": "V", "T": "TH", "D": "DH", "s": "S", "z": "Z", "S": "SH", "Z": "ZH",
    "h": "HH", "tS": "CH", "dZ": "JH", "m": "M", "n": "N", "N": "NG", "l": "L", "r": "R",
    "w": "W", "j": "Y", "l=": "L", "m=": "M", "n=": "N",
    "i": "IY", "I": "IH", "E": "EH", "{": "AE", "A": "AA", "O": "AO", "O2": "AO", "U": "UH", "u": "UW",
    "V": "AH", "@": "AH", "r=": "ER", "@r": "ER", "3`": "ER",
    "EI": "EY", "AI": "AY", "OI": "OY", "aU": "AW", "@U": "OW", "oU": "OW",
}  # fmt: skip


class UnknownPhoneError(ValueError):
    """A phone name that the mapping table does not cover (the utterance is dropped)."""


def map_phone(phone: str, table: dict[str, str]) -> str:
    """Map one engine phone name to the corpus phone set.

    Args:
        phone: the engine's phone name (e.g. Festival ``"ax"`` or MBROLA ``"@U"``).
        table: one of the mapping tables of this module.

    Returns:
        An element of :data:`PHONES`.

    Raises:
        UnknownPhoneError: when ``phone`` is not in ``table``.
    """
    try:
        return table[phone]
    except KeyError:
        raise UnknownPhoneError(f"phone {phone!r} has no ARPAbet mapping") from None


def merge_segments(segments: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """Merge adjacent silences and drop zero-length segments.

    Engines emit e.g. two ``pau`` in a row at phrase ends; one ``sil`` segment is what a phone
    recogniser or purity metric expects.

    Args:
        segments: ``(phone, start, end)`` in seconds, contiguous and in time order.

    Returns:
        The cleaned list, still contiguous.
    """
    out: list[tuple[str, float, float]] = []
    for phone, start, end in segments:
        if end - start <= 0.0:
            continue
        if out and out[-1][0] == SILENCE and phone == SILENCE:
            out[-1] = (SILENCE, out[-1][1], end)
        elif out:
            out.append((phone, out[-1][2], end))  # keep contiguity across dropped empties
        else:
            out.append((phone, start, end))
    return out
