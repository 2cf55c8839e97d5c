"""`dinosr wer` and `dinosr transcribe`: thin wrappers around dinosr.asr."""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger(__name__)


def _wer(args: argparse.Namespace) -> int:
    from dinosr.asr.scoring import score_files

    rates = score_files(args.ref, args.hyp, allow_missing=args.allow_missing)
    print(json.dumps(rates.to_dict(), indent=2) if args.json else rates.summary())
    return 0


def _transcribe(args: argparse.Namespace) -> int:
    from dinosr.asr.transcribe import entries_from_inputs, run_transcription
    from dinosr.interop.ctc_pretrained import load_ctc_model

    if args.lexicon is not None and args.lm is None:  # before any file is read: a usage error
        from dinosr.asr.lm import LMError

        raise LMError("--lexicon needs --lm (the lexicon constrains the LM beam search)")
    entries = entries_from_inputs(args.input)
    model, dictionary = load_ctc_model(args.model, map_location=args.device)
    decoder = None
    if args.lm is not None:
        from dinosr.asr.lm import BeamSearchDecoder, BeamSettings

        settings = BeamSettings(
            beam_size=args.beam_size,
            beam_threshold=args.beam_threshold,
            lm_weight=args.lm_weight,
            word_score=args.word_score,
        )
        decoder = BeamSearchDecoder(dictionary, args.lm, args.lexicon, settings)
    summary = run_transcription(
        model,
        dictionary,
        entries,
        args.out,
        decoder=decoder,
        batch_seconds=args.batch_seconds,
        chunk_seconds=None if args.chunk_seconds <= 0 else args.chunk_seconds,
        context_seconds=args.context_seconds,
        skip_bad_files=args.skip_bad_files,
        progress=not args.no_progress,
    )
    if summary.done == 0:
        log.info("nothing transcribed: %d already in %s, %d bad", summary.skipped, args.out, len(summary.bad))
        return 0
    log.info(
        "transcribed %d utterance(s), %.1f s of audio in %.1f s: real-time factor %.4f "
        "(%d already done, %d bad)%s",
        summary.done, summary.audio_seconds, summary.elapsed_seconds, summary.real_time_factor,
        summary.skipped, len(summary.bad), f" -> {args.out}" if args.out else "",
    )  # fmt: skip
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

    p = subparsers.add_parser(
        "transcribe",
        help="transcribe audio with a fine-tuned CTC model (greedy, or beam search with a word LM)",
        description="One transcript per utterance: utt<TAB>text (or .jsonl with text and seconds). "
        "Resumable: utterances already in --out are skipped. Prints the real-time factor.",
    )
    p.add_argument(
        "model", metavar="MODEL", help="fine-tuned model directory, fine-tuning run directory or checkpoint"
    )
    p.add_argument(
        "input", metavar="AUDIO_OR_MANIFEST", nargs="+",
        help="audio file(s), or one directory of audio, or one .tsv/.csv/.jsonl manifest",
    )  # fmt: skip
    p.add_argument("--out", default=None, help="output .tsv or .jsonl (default: TSV on stdout)")
    p.add_argument(
        "--batch-seconds",
        type=float,
        default=20.0,
        help="padded audio per batch (CPU: ~20 is fastest, larger batches run slower; GPU: raise it)",
    )
    p.add_argument("--chunk-seconds", type=float, default=20.0, help="chunk long files (<= 0: never)")
    p.add_argument("--context-seconds", type=float, default=2.0, help="context either side of a chunk")
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-bad-files", action="store_true", help="report unreadable audio and continue")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    lm = p.add_argument_group("beam search with a word n-gram LM (needs dinosr[lm]: flashlight-text)")
    lm.add_argument("--lm", default=None, help="KenLM ARPA or binary file; without it: greedy decoding")
    lm.add_argument(
        "--lexicon", default=None, help="WORD W O R D | lines (default: the ARPA file's unigrams)"
    )
    lm.add_argument("--beam-size", type=int, default=50)
    lm.add_argument("--beam-threshold", type=float, default=50.0)
    lm.add_argument("--lm-weight", type=float, default=2.0)
    lm.add_argument("--word-score", type=float, default=0.0, help="score added per word")
    p.set_defaults(func=_transcribe)
