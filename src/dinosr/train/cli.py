"""`dinosr pretrain CONFIG [--set section.key=value ...]`: one command for 1 process, torchrun and srun.

Restarting the same command continues from the newest checkpoint in ``run.workdir``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dinosr.config import Config


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from dinosr.config import add_set_option

    parser = subparsers.add_parser(
        "pretrain",
        help="DinoSR self-supervised pretraining (resumes from run.workdir)",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("config", help="TOML config file, or a packaged preset name: base, tiny")
    add_set_option(parser, "--set optim.lr=3e-4 --set data.manifest=train.tsv")
    parser.set_defaults(func=run)


def resolve_config_path(name: str) -> Path:
    """A config file path, or the packaged preset of that name (``tiny`` / ``base``)."""
    path = Path(name)
    if path.exists():
        return path
    from dinosr.configs import PRESETS, preset_path

    if name in PRESETS:
        return preset_path(name)
    return path  # load_config reports the missing file


def run(args: argparse.Namespace) -> int:
    from dinosr.config import load_config
    from dinosr.train.launch import exit_status

    cfg = load_config(resolve_config_path(args.config), args.overrides)  # ConfigError: dinosr.cli reports it
    return exit_status(pretrain, cfg)


def pretrain(cfg: Config) -> int:
    """Run (or resume) pretraining with ``cfg`` in this process; returns the completed step count.

    Works unchanged as one process, under torchrun and under srun (:mod:`dinosr.train.launch`).
    """
    from dinosr.train.launch import run_training, start_process
    from dinosr.train.trainer import Trainer

    env, device = start_process(cfg)
    return run_training(cfg, env, device, lambda: Trainer(cfg, device=device))
