"""The bundled training set plus espeak-ng formant voices: the "more voices" row of docs/finetuning.md.

Writes DEST/train.tsv (the bundled training utterances and PER_VOICE new sentences for each espeak-ng
``en-us`` variant, random rate 140-190 wpm and pitch 35-65), train.ltr / train.wrd, the bundled valid split
as valid.tsv / .ltr / .wrd (absolute paths), so that

    research/finetuning/bundled_run.sh esp_s1 1 --set data.manifest=DEST/train.tsv

fine-tunes on eight more voices and is scored on the same unheard voice. No sentence is in the bundled train
or valid text. Experiment only (espeak-ng has no phone timings for its formant voices, so these utterances
have no alignments and are not part of the corpus format).

    python research/finetuning/espeak_voices.py DEST [--variants m1,m3,...] [--per-voice 30]
"""

from __future__ import annotations

import argparse
import random
import subprocess
from pathlib import Path

import soundfile as sf

from dinosr.data.audio import resample
from dinosr.data.corpus import bundled_corpus
from dinosr.data.corpus.layout import letters, normalise_words
from dinosr.data.corpus.sentences import generate_sentences


def absolute_manifest_rows(corpus: Path, split: str) -> list[str]:
    """The rows of corpus/SPLIT.tsv with absolute paths (the manifest root becomes "/")."""
    rows = (corpus / f"{split}.tsv").read_text().splitlines()[1:]
    return [f"{corpus / row.split(chr(9))[0]}\t{row.split(chr(9))[1]}" for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--variants", default="m1,m3,m7,f1,f2,f4,croak,klatt")
    parser.add_argument("--per-voice", type=int, default=30)
    args = parser.parse_args()
    bundled = bundled_corpus()
    known = set()
    for split in ("train", "valid"):
        known |= set((bundled / f"{split}.wrd").read_text().splitlines())
    sentences = iter(
        s for s in generate_sentences(5000, seed=9191) if " ".join(normalise_words(s.split())) not in known
    )
    rng = random.Random(0)
    (args.dest / "audio").mkdir(parents=True, exist_ok=True)
    rows, ltr, wrd = [], [], []
    for variant in args.variants.split(","):
        for i in range(args.per_voice):
            text = next(sentences)
            wav = args.dest / "audio" / f"esp_{variant}_{i:04d}.wav"
            rate, pitch = rng.randint(140, 190), rng.randint(35, 65)
            voice = f"en-us+{variant}"
            command = ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(wav), text]
            subprocess.run(command, check=True)
            audio, sample_rate = sf.read(wav, dtype="float32")
            audio = resample(audio, sample_rate, 16000)
            sf.write(wav, audio, 16000)
            rows.append(f"{wav}\t{len(audio)}")
            words = normalise_words(text.split())
            wrd.append(" ".join(words))
            ltr.append(letters(words))
    train_rows = ["/", *absolute_manifest_rows(bundled, "train"), *rows]
    (args.dest / "train.tsv").write_text("\n".join(train_rows) + "\n")
    (args.dest / "train.ltr").write_text((bundled / "train.ltr").read_text() + "\n".join(ltr) + "\n")
    (args.dest / "train.wrd").write_text((bundled / "train.wrd").read_text() + "\n".join(wrd) + "\n")
    (args.dest / "valid.tsv").write_text("\n".join(["/", *absolute_manifest_rows(bundled, "valid")]) + "\n")
    for ext in ("ltr", "wrd"):
        (args.dest / f"valid.{ext}").write_text((bundled / f"valid.{ext}").read_text())
    minutes = sum(int(row.split("\t")[1]) for row in rows) / 16000 / 60
    print(f"{len(rows)} espeak-ng utterances ({minutes:.1f} min) added to the bundled training set")


if __name__ == "__main__":
    main()
