"""The train/valid split of a corpus by base voice, and re-splitting an existing corpus in place.

A generated corpus holds out every speaker of one voice (``--heldout-voice``), so ``valid.*`` is
a voice that training never heard, not a pseudo-speaker of a training voice. ``resplit_corpus``
rewrites the manifests and transcripts of a corpus already on disk (e.g. the bundled one) from its
own files, without touching the audio.
"""

from __future__ import annotations

import json
from pathlib import Path

from dinosr.data.corpus.layout import atomic_write_json, atomic_write_text
from dinosr.data.corpus.speakers import PREFIXED_ENGINES, Speaker
from dinosr.data.corpus.voices import VOICES_FILE, read_base_voices, voices_tsv_text

# Held out by default when present: the only voice that shares neither the synthesis method (HTS
# rather than residual-LPC diphones), the sex and f0 range, nor the lab with the others (kal and
# ked are both CSTR diphone voices of US men: holding out one leaves its sibling in training).
PREFERRED_HELDOUT_VOICE = "slt"


def default_heldout_voice(voices: list[str]) -> str:
    """``slt`` when among ``voices``, else the last voice (``voices`` as given to ``--voices``)."""
    return PREFERRED_HELDOUT_VOICE if PREFERRED_HELDOUT_VOICE in voices else voices[-1]


def voice_speakers(base_voices: dict[str, str], voice: str) -> list[str]:
    """Speakers whose base voice is ``voice`` (``mbrola-us1`` may be given as ``us1``, ``flite-awb``
    as ``awb``)."""
    names = {voice, *(f"{engine}-{voice}" for engine in PREFIXED_ENGINES)}
    chosen = sorted(spk for spk, base in base_voices.items() if base in names)
    if not chosen:
        raise ValueError(f"no speaker has base voice {voice!r}; voices: {sorted(set(base_voices.values()))}")
    return chosen


def split_metadata(base_voices: dict[str, str], valid_speakers: list[str]) -> dict:
    """The ``corpus.json`` keys describing a split: ``split`` is ``"voice"`` when no valid speaker
    shares a base voice with a train speaker (then ``heldout_voices`` names them), else ``"speaker"``."""
    valid = set(valid_speakers)
    train_voices = {v for s, v in base_voices.items() if s not in valid}
    valid_voices = {v for s, v in base_voices.items() if s in valid}
    return {
        "split": "speaker" if train_voices & valid_voices else "voice",
        "heldout_voices": sorted(valid_voices - train_voices),
        "shared_voices": sorted(train_voices & valid_voices),
    }


def _split_rows(root: Path, split: str) -> tuple[str, list[tuple[str, str, str]]]:
    """The manifest root line and ``(manifest row, .wrd line, .ltr line)`` of one split."""
    tsv = (root / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
    wrd = (root / f"{split}.wrd").read_text(encoding="utf-8").splitlines()
    ltr = (root / f"{split}.ltr").read_text(encoding="utf-8").splitlines()
    if not tsv or not len(tsv) - 1 == len(wrd) == len(ltr):
        raise ValueError(
            f"{root}: {split}.tsv has {max(len(tsv) - 1, 0)} rows but {split}.wrd {len(wrd)} and "
            f"{split}.ltr {len(ltr)} lines; they must be line-aligned"
        )
    return tsv[0], list(zip(tsv[1:], wrd, ltr))


def resplit_corpus(root: str | Path, valid_speakers: list[str]) -> dict:
    """Rewrite ``train``/``valid`` ``.tsv``/``.wrd``/``.ltr`` of the corpus at ``root``.

    Utterances keep the order of ``speakers.tsv`` (the generation order, as a fresh run would
    write them). ``voices.tsv`` is written when missing (derived from ``corpus.json``) and
    ``corpus.json`` gets the new speaker lists and split keys. The audio is not touched.

    Returns:
        The split metadata (:func:`split_metadata`).
    """
    root = Path(root)
    speaker_of = dict(
        line.split("\t") for line in (root / "speakers.tsv").read_text(encoding="utf-8").splitlines() if line
    )
    unknown = set(valid_speakers) - set(speaker_of.values())
    if unknown:
        raise ValueError(f"{root}: unknown valid speakers {sorted(unknown)}")
    manifest_root, rows = None, {}
    for split in ("train", "valid"):
        root_line, split_rows = _split_rows(root, split)
        manifest_root = manifest_root or root_line
        for row in split_rows:
            rows[Path(row[0].split("\t")[0]).stem] = row
    if set(rows) != set(speaker_of):
        raise ValueError(f"{root}: the manifests and speakers.tsv list different utterances")
    for split in ("train", "valid"):
        chosen = [rows[u] for u, spk in speaker_of.items() if (spk in valid_speakers) == (split == "valid")]
        atomic_write_text(root / f"{split}.tsv", "\n".join([manifest_root, *(r[0] for r in chosen)]) + "\n")
        atomic_write_text(root / f"{split}.wrd", "".join(r[1] + "\n" for r in chosen))
        atomic_write_text(root / f"{split}.ltr", "".join(r[2] + "\n" for r in chosen))
    meta_path = root / "corpus.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if not (root / VOICES_FILE).is_file():
        speakers = [Speaker(**spk) for spk in meta["speakers"].values()]
        rows = [(s.name, s.base_voice, s.transform) for s in speakers]
        atomic_write_text(root / VOICES_FILE, voices_tsv_text(rows))
    base_voices = read_base_voices(root / VOICES_FILE)
    info = split_metadata(base_voices, valid_speakers)
    meta.update(
        base_voices=base_voices,
        train_speakers=sorted(set(speaker_of.values()) - set(valid_speakers)),
        valid_speakers=sorted(valid_speakers),
        **info,
    )
    atomic_write_json(meta_path, meta)
    return info
