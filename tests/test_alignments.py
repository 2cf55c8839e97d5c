"""Alignment readers and the 20 ms frame-label rule, against hand-computed examples."""

from __future__ import annotations

import pytest

from dinosr.data.alignments import (
    AlignmentError,
    Segment,
    frames_from_segments,
    load_frame_labels,
    normalize_phone,
    read_alignments,
    segments_from_frames,
    write_alignment_jsonl,
    write_alignment_tsv,
    write_frame_label_tsv,
)

SEGMENTS = [Segment(0.0, 0.03, "a"), Segment(0.03, 0.07, "b"), Segment(0.09, 0.13, "c")]


def test_frame_rule_hand_computed():
    # centres 0.01 0.03 0.05 0.07 0.09 0.11; 0.03 belongs to b ([start, end)); 0.07 is in a gap
    assert frames_from_segments(SEGMENTS) == ["a", "b", "b", "sil", "c", "c"]
    assert frames_from_segments(SEGMENTS, num_frames=8)[-3:] == ["c", "sil", "sil"]
    assert frames_from_segments(SEGMENTS, num_frames=2) == ["a", "b"]
    assert frames_from_segments(SEGMENTS, frame_step=0.04) == ["a", "b", "c"]  # centres 0.02 0.06 0.10
    assert frames_from_segments([]) == []


def test_ten_ms_labels_to_twenty_ms():
    labels = ["x", "x", "y", "y", "y", "z"]
    assert segments_from_frames(labels, 0.01) == [
        Segment(0.0, 0.02, "x"),
        Segment(0.02, 0.05, "y"),
        Segment(0.05, 0.06, "z"),
    ]
    # 20 ms frame i takes 10 ms label 2i+1
    assert frames_from_segments(segments_from_frames(labels, 0.01)) == ["x", "y", "z"]


@pytest.mark.parametrize(
    ("raw", "folded"),
    [("AH0", "AH"), ("ey1", "EY"), ("ZH", "ZH"), ("sil", "sil"), ("SIL", "sil"), ("sp", "sil"),
     ("spn", "sil"), ("pau", "sil"), ("h#", "sil"), ("", "sil"), ("+NSN+", "sil")],
)  # fmt: skip
def test_normalize_phone(raw, folded):
    assert normalize_phone(raw) == folded


def test_normalize_unknown_phone():
    with pytest.raises(ValueError, match="AX"):
        normalize_phone("AX")
    assert normalize_phone("ax", strict=False) == "AX"


def test_segment_tsv_round_trip(tmp_path):
    path = tmp_path / "ali.tsv"
    write_alignment_tsv({"u1": SEGMENTS, "u2": [Segment(0.0, 0.5, "sil")]}, path)
    assert path.read_text().splitlines()[:2] == ["utt\tstart\tend\tphone", "u1\t0\t0.03\ta"]
    assert read_alignments(path) == {"u1": SEGMENTS, "u2": [Segment(0.0, 0.5, "sil")]}


def test_frame_label_formats_round_trip(tmp_path):
    labels = {"u1": ["AH0", "AH0", "sil", "B"], "u2": ["sp"]}
    write_frame_label_tsv(labels, tmp_path / "lab.tsv")
    write_alignment_jsonl(labels, tmp_path / "lab.jsonl")
    assert (tmp_path / "lab.tsv").read_text() == "u1\tAH0,AH0,sil,B\nu2\tsp\n"
    for name in ("lab.tsv", "lab.jsonl"):
        segs = read_alignments(tmp_path / name, frame_step=0.02)
        assert {u: frames_from_segments(s) for u, s in segs.items()} == labels
        assert load_frame_labels(tmp_path / name, frame_step=0.02) == {
            "u1": ["AH", "AH", "sil", "B"],
            "u2": ["sil"],
        }
    with pytest.raises(ValueError, match="frame_step"):
        read_alignments(tmp_path / "lab.jsonl")


def test_textgrid(tmp_path):
    textgrid = pytest.importorskip("praatio.textgrid")
    from praatio.data_classes.interval_tier import IntervalTier

    grid = textgrid.Textgrid()
    grid.addTier(
        IntervalTier("phones", [(0.0, 0.03, "HH"), (0.03, 0.07, "AY1"), (0.09, 0.13, "spn")], 0, 0.13)
    )
    grid.save(str(tmp_path / "utt1.TextGrid"), format="long_textgrid", includeBlankSpaces=True)
    segs = read_alignments(tmp_path / "utt1.TextGrid")
    assert [s.phone for s in segs["utt1"]] == ["HH", "AY1", "", "spn"]  # the gap is an empty interval
    assert load_frame_labels(tmp_path) == {"utt1": ["HH", "AY", "AY", "sil", "sil", "sil"]}
    with pytest.raises(AlignmentError, match="no tier 'words'"):
        read_alignments(tmp_path / "utt1.TextGrid", tier="words")


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("a.tsv", "utt\tstart\tend\tphone\nu\t0\t0.1\tAA\nu\t0.1\tAA\n", 3),
        ("a.tsv", "utt\tstart\tend\tphone\nu\t0.2\t0.1\tAA\n", 2),
        ("b.tsv", "u1\tA,B\nu2 A,B\n", 2),
        ("c.jsonl", '{"name": "u", "phones": ["A"]}\n{"phones": []}\n', 2),
    ],
)
def test_malformed_names_file_and_line(tmp_path, name, text, line):
    (tmp_path / name).write_text(text)
    with pytest.raises(AlignmentError, match=rf"{name.replace('.', '[.]')}:{line}:"):
        read_alignments(tmp_path / name, frame_step=0.01)
