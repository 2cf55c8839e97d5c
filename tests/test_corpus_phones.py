"""The phone-set mapping tables of dinosr.data.corpus.phones."""

import pytest

from dinosr.data.corpus.phones import (
    ARPABET_39,
    FESTIVAL_RADIO_TO_ARPABET,
    MBROLA_US_TO_ARPABET,
    PHONES,
    SILENCE,
    UnknownPhoneError,
    map_phone,
    merge_segments,
)


def test_phone_set_is_39_arpabet_plus_silence():
    assert len(ARPABET_39) == len(set(ARPABET_39)) == 39
    assert len(PHONES) == 40
    assert PHONES[-1] == SILENCE == "sil"
    assert all(p.isupper() and p.isalpha() for p in ARPABET_39)  # upper case, no stress digits


@pytest.mark.parametrize("table", [FESTIVAL_RADIO_TO_ARPABET, MBROLA_US_TO_ARPABET])
def test_tables_map_into_the_phone_set_and_cover_it(table):
    assert set(table.values()) <= set(PHONES)
    assert set(table.values()) == set(PHONES)  # every target phone is reachable


def test_festival_radio_table():
    # every radio phone whose lower-case name is an ARPAbet phone maps to itself
    for radio, arpa in FESTIVAL_RADIO_TO_ARPABET.items():
        if radio.upper() in ARPABET_39:
            assert arpa == radio.upper()
    folded = {"ax": "AH", "axr": "ER", "dx": "T", "nx": "N", "el": "L", "em": "M", "en": "N", "hv": "HH"}
    for radio, arpa in folded.items():
        assert map_phone(radio, FESTIVAL_RADIO_TO_ARPABET) == arpa
    for sil in ("pau", "h#", "brth"):
        assert map_phone(sil, FESTIVAL_RADIO_TO_ARPABET) == SILENCE


def test_mbrola_table_examples():
    expected = {"_": "sil", "@U": "OW", "tS": "CH", "dZ": "JH", "Z": "ZH", "r=": "ER", "{": "AE", "V": "AH"}
    for pho, arpa in expected.items():
        assert map_phone(pho, MBROLA_US_TO_ARPABET) == arpa


def test_unknown_phone_raises():
    with pytest.raises(UnknownPhoneError, match="xx"):
        map_phone("xx", FESTIVAL_RADIO_TO_ARPABET)


def test_merge_segments_joins_silences_and_drops_empty():
    segs = [("sil", 0.0, 0.2), ("sil", 0.2, 0.3), ("AH", 0.3, 0.3), ("B", 0.3, 0.4), ("sil", 0.4, 0.5)]
    assert merge_segments(segs) == [("sil", 0.0, 0.3), ("B", 0.3, 0.4), ("sil", 0.4, 0.5)]
