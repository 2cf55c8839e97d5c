"""Chance level of a valid split: the best *constant* transcript's CER and WER.

Every training sentence is tried as the transcript of every valid utterance; the best one is what a recogniser
that ignores the audio could score at most by picking a sentence (an empty transcript scores 100 % CER).
docs/finetuning.md quotes it for the bundled corpus:

    B=src/dinosr/assets/corpus; python research/finetuning/chance_cer.py $B/train.wrd $B/valid.wrd
"""

from __future__ import annotations

import argparse

from dinosr.asr.scoring import score


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("train_wrd", help="training transcripts, one sentence per line")
    parser.add_argument("valid_wrd", help="valid transcripts, one sentence per line")
    args = parser.parse_args()
    with open(args.valid_wrd, encoding="utf-8") as f:
        refs = [line.strip() for line in f if line.strip()]
    with open(args.train_wrd, encoding="utf-8") as f:
        candidates = sorted({line.strip() for line in f if line.strip()})
    rates = {c: score(refs, [c] * len(refs)) for c in candidates}
    best = min(candidates, key=lambda c: rates[c].cer)
    print(
        f"best constant transcript {best!r}: CER {rates[best].cer:.1f} %, WER {rates[best].wer:.1f} % "
        f"({len(refs)} valid utterances, {len(candidates)} candidate sentences)"
    )


if __name__ == "__main__":
    main()
