"""`dinosr corpus synth|demo`: render a phone-aligned synthetic speech corpus."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

DEMO_HOURS = 1.0
DEFAULT_SEED = 1234


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``corpus`` with its ``synth`` and ``demo`` sub-subcommands."""
    parser = subparsers.add_parser("corpus", help="synthesise a phone-aligned speech corpus")
    sub = parser.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)

    synth = sub.add_parser("synth", help="render sentences with several voices into the corpus layout")
    synth.add_argument("--out", type=Path, required=True, help="corpus directory")
    size = synth.add_mutually_exclusive_group()
    size.add_argument("--hours", type=float, help="approximate hours of audio (built-in sentences)")
    size.add_argument("--num-utterances", type=int, help="number of utterances (default 100)")
    _common(synth)
    synth.set_defaults(func=run_synth)

    demo = sub.add_parser("demo", help=f"~{DEMO_HOURS:g} h corpus with every available voice, default seed")
    demo.add_argument("--out", type=Path, required=True, help="corpus directory")
    demo.add_argument("--jobs", type=int, default=2, help="worker processes")
    demo.set_defaults(func=run_demo)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--voices", default="all", help="kal,ked,slt,mbrola-us1,... or 'all'")
    parser.add_argument("--variants", type=int, default=3, help="speakers per voice (1-3)")
    parser.add_argument("--text", type=Path, help="sentences file, one per line (default: built-in grammar)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--valid-speakers", default="2", help="held-out count or names")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--noise-snr", type=float, default=38.0, help="white noise SNR in dB (<= 0: none)")
    parser.add_argument("--level-dbfs", type=float, default=-30.0, help="speech RMS level of stored audio")
    parser.add_argument("--format", choices=["flac", "wav"], default="flac", dest="audio_format")
    parser.add_argument("--relative-root", action="store_true", help="manifest root '.' (relocatable)")


def _sentences(args: argparse.Namespace) -> list[str]:
    from dinosr.data.corpus.sentences import estimate_seconds, generate_sentence, read_sentences

    if args.text is not None:
        sentences = read_sentences(args.text)
        if args.num_utterances:
            sentences = sentences[: args.num_utterances]
        return sentences
    import random

    rng = random.Random(args.seed)
    if args.hours:
        sentences, total = [], 0.0
        while total < args.hours * 3600:
            sentences.append(generate_sentence(rng))
            total += estimate_seconds(sentences[-1])
        return sentences
    return [generate_sentence(rng) for _ in range(args.num_utterances or 100)]


def run_synth(args: argparse.Namespace) -> int:
    """Plan and render the corpus; print a summary with the synthesis speed."""
    from dinosr.data.corpus.festival import EngineMissingError
    from dinosr.data.corpus.synth import (
        available_voices,
        check_voices,
        choose_valid_speakers,
        make_speakers,
        synthesize_corpus,
    )

    voices = [v.strip() for v in args.voices.split(",") if v.strip()]
    if args.voices == "all":
        voices = available_voices()
    try:
        if not voices:
            check_voices(["kal"])  # raises with the packages to install
        check_voices(voices)
    except EngineMissingError as err:
        logger.error("%s", err)
        return 1
    speakers = make_speakers(voices, variants=args.variants)
    if args.valid_speakers.isdigit():
        valid = choose_valid_speakers(speakers, int(args.valid_speakers))
    else:
        valid = [v.strip() for v in args.valid_speakers.split(",") if v.strip()]
        unknown = set(valid) - {s.name for s in speakers}
        if unknown:
            names = [s.name for s in speakers]
            logger.error("unknown valid speakers %s; speakers are %s", sorted(unknown), names)
            return 2
    sentences = _sentences(args)
    logger.info(
        "voices %s, %d speakers (valid %s), %d sentences", voices, len(speakers), valid, len(sentences)
    )
    summary = synthesize_corpus(
        args.out, sentences, speakers, seed=args.seed, valid_speakers=valid, jobs=args.jobs,
        noise_snr=args.noise_snr if args.noise_snr > 0 else None, audio_format=args.audio_format,
        level_dbfs=args.level_dbfs, relative_root=args.relative_root,
    )  # fmt: skip
    print(
        f"{summary.num_utterances} utterances, {summary.hours * 60:.1f} min of audio in {args.out}; "
        f"dropped: {summary.failures or 'none'}; phones: {len(summary.phones_present)}/40"
        + (f" (missing {' '.join(summary.missing_phones)})" if summary.missing_phones else "")
    )
    print(
        f"synthesis speed: {summary.hours_per_minute:.3f} hours of audio per minute of wall time "
        f"({summary.wall_seconds:.1f} s, {args.jobs} jobs)"
    )
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """``synth`` with every available voice, ~1 hour, the default seed."""
    parser = argparse.ArgumentParser()
    _common(parser)
    synth_args = parser.parse_args(["--jobs", str(args.jobs)])
    synth_args.out = args.out
    synth_args.hours = DEMO_HOURS
    synth_args.num_utterances = None
    return run_synth(synth_args)
