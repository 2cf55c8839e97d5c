"""`dinosr wer` and `dinosr transcribe`: thin wrappers around dinosr.asr."""

from __future__ import annotations

import argparse
import json


def _wer(args: argparse.Namespace) -> int:
    from dinosr.asr.scoring import score_files

    rates = score_files(args.ref, args.hyp, allow_missing=args.allow_missing)
    print(json.dumps(rates.to_dict(), indent=2) if args.json else rates.summary())
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "wer",
        help="word and character error rates of hypotheses against references",
        description="WER and CER in percent (corpus level) with substitutions / deletions / insertions. "
        "Files: utt<TAB>text lines (or .jsonl with utt/text), matched by utterance id; "
        "whitespace is collapsed, nothing else is normalised; CER counts spaces as characters.",
    )
    p.add_argument("ref", metavar="REF", help="reference transcripts (utt<TAB>text or .jsonl)")
    p.add_argument("hyp", metavar="HYP", help="hypotheses, e.g. the TSV written by `dinosr transcribe`")
    p.add_argument(
        "--allow-missing", action="store_true", help="score a reference without hypothesis as empty"
    )
    p.add_argument("--json", action="store_true", help="print the rates and counts as JSON")
    p.set_defaults(func=_wer)
