"""`dinosr finetune CONFIG [--set section.key=value ...] [--init PATH | --from-scratch]`: CTC fine-tuning.

One command for 1 process, torchrun and srun, like ``dinosr pretrain``; restarting it continues exactly from
the newest checkpoint in ``run.workdir``. CONFIG is a TOML file or a packaged preset (base_10m, base_1h,
base_10h, base_100h, cpu_small, cpu_quick). At the end ``RUN/model`` holds the best checkpoint as a fine-tuned
model directory (``dinosr transcribe RUN/model AUDIO``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dinosr.train.finetune_config import FinetuneConfig

VALID_REFERENCES = "valid_ref.tsv"  # RUN/valid_ref.tsv: utt<TAB>words of the valid split


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from dinosr.config import add_set_option
    from dinosr.train.finetune_config import PRESETS

    parser = subparsers.add_parser(
        "finetune",
        help="CTC fine-tuning for speech recognition (resumes from run.workdir)",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("config", help=f"TOML config file, or a packaged preset: {', '.join(PRESETS)}")
    add_set_option(parser, "--set optim.lr=1e-4 --set run.workdir=runs/ft")
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--init",
        metavar="PATH",
        help="pretrained model: our run or pretrained directory, official dinosr.ckpt, spidr .pt "
        "(= --set finetune.init=PATH)",
    )
    start.add_argument(
        "--from-scratch",
        action="store_true",
        help="random-init model of the config's [model] section (a baseline)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dinosr.train.finetune_config import load_finetune_config
    from dinosr.train.launch import exit_status

    overrides = list(args.overrides)
    if args.init:
        overrides += [f"finetune.init={_toml_string(args.init)}", "finetune.from_scratch=false"]
    if args.from_scratch:
        overrides += ["finetune.from_scratch=true", 'finetune.init=""']
    cfg = load_finetune_config(args.config, overrides)  # ConfigError: dinosr.cli reports it
    return exit_status(finetune, cfg)


def _toml_string(text: str) -> str:
    """``text`` as a TOML basic string (a path may hold backslashes or quotes)."""
    import json

    return json.dumps(str(text))


def finetune(cfg: FinetuneConfig) -> int:
    """Run (or resume) fine-tuning with ``cfg`` in this process; returns the completed step count."""
    from dinosr.train.ctc_task import CTCTask, export_model, load_init
    from dinosr.train.launch import run_training, start_process
    from dinosr.train.trainer import Trainer

    env, device = start_process(cfg)
    cfg, init_model = load_init(cfg)  # before the process group: a bad --init fails at once

    def make_trainer() -> Trainer:
        nonlocal init_model
        task = CTCTask(cfg, init_model=init_model)
        init_model = None  # the task has copied its weights: free the pretraining model
        return Trainer(cfg, task=task, device=device)

    def after_fit(trainer: Trainer) -> None:
        if env.rank == 0:
            # For `dinosr wer RUN/valid_ref.tsv HYP` after `dinosr transcribe RUN/model VALID.tsv`.
            trainer.task.write_valid_references(Path(cfg.run.workdir) / VALID_REFERENCES)
            if cfg.finetune.export:
                export_model(cfg.run.workdir)

    return run_training(cfg, env, device, make_trainer, after_fit)
