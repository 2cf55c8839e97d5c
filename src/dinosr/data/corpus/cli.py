"""`dinosr corpus synth|demo|split`: render a phone-aligned synthetic speech corpus; re-split one."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from dinosr.data.corpus.speakers import PSEUDO_SPEAKERS

logger = logging.getLogger(__name__)

DEMO_HOURS = 1.0
DEFAULT_SEED = 1234


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``corpus`` with its ``synth``, ``demo`` and ``split`` sub-subcommands."""
    parser = subparsers.add_parser("corpus", help="synthesise a phone-aligned speech corpus")
    sub = parser.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)

    synth = sub.add_parser("synth", help="render sentences with several voices into the corpus layout")
    synth.add_argument("--out", type=Path, required=True, help="corpus directory")
    size = synth.add_mutually_exclusive_group()
    size.add_argument("--hours", type=float, help="approximate hours of audio (built-in sentences)")
    size.add_argument("--num-utterances", type=int, help="number of utterances (default 100)")
    _common(synth)
    synth.set_defaults(func=run_synth)

    demo = sub.add_parser("demo", help=f"~{DEMO_HOURS:g} h corpus with every Festival voice, default seed")
    demo.add_argument("--out", type=Path, required=True, help="corpus directory")
    demo.add_argument("--jobs", type=int, default=2, help="worker processes")
    demo.set_defaults(func=run_demo)

    split = sub.add_parser(
        "split", help="rewrite train/valid manifests and transcripts of an existing corpus (audio untouched)"
    )
    split.add_argument("root", type=Path, help="corpus directory")
    _split_options(split)
    split.set_defaults(func=run_split)


def _split_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--heldout-voice",
        help="base voice(s) whose speakers (all pseudo-speakers too) form valid.*, comma-separated, or "
        "'all' (an evaluation-only corpus) (default: slt when present, else the last voice)",
    )
    group.add_argument(
        "--valid-speakers",
        help="hold out speakers instead: a count or names (pseudo-speakers of training voices: "
        "not an unseen-voice test)",
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--voices", default="all", help="kal,ked,slt,mbrola-us1,flite-awb,... or 'all'")
    parser.add_argument(
        "--variants", type=int, default=3, help="speakers per voice (1-3 with resample, 1-5 with warp)"
    )
    parser.add_argument(
        "--pseudo-speakers", choices=sorted(PSEUDO_SPEAKERS), default="resample",
        help="how variants b, c... differ: resample (f0, formants, tempo together) or warp (independent)",
    )  # fmt: skip
    parser.add_argument("--text", type=Path, help="sentences file, one per line (default: built-in grammar)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    _split_options(parser)
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
    from dinosr.data.corpus.speakers import make_speakers
    from dinosr.data.corpus.synth import available_voices, check_voices, synthesize_corpus

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
    try:
        speakers = make_speakers(voices, variants=args.variants, method=args.pseudo_speakers)
        valid = _valid_speakers(args, speakers)
    except ValueError as err:
        logger.error("%s", err)
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


def _valid_speakers(args: argparse.Namespace, speakers: list) -> list[str]:
    """The held-out speakers: every speaker of one base voice, unless ``--valid-speakers`` is given."""
    from dinosr.data.corpus.speakers import choose_valid_speakers
    from dinosr.data.corpus.split import default_heldout_voice, voice_speakers

    names = [s.name for s in speakers]
    if args.valid_speakers is not None:
        if args.valid_speakers.isdigit():
            return choose_valid_speakers(speakers, int(args.valid_speakers))
        valid = [v.strip() for v in args.valid_speakers.split(",") if v.strip()]
        unknown = set(valid) - set(names)
        if unknown:
            raise ValueError(f"unknown valid speakers {sorted(unknown)}; speakers are {names}")
        return valid
    voices = list(dict.fromkeys(s.base_voice for s in speakers))
    if len(voices) < 2 and args.heldout_voice is None:
        logger.warning(
            "one voice only (%s): holding out one of its speakers, which shares its base voice with "
            "training (not an unseen-voice test)", voices[0],
        )  # fmt: skip
        return choose_valid_speakers(speakers, 1)
    if args.heldout_voice == "all":
        return names
    heldout_arg = args.heldout_voice or default_heldout_voice(voices)
    heldout = [v.strip() for v in heldout_arg.split(",") if v.strip()]
    base_voices = {s.name: s.base_voice for s in speakers}
    valid = sorted({spk for voice in heldout for spk in voice_speakers(base_voices, voice)})
    if len(valid) == len(speakers):
        raise ValueError(f"holding out {heldout} leaves no training speaker (--heldout-voice all does that)")
    return valid


def run_split(args: argparse.Namespace) -> int:
    """``dinosr corpus split ROOT``: re-split an existing corpus by base voice (or by speaker)."""
    from dinosr.data.corpus.speakers import Speaker
    from dinosr.data.corpus.split import resplit_corpus

    meta_path = args.root / "corpus.json"
    if not meta_path.is_file():
        logger.error("%s: not found; `dinosr corpus split` needs a `dinosr corpus synth` corpus", meta_path)
        return 2
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    speakers = [Speaker(**spk) for spk in meta["speakers"].values()]
    try:
        valid = _valid_speakers(args, speakers)
        info = resplit_corpus(args.root, valid)
    except ValueError as err:
        logger.error("%s", err)
        return 2
    print(f"{args.root}: valid = {', '.join(valid)} (split by {info['split']}, held-out voices: "
          f"{', '.join(info['heldout_voices']) or 'none'})")  # fmt: skip
    return 0


def synthesize_demo_corpus(out: str | Path, *, jobs: int = 2) -> int:
    """The demo corpus: ``synth`` with every installed Festival voice, ~1 hour, the default seed.

    Festival voices only, so the corpus does not change when the MBROLA packages are installed and
    the MBROLA voices stay unseen by demo models (an evaluation set of voices never trained on).
    The default split holds out slt (all three of its speakers) as ``valid.*``.

    The one definition of the demo corpus, used by ``dinosr corpus demo`` and by ``dinosr demo``.
    Returns the exit status of ``synth`` (0 on success).
    """
    parser = argparse.ArgumentParser()
    _common(parser)
    from dinosr.data.corpus.festival import available_festival_voices

    voices = ",".join(available_festival_voices())
    synth_args = parser.parse_args(["--jobs", str(jobs), "--voices", voices])
    synth_args.out = Path(out)
    synth_args.hours = DEMO_HOURS
    synth_args.num_utterances = None
    return run_synth(synth_args)


def run_demo(args: argparse.Namespace) -> int:
    """``dinosr corpus demo``: `synthesize_demo_corpus`."""
    return synthesize_demo_corpus(args.out, jobs=args.jobs)
