"""`dinosr demo`: corpus -> tiny pretraining with the CPU recipe -> evaluation on a held-out set -> report.

The held-out set is the corpus's ``valid.tsv``: for the generated demo corpus a whole voice (all its
speakers) that training never heard; the printed table says which, and warns when an evaluation
speaker is only a pseudo-speaker of a training voice (corpus ``voices.tsv`` / ``corpus.json``).

Everything lives under one work directory (default ``./dinosr-demo``)::

    WORKDIR/corpus/      the generated ~1 h corpus (absent when the bundled corpus is used)
    WORKDIR/train/       the training run: checkpoints/, metrics.jsonl, config.json
    WORKDIR/eval/        metrics.json, counts.npz, report.html, figures/*.png

Running the command again continues where it stopped: corpus synthesis reuses finished utterances
(and skips synthesis once ``corpus.json`` exists), the trainer resumes from its newest checkpoint (and
returns at once when the recipe's ``run.max_steps`` are done), and the evaluation is recomputed.

The recipe is the packaged ``tiny`` preset (``dinosr/configs/tiny.toml``), read at run time, with only
the data manifest, the work directory and the wall-clock guard (``run.max_minutes``) overridden.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from dinosr.evaluate.evaluate import EvalSettings

log = logging.getLogger(__name__)

DEFAULT_WORKDIR = "dinosr-demo"
DEFAULT_TRAIN_MINUTES = 13.0  # guard when the recipe sets none: 20 min total minus corpus and evaluation
DEFAULT_EVAL_SECONDS = 600.0  # held-out audio evaluated (speaker-balanced subset): ~30k frames for PNMI


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="corpus -> tiny pretraining (CPU recipe) -> evaluation vs MFCC k-means -> report (resumable)",
        description=(
            "Generate (or take the bundled) phone-aligned corpus, pretrain the tiny preset with the "
            "packaged CPU recipe, evaluate on held-out speakers, print a summary table and the report "
            "path. Rerun to resume."
        ),
    )
    demo.add_argument(
        "--workdir", type=Path, default=Path(DEFAULT_WORKDIR), help="work directory (./dinosr-demo)"
    )
    demo.add_argument(
        "--minutes", type=float, help="training wall-clock guard (default: the recipe's, else 13)"
    )
    demo.add_argument("--corpus", type=Path, help="use this corpus directory instead of generating one")
    demo.add_argument(
        "--bundled", action="store_true", help="use the 15-minute corpus bundled in the package"
    )
    demo.add_argument("--eval-seconds", type=float, help="cap the evaluation audio (quick checks)")
    demo.add_argument("--jobs", type=int, default=2, help="corpus synthesis processes")
    demo.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a value of the tiny recipe, e.g. --set run.max_steps=50",
    )
    demo.set_defaults(func=run_demo_cli)


def run_demo_cli(args: argparse.Namespace) -> int:
    from dinosr.config import ConfigError

    try:
        run_demo(
            args.workdir,
            minutes=args.minutes,
            corpus=args.corpus,
            bundled=args.bundled,
            overrides=args.overrides,
            eval_seconds=args.eval_seconds,
            jobs=args.jobs,
        )
    except (ConfigError, FileNotFoundError) as err:
        log.error("%s", err)
        return 2
    return 0


def demo_eval_settings(max_seconds: float | None = None) -> EvalSettings:
    """Evaluation settings sized for the demo's ~3 minute budget on 2 CPU cores."""
    return EvalSettings(
        abx_max_seconds=min(240.0, max_seconds) if max_seconds else 240.0,
        train_max_seconds=min(360.0, max_seconds) if max_seconds else 360.0,
        probe_epochs=5,
        kmeans_n_init=1,
        kmeans_max_iter=20,
        batch_seconds=60.0,
    )


def corpus_complete(root: Path) -> bool:
    """A finished corpus: manifests, alignments and corpus.json written, no unfinished parts."""
    needed = ("train.tsv", "valid.tsv", "alignments.tsv", "corpus.json")
    return all((root / n).is_file() for n in needed) and not (root / ".parts").exists()


def prepare_corpus(
    workdir: Path, *, corpus: str | Path | None = None, bundled: bool = False, jobs: int = 2
) -> tuple[Path, str]:
    """The corpus directory to use and how it was obtained ("given", "bundled", "generated", "reused").

    Without ``corpus`` or ``bundled``: generate the ~1 h demo corpus under ``workdir/corpus`` when the
    Festival voices are installed, resuming an interrupted synthesis, else fall back to the bundled one.
    """
    from dinosr.data.corpus import bundled_corpus

    if corpus is not None:
        root = Path(corpus)
        if not corpus_complete(root) and not (root / "valid.tsv").is_file():
            raise FileNotFoundError(
                f"{root} is not a corpus directory (needs train.tsv, valid.tsv, alignments.tsv)"
            )
        return root, "given"
    if bundled:
        return Path(bundled_corpus()), "bundled"
    root = workdir / "corpus"
    if corpus_complete(root):
        return root, "reused"
    from dinosr.data.corpus.synth import available_voices

    voices = available_voices()
    if not voices:
        log.warning(
            "no speech synthesizer voices installed (apt-get install festival festvox-kallpc16k "
            "festvox-kdlpc16k festvox-us-slt-hts): using the 15-minute bundled corpus"
        )
        return Path(bundled_corpus()), "bundled"
    from dinosr.data.corpus.cli import synthesize_demo_corpus

    log.info("generating the demo corpus with voices %s into %s (resumable)", ", ".join(voices), root)
    try:
        code = synthesize_demo_corpus(root, jobs=jobs)
    except Exception as err:  # synthesis is best effort: the demo must still run
        log.warning("corpus synthesis failed (%s: %s): using the bundled corpus", type(err).__name__, err)
        return Path(bundled_corpus()), "bundled"
    if code != 0 or not corpus_complete(root):
        log.warning("corpus synthesis did not finish (exit %s): using the bundled corpus", code)
        return Path(bundled_corpus()), "bundled"
    return root, "generated"


def demo_config(corpus_dir: Path, workdir: Path, *, minutes: float | None, overrides: list[str]):
    """The packaged tiny recipe with the demo's manifest, run directory and time guard."""
    from dinosr.configs import load_preset

    base = load_preset("tiny")
    guard = minutes if minutes is not None else (base.run.max_minutes or DEFAULT_TRAIN_MINUTES)
    sets = [
        f"data.manifest={(corpus_dir / 'train.tsv').resolve()}",
        f"run.workdir={(workdir / 'train').resolve()}",
        f"run.max_minutes={guard}",
        *overrides,
    ]
    return load_preset("tiny", sets)


def run_demo(
    workdir: str | Path = DEFAULT_WORKDIR,
    *,
    minutes: float | None = None,
    corpus: str | Path | None = None,
    bundled: bool = False,
    overrides: list[str] | None = None,
    eval_seconds: float | None = None,
    jobs: int = 2,
) -> dict[str, Any]:
    """The whole demo; returns the evaluation metrics (with ``report``) and prints the summary table."""
    from dinosr.evaluate.runner import load_inputs, open_source, resolve_inputs, run_evaluation
    from dinosr.evaluate.summary import format_summary, heldout_lines
    from dinosr.train.cli import pretrain

    started = time.monotonic()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}

    print(f"[1/3] corpus (work directory {workdir.resolve()})", flush=True)
    corpus_dir, how = prepare_corpus(workdir, corpus=corpus, bundled=bundled, jobs=jobs)
    times["corpus"] = time.monotonic() - started
    print(f"      {how}: {corpus_dir}", flush=True)

    t = time.monotonic()
    cfg = demo_config(corpus_dir, workdir, minutes=minutes, overrides=list(overrides or []))
    print(
        f"[2/3] pretraining the tiny model (packaged tiny.toml: {cfg.run.max_steps} steps, "
        f"guard {cfg.run.max_minutes:g} min; resumes from {cfg.run.workdir})",
        flush=True,
    )
    steps = pretrain(cfg)
    times["train"] = time.monotonic() - t
    if steps < cfg.run.max_steps:
        print(
            f"      stopped at step {steps} of {cfg.run.max_steps} by the time guard; "
            "run `dinosr demo` again to continue training",
            flush=True,
        )

    t = time.monotonic()
    print("[3/3] evaluating on the held-out set (valid.tsv)", flush=True)
    settings = demo_eval_settings(eval_seconds)
    source, ckpt, train_log = open_source(cfg.run.workdir, batch_seconds=settings.batch_seconds)
    settings.kmeans_layer = source.codebook_layers[0]
    inputs = resolve_inputs(corpus=corpus_dir, split="valid", train_split="train")
    eval_set, train_set, heldout = load_inputs(
        inputs, settings, max_seconds=eval_seconds or DEFAULT_EVAL_SECONDS
    )
    metrics = run_evaluation(
        source,
        eval_set,
        train_set,
        workdir / "eval",
        settings=settings,
        train_log=train_log,
        title=f"dinosr demo: tiny DinoSR, step {steps}",
        extra={"model_path": str(ckpt), "corpus": str(corpus_dir), "train_steps": steps},
        heldout=heldout,
    )
    times["evaluate"] = time.monotonic() - t
    total = time.monotonic() - started

    print()
    for line in heldout_lines(heldout):
        print(line)
    data = metrics["data"]
    print(
        f"Evaluated {data['num_utterances']} utterances, {data['seconds'] / 60:.1f} min "
        f"(MFCC k-means: {metrics['settings'].get('baseline_units') or source.codebook_size} units fit on "
        f"{data['train_seconds'] / 60:.1f} min of training speech)"
    )
    print(format_summary(metrics["summary"]))
    print()
    print(f"report:  {Path(metrics['report']).resolve()}")
    print(f"metrics: {(workdir / 'eval' / 'metrics.json').resolve()}")
    print(
        "time: "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items())
        + f"; total {total / 60:.1f} min"
    )
    metrics["demo_times"] = times
    return metrics
