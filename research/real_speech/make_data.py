"""Build the real-speech experiment sets from ../shared/data (never committed into the project).

Writes, under DEST (default /work/exp/real):
  pretrain.tsv             unlabelled pretraining mix: LibriSpeech clips (251 speakers), LJSpeech LJ001 and
                           the AN4 *training* speakers; root = the shared data folder
  an4_train.tsv/.ltr/.wrd  AN4 fine-tuning split (the same training speakers)
  an4_dev.tsv/.ltr/.wrd    AN4 dev split: DEV_SPEAKERS speakers drawn with random.Random(0), absent from both
                           pretraining and fine-tuning
  an4_speakers.tsv         utt<TAB>speaker for both AN4 splits
  fsdd_eval.tsv            FSDD recordings (never used in training)
  fsdd_dev.tsv             dev set (c): FSDD's test takes 0-4 (300 recordings, 6 speakers)
  fsdd_speakers.tsv        FSDD utterance -> speaker
  pretrain_synthetic.tsv   with --synthetic CORPUS: pretrain.tsv plus every utterance of that corpus (train
                           and valid: the docs' "more voices" ablation); root = /

The AN4 dev speakers are disjoint from everything the models train on, so every AN4 dev number is on speakers
the model never heard. Usage: python research/real_speech/make_data.py [--shared ../shared] [--dest DIR]
[--synthetic CORPUS]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

DEV_SPEAKERS = 10


def read_tsv_manifest(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text().splitlines()
    return [tuple(line.split("\t")) for line in lines[1:] if line.strip()]


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[3] / "shared"))
    parser.add_argument("--dest", default="/work/exp/real")
    parser.add_argument("--synthetic", help="a dinosr corpus synth directory to add to the pretraining mix")
    args = parser.parse_args()
    real = Path(args.shared).resolve() / "data" / "real"
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)

    an4 = real / "an4"
    rows = read_tsv_manifest(an4 / "train.tsv")
    ltr = (an4 / "train.ltr").read_text().splitlines()
    wrd = (an4 / "train.wrd").read_text().splitlines()
    speaker_of = dict(line.split("\t") for line in (an4 / "speakers.tsv").read_text().splitlines() if line)
    speakers = sorted({speaker_of[Path(p).stem] for p, _ in rows})
    dev = set(random.Random(0).sample(speakers, DEV_SPEAKERS))
    print(f"AN4: {len(speakers)} speakers, dev = {sorted(dev)}")

    splits: dict[str, list[int]] = {"an4_train": [], "an4_dev": []}
    for i, (p, _) in enumerate(rows):
        splits["an4_dev" if speaker_of[Path(p).stem] in dev else "an4_train"].append(i)
    for name, idx in splits.items():
        write_lines(dest / f"{name}.tsv", [str(an4)] + ["\t".join(rows[i]) for i in idx])
        write_lines(dest / f"{name}.ltr", [ltr[i] for i in idx])
        write_lines(dest / f"{name}.wrd", [wrd[i] for i in idx])
        secs = sum(int(rows[i][1]) for i in idx) / 16000
        print(f"{name}: {len(idx)} utterances, {secs / 60:.1f} min")
    write_lines(dest / "an4_speakers.tsv", [f"{Path(p).stem}\t{speaker_of[Path(p).stem]}" for p, _ in rows])

    pretrain = [f"an4/{rows[i][0]}\t{rows[i][1]}" for i in splits["an4_train"]]
    for corpus in ("librispeech", "ljspeech"):
        pretrain += [f"{corpus}/{p}\t{n}" for p, n in read_tsv_manifest(real / corpus / "train.tsv")]
    write_lines(dest / "pretrain.tsv", [str(real), *pretrain])
    secs = sum(int(line.split("\t")[1]) for line in pretrain) / 16000
    print(f"pretrain: {len(pretrain)} utterances, {secs / 60:.1f} min")

    import soundfile as sf

    fsdd = Path(args.shared).resolve() / "data" / "fsdd" / "recordings"
    files = sorted(fsdd.glob("*.wav"))
    write_lines(dest / "fsdd_eval.tsv", [str(fsdd)] + [f"{f.name}\t{sf.info(f).frames}" for f in files])
    print(f"fsdd: {len(files)} recordings (8 kHz; resampled by the loader)")
    # Dev set (c): FSDD's official test takes (0-4) of its 6 speakers, and the utterance -> speaker file.
    test = [f for f in files if int(f.stem.split("_")[2]) < 5]
    write_lines(dest / "fsdd_dev.tsv", [str(fsdd)] + [f"{f.name}\t{sf.info(f).frames}" for f in test])
    write_lines(dest / "fsdd_speakers.tsv", [f"{f.stem}\t{f.stem.split('_')[1]}" for f in files])
    print(f"fsdd dev: {len(test)} recordings (takes 0-4)")

    if args.synthetic:
        corpus = Path(args.synthetic).resolve()
        entries = [tuple(line.split("\t")) for line in pretrain]
        paths = [(real / p, n) for p, n in entries]
        for split in ("train", "valid"):
            paths += [(corpus / p, n) for p, n in read_tsv_manifest(corpus / f"{split}.tsv")]
        mixed = [f"{path.relative_to('/')}\t{n}" for path, n in paths]  # root "/": two trees in one manifest
        write_lines(dest / "pretrain_synthetic.tsv", ["/", *mixed])
        print(f"pretrain + {corpus.name}: {len(mixed)} utterances")


if __name__ == "__main__":
    main()
