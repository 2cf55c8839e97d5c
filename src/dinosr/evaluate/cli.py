"""`dinosr evaluate`: metrics + HTML report of a model or extracted features (`dinosr.evaluate.runner`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser(
        "evaluate",
        help="unit/feature metrics per layer (purity, PNMI, ABX, probe) vs baselines, with an HTML report",
        description=(
            "Evaluate a model (checkpoint, pretrained directory, or training run directory) or a directory "
            "written by `dinosr extract` on a phone-aligned corpus; writes OUT/metrics.json "
            "and OUT/report.html."
        ),
    )
    ev.add_argument(
        "model", help="checkpoint / pretrained dir / run dir (RUN/checkpoints), or a `dinosr extract` dir"
    )
    ev.add_argument(
        "--corpus", type=Path, help="corpus directory (train.tsv, valid.tsv, alignments.tsv, speakers.tsv)"
    )
    ev.add_argument("--split", default="valid", help="corpus split to evaluate (default valid)")
    ev.add_argument(
        "--train-split", default="train", help="corpus split for probe / k-means fits ('' = none)"
    )
    ev.add_argument("--manifest", type=Path, help="evaluation manifest (instead of --corpus)")
    ev.add_argument("--alignments", type=Path, help="phone alignments (segment TSV, TextGrid dir, ...)")
    ev.add_argument("--speakers", type=Path, help="utt<TAB>speaker TSV (default: utterance id up to '-')")
    ev.add_argument(
        "--train-corpus", type=Path, help="corpus directory of the training set (default: --corpus)"
    )
    ev.add_argument("--train-manifest", type=Path, help="training-speaker manifest for probe / k-means fits")
    ev.add_argument(
        "--train-alignments",
        type=Path,
        help="phone alignments of the training set (default: the training corpus's, else --alignments)",
    )
    ev.add_argument("--train-speakers", type=Path, help="utt<TAB>speaker TSV of the training set")
    ev.add_argument(
        "--voices",
        type=Path,
        help="speaker base voices (voices.tsv or corpus.json; default: found next to each manifest)",
    )
    ev.add_argument(
        "--skip-bad-files", action="store_true", help="log, count and skip unreadable audio files"
    )
    ev.add_argument(
        "--out", type=Path, default=Path("dinosr-eval"), help="output directory (default dinosr-eval)"
    )
    ev.add_argument("--layers", type=_int_list, help="feature layers, e.g. 0,2,4 (default all)")
    ev.add_argument("--unit-layers", type=_int_list, help="codebook layers for units (default all)")
    ev.add_argument(
        "--kind", choices=["hidden", "ffn"], default="hidden", help="feature kind (default hidden)"
    )
    ev.add_argument("--source", choices=["codebook", "head"], default="codebook", help="unit source")
    ev.add_argument("--no-abx", action="store_true", help="skip ABX")
    ev.add_argument("--no-probe", action="store_true", help="skip the linear probe")
    ev.add_argument("--no-baselines", action="store_true", help="skip MFCC and MFCC k-means")
    ev.add_argument("--kmeans-layer", type=int, help="also evaluate k-means units of this model layer")
    ev.add_argument("--baseline-units", type=int, help="k-means size (default: the codebook size)")
    ev.add_argument("--codebook-size", type=int, help="unit inventory size of an extract directory")
    ev.add_argument("--max-seconds", type=float, help="cap the evaluation audio (speaker-balanced subset)")
    ev.add_argument("--abx-max-seconds", type=float, help="cap the audio used for ABX")
    ev.add_argument(
        "--train-max-seconds", type=float, default=900.0, help="cap training audio for fits (900)"
    )
    ev.add_argument("--probe-epochs", type=int, default=10)
    ev.add_argument(
        "--train-log", type=Path, help="metrics.jsonl of the run (found automatically in a run dir)"
    )
    ev.add_argument("--seed", type=int, default=0)
    ev.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from dinosr.evaluate.evaluate import EvalSettings
    from dinosr.evaluate.runner import load_inputs, open_source, resolve_inputs, run_evaluation
    from dinosr.evaluate.summary import format_summary, heldout_lines

    if args.corpus is None and (args.manifest is None or args.alignments is None):
        log.error("give --corpus DIR, or --manifest and --alignments")
        return 2
    inputs = resolve_inputs(
        corpus=args.corpus,
        split=args.split,
        manifest=args.manifest,
        alignments=args.alignments,
        speakers=args.speakers,
        train_corpus=args.train_corpus,
        train_split=args.train_split,
        train_manifest=args.train_manifest,
        train_alignments=args.train_alignments,
        train_speakers=args.train_speakers,
        voices=args.voices,
    )
    settings = EvalSettings(
        layers=args.layers,
        unit_layers=args.unit_layers,
        feature_kind=args.kind,
        unit_source=args.source,
        abx=not args.no_abx,
        abx_max_seconds=args.abx_max_seconds,
        probe=not args.no_probe,
        probe_epochs=args.probe_epochs,
        train_max_seconds=args.train_max_seconds,
        baselines=not args.no_baselines,
        baseline_units=args.baseline_units,
        kmeans_layer=args.kmeans_layer,
        seed=args.seed,
    )
    path = Path(args.model)
    try:
        source, model_path, found_log = open_source(
            path,
            codebook_size=args.codebook_size,
            feature_kind=args.kind,
            unit_source=args.source,
            batch_seconds=settings.batch_seconds,
        )
    except FileNotFoundError as err:
        log.error("%s", err)
        return 2
    train_log = args.train_log or found_log
    extra = {"corpus": str(args.corpus or inputs.eval.manifest), "model_path": str(model_path)}
    corpus, train, heldout = load_inputs(
        inputs, settings, max_seconds=args.max_seconds, skip_bad_files=args.skip_bad_files
    )
    metrics = run_evaluation(
        source,
        corpus,
        train,
        args.out,
        settings=settings,
        train_log=train_log,
        title=f"DinoSR evaluation: {path.name}",
        extra=extra,
        heldout=heldout,
    )
    for line in heldout_lines(heldout):
        print(line)
    print(format_summary(metrics["summary"]))
    print(f"\nreport:  {Path(metrics['report']).resolve()}\nmetrics: {(args.out / 'metrics.json').resolve()}")
    return 0
