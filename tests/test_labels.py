"""Fine-tuning labels (dinosr.data.labels) and `dinosr labels` (dinosr.asr.labels_cli)."""

import random
import shutil
from pathlib import Path

import pytest

from dinosr.cli import main
from dinosr.data.corpus import bundled_corpus
from dinosr.data.labels import (
    Dictionary,
    LabelError,
    load_labels,
    normalize_transcript,
    words_to_letters,
)
from dinosr.data.manifest import read_manifest
from dinosr.errors import DinosrError

CORPUS = bundled_corpus()


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# ----------------------------------------------------------------------------- Dictionary
def test_fairseq_indices_and_file_order(tmp_path):
    path = tmp_path / "dict.ltr.txt"
    path.write_text("| 94802\nE 51860\nT 38431\n' 1000 #fairseq:overwrite\n\n", encoding="utf-8")
    d = Dictionary.load(path)
    assert d.symbols == ["<s>", "<pad>", "</s>", "<unk>", "|", "E", "T", "'"]
    assert (d.blank, d.pad, d.eos, d.unk) == (0, 1, 2, 3)
    assert d.word_separator == "|"
    assert d.index("|") == 4
    assert len(d) == 8
    assert d.counts[4:] == [94802, 51860, 38431, 1000]


def test_save_load_round_trip_is_atomic(tmp_path):
    d = Dictionary(["|", "A", "B"], [3, 2, 1])
    path = d.save(tmp_path / "sub" / "dict.ltr.txt")
    assert path.read_text(encoding="utf-8") == "| 3\nA 2\nB 1\n"  # specials are implicit
    assert Dictionary.load(path) == d
    assert sorted(p.name for p in path.parent.iterdir()) == ["dict.ltr.txt"]  # no temporary left


def test_build_sorts_by_count_then_symbol():
    d = Dictionary.build(["B A | C |", "A B | <unk> |", "Z |"])
    # counts: | 5, A 2, B 2, C 1, Z 1 (specials never counted)
    assert d.symbols[4:] == ["|", "A", "B", "C", "Z"]
    assert d.counts[4:] == [5, 2, 2, 1, 1]


def test_encode_decode():
    d = Dictionary.build(["H E L L O | W O R L D |"])
    ids = d.encode("H E L L O | W O R L D |")
    assert ids[:2] == [d.index("H"), d.index("E")]
    assert d.decode(ids) == "H E L L O | W O R L D |"
    assert d.decode([0, d.index("H"), 1, 2, 3, d.index("|")]) == "H |"  # specials left out
    with pytest.raises(LabelError, match="'X' is not in the dictionary"):
        d.encode("H X |")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("A 1\nB\n", r":2: expected 'symbol count'"),
        ("A 1\nB x\n", r":2: expected 'symbol count'"),
        ("A 1\nB 2\nA 3\n", r":3: symbol 'A' repeated \(first on line 1\)"),
        ("<unk> 1\n", r":1: '<unk>' is a special symbol"),
        ("\n\n", "the dictionary is empty"),
    ],
)
def test_bad_dictionary_files(tmp_path, text, problem):
    path = tmp_path / "dict.ltr.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(LabelError, match=problem) as info:
        Dictionary.load(path)
    assert str(path) in str(info.value)


def test_missing_dictionary_file(tmp_path):
    with pytest.raises(LabelError, match="no such dictionary file"):
        Dictionary.load(tmp_path / "nope.txt")


def test_label_error_is_a_dinosr_error():
    assert issubclass(LabelError, DinosrError)
    assert issubclass(LabelError, ValueError)


# ----------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello,   world!", "HELLO WORLD"),
        ("  don’t STOP  ", "DON'T STOP"),  # typographic apostrophe -> ', kept
        ("twenty-one and/or more", "TWENTY ONE AND OR MORE"),  # dashes and slashes separate words
        ('"Quoted" (text); Mr. Smith?', "QUOTED TEXT MR SMITH"),
        ("ﬁne\tcafé\n", "FINE CAFÉ"),  # NFKC: the ligature becomes two letters
        ("the ' lone apostrophe", "THE LONE APOSTROPHE"),
        ("123 go", "123 GO"),
        ("...!?", ""),
    ],
)
def test_normalize_transcript(raw, expected):
    assert normalize_transcript(raw) == expected


def test_words_to_letters():
    assert words_to_letters("HELLO WORLD") == "H E L L O | W O R L D |"
    assert words_to_letters("A") == "A |"
    assert words_to_letters("") == ""


# ----------------------------------------------------------------------------- load_labels
def test_load_labels_on_the_bundled_corpus():
    lines = _lines(CORPUS / "train.ltr")
    d = Dictionary.build(lines)
    labels = load_labels(CORPUS / "train.tsv", d)
    assert len(labels) == len(read_manifest(CORPUS / "train.tsv")) == len(lines)
    assert [d.decode(ids) for ids in labels] == lines
    assert all(d.blank not in ids for ids in labels)
    # the corpus' .ltr is the letter form of its .wrd
    assert [words_to_letters(w) for w in _lines(CORPUS / "train.wrd")] == lines


def _corpus_copy(tmp_path: Path) -> Path:
    shutil.copy(CORPUS / "train.tsv", tmp_path / "train.tsv")
    shutil.copy(CORPUS / "train.ltr", tmp_path / "train.ltr")
    return tmp_path / "train.tsv"


def test_load_labels_line_count_mismatch(tmp_path):
    manifest = _corpus_copy(tmp_path)
    ltr = tmp_path / "train.ltr"
    n = len(_lines(ltr))
    ltr.write_text("\n".join(_lines(ltr)[:-1]) + "\n", encoding="utf-8")
    with pytest.raises(LabelError, match=rf"train\.ltr: {n - 1} lines but the manifest .* has {n} entries"):
        load_labels(manifest, Dictionary.build(_lines(CORPUS / "train.ltr")))


def test_load_labels_empty_transcript(tmp_path):
    manifest = _corpus_copy(tmp_path)
    ltr = tmp_path / "train.ltr"
    lines = _lines(ltr)
    lines[6] = "  "
    ltr.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(LabelError, match=r"train\.ltr:7: empty transcript"):
        load_labels(manifest, Dictionary.build(_lines(CORPUS / "train.ltr")))


def test_load_labels_symbol_missing_from_the_dictionary(tmp_path):
    manifest = _corpus_copy(tmp_path)
    lines = _lines(tmp_path / "train.ltr")
    # The corpus dictionary without its rarest letter.
    full = Dictionary.build(lines)
    missing = full.symbols[-1]
    d = Dictionary([sym for sym in full.symbols[full.nspecial :] if sym != missing])
    first = next(i for i, line in enumerate(lines, 1) if missing in line.split())
    with pytest.raises(LabelError, match=rf"train\.ltr:{first}: symbol '{missing}' is not in the dictionary"):
        load_labels(manifest, d)


def test_load_labels_without_label_file(tmp_path):
    manifest = _corpus_copy(tmp_path)
    (tmp_path / "train.ltr").unlink()
    with pytest.raises(LabelError, match="no such label file"):
        load_labels(manifest, Dictionary(["A"]))


# ----------------------------------------------------------------------------- dinosr labels
def _transcripts(tmp_path: Path, split: str, *, shuffle: bool = True) -> Path:
    """utt<TAB>raw text of the bundled split, lower case with punctuation, in a shuffled order."""
    names = [e.name for e in read_manifest(CORPUS / f"{split}.tsv")]
    words = _lines(CORPUS / f"{split}.wrd")
    rows = [f"{n}\t{w.lower().replace(' ', ', ', 1)}!" for n, w in zip(names, words)]
    if shuffle:
        random.Random(0).shuffle(rows)
    path = tmp_path / f"{split}_text.tsv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_cli_reproduces_the_bundled_labels(tmp_path):
    dest = tmp_path / "labels"
    train = _transcripts(tmp_path, "train")
    assert main(["labels", str(train), "--dest", str(dest), "--manifest", str(CORPUS / "train.tsv")]) == 0
    assert _lines(dest / "train.ltr") == _lines(CORPUS / "train.ltr")
    assert _lines(dest / "train.wrd") == _lines(CORPUS / "train.wrd")
    built = Dictionary.load(dest / "dict.ltr.txt")
    assert built == Dictionary.build(_lines(CORPUS / "train.ltr"))

    # The valid split reuses the training dictionary (not rebuilt from its own letters).
    valid = _transcripts(tmp_path, "valid")
    assert main(["labels", str(valid), "--dest", str(dest), "--manifest", str(CORPUS / "valid.tsv")]) == 0
    assert _lines(dest / "valid.ltr") == _lines(CORPUS / "valid.ltr")
    assert Dictionary.load(dest / "dict.ltr.txt") == built
    # and the result loads as fine-tuning labels beside a manifest
    shutil.copy(CORPUS / "valid.tsv", dest / "valid.tsv")
    assert len(load_labels(dest / "valid.tsv", built)) == len(_lines(CORPUS / "valid.ltr"))


def test_cli_without_manifest_keeps_file_order(tmp_path):
    path = tmp_path / "text.tsv"
    path.write_text("b\tSecond one.\na\tFirst\n\nc the Kaldi way\n", encoding="utf-8")
    assert main(["labels", str(path), "--dest", str(tmp_path / "out"), "--split", "dev"]) == 0
    assert _lines(tmp_path / "out" / "dev.wrd") == ["SECOND ONE", "FIRST", "THE KALDI WAY"]
    assert _lines(tmp_path / "out" / "dev.ltr")[1] == "F I R S T |"


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_cli_missing_transcript_names_the_utterance(tmp_path, capsys):
    path = _transcripts(tmp_path, "train", shuffle=False)
    lines = _lines(path)
    gone = lines.pop(3).split("\t")[0]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    argv = ["labels", str(path), "--dest", str(tmp_path), "--manifest", str(CORPUS / "train.tsv")]
    err = _error(capsys, argv)
    assert f"no transcript for utterance '{gone}' (entry 4 of" in err
    assert not (tmp_path / "train.ltr").exists()


def test_cli_empty_transcript_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "text.tsv"
    path.write_text("a\tfine\nb\t?!\n", encoding="utf-8")
    err = _error(capsys, ["labels", str(path), "--dest", str(tmp_path)])
    assert f"{path}:2: empty transcript for utterance 'b'" in err


def test_cli_repeated_utterance(tmp_path, capsys):
    path = tmp_path / "text.tsv"
    path.write_text("a\tone\nb\ttwo\na\tthree\n", encoding="utf-8")
    err = _error(capsys, ["labels", str(path), "--dest", str(tmp_path)])
    assert f"{path}:3: utterance 'a' repeated (first on line 1)" in err


def test_cli_symbol_missing_from_an_existing_dictionary(tmp_path, capsys):
    Dictionary.build(["A B |"]).save(tmp_path / "dict.ltr.txt")
    path = tmp_path / "text.tsv"
    path.write_text("u1\tab ba\nu2\tbad\n", encoding="utf-8")
    err = _error(capsys, ["labels", str(path), "--dest", str(tmp_path)])
    assert f"{path}:2: symbol 'D' of utterance 'u2' is not in {tmp_path / 'dict.ltr.txt'}" in err


def test_cli_missing_transcript_file(tmp_path, capsys):
    err = _error(capsys, ["labels", str(tmp_path / "none.tsv"), "--dest", str(tmp_path)])
    assert "none.tsv: no such transcript file" in err
