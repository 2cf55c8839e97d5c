"""`dinosr pretrain CONFIG [--set section.key=value ...]`: one command for 1 process, torchrun and srun.

Restarting the same command continues from the newest checkpoint in ``run.workdir``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dinosr.config import Config

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="DinoSR self-supervised pretraining (resumes from run.workdir)",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("config", help="TOML config file, or a packaged preset name: base, tiny")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable), e.g. --set optim.lr=3e-4 --set data.manifest=train.tsv",
    )
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
    from dinosr.train.trainer import TrainingDiverged

    cfg = load_config(resolve_config_path(args.config), args.overrides)  # ConfigError: dinosr.cli reports it
    try:
        pretrain(cfg)
        return 0
    except TrainingDiverged as err:
        log.error("%s", err)
        return 1


def pretrain(cfg: Config) -> int:
    """Run (or resume) pretraining with ``cfg`` in this process; returns the completed step count.

    Works unchanged as one process, under torchrun and under srun: the launcher's variables decide the
    rank, the device and whether a process group is created.
    """
    import torch
    from tqdm.contrib.logging import logging_redirect_tqdm

    from dinosr.train import distributed as dist
    from dinosr.train.lock import RunLock
    from dinosr.train.trainer import Trainer

    env = dist.detect_environment()  # (the other ranks' log level is set by dinosr.cli, the one place)
    if cfg.run.num_threads > 0:
        # Process-wide, so it is set here (an entry point) and not inside the library's Trainer.
        torch.set_num_threads(cfg.run.num_threads)
    device = dist.select_device(env, cfg.run.device)
    dist.init_distributed(env, device, backend=cfg.run.dist_backend)
    trainer = None
    # One run per work directory, taken by rank 0 before anything is read or written (a second run
    # fails at once with LockError naming the holder; torchrun then stops the other ranks).
    lock = RunLock(cfg.run.workdir) if env.rank == 0 else None
    try:
        if lock is not None:
            lock.acquire()
        trainer = Trainer(cfg, device=device)
        with logging_redirect_tqdm():  # log lines above the progress bar, not through it
            steps = trainer.fit()
        log.info("done: %d steps; checkpoints in %s", steps, trainer.checkpoint_dir)
        return steps
    finally:
        if trainer is not None:
            trainer.close()
        dist.shutdown()
        if lock is not None:
            lock.release()
