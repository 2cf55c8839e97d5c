"""dinosr.data.speakers.read_speakers: the one speaker-file rule."""

from __future__ import annotations

import pytest

from dinosr.data.corpus import bundled_corpus
from dinosr.data.speakers import read_speakers
from dinosr.errors import LabelError


def test_rule(tmp_path):
    p = tmp_path / "speakers.tsv"
    p.write_text("utt\tspeaker\n# a comment\n\na-1\tA\tbase-voice\nb-1\tB\r\na-1\tC\n", encoding="utf-8")
    assert read_speakers(p) == {"a-1": "C", "b-1": "B"}
    assert read_speakers(None) == {}


@pytest.mark.parametrize("line", ["no-tab", "u\t", "\tspk"])
def test_bad_line_names_file_and_line(tmp_path, line):
    p = tmp_path / "speakers.tsv"
    p.write_text(f"a\tA\n{line}\n", encoding="utf-8")
    with pytest.raises(LabelError, match=r"speakers.tsv:2: expected utt<TAB>speaker"):
        read_speakers(p)


def test_bundled_corpus_lists_every_utterance():
    root = bundled_corpus()
    speakers = read_speakers(root / "speakers.tsv")
    names = [line.split("\t")[0].rsplit("/", 1)[-1].rsplit(".", 1)[0]
             for f in ("train.tsv", "valid.tsv") for line in (root / f).read_text().splitlines()[1:]]
    assert set(speakers) == set(names)
    assert all(speakers[n] == n.split("-")[0] for n in names)  # bundled ids are speaker-index
