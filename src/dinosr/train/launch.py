"""One training process from start to teardown, shared by ``dinosr pretrain`` and ``dinosr finetune``.

The same steps for 1 process, torchrun and srun: the launcher's variables decide the rank, the device and
whether a process group is created; rank 0 holds the work directory's run lock for the whole run; the
trainer, the process group and the lock are released in that order whatever happens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from dinosr.train.distributed import DistEnv
    from dinosr.train.trainer import Trainer

log = logging.getLogger(__name__)


def start_process(cfg: Any) -> tuple[DistEnv, torch.device]:
    """The launcher's environment and this rank's device; sets the thread count of ``run.num_threads``.

    ``cfg`` is a pretraining or fine-tuning config (only its ``[run]`` section is read).
    """
    import torch

    from dinosr.train import distributed as dist

    env = dist.detect_environment()  # (the other ranks' log level is set by dinosr.cli, the one place)
    if cfg.run.num_threads > 0:
        # Process-wide, so it is set here (an entry point) and not inside the library's Trainer.
        torch.set_num_threads(cfg.run.num_threads)
    return env, dist.select_device(env, cfg.run.device)


def run_training(
    cfg: Any,
    env: DistEnv,
    device: torch.device,
    make_trainer: Callable[[], Trainer],
    after_fit: Callable[[Trainer], None] | None = None,
) -> int:
    """Create the process group, take the run lock (rank 0), fit ``make_trainer()``; returns the step count.

    ``make_trainer`` runs once the lock is held (nothing of the work directory is read before);
    ``after_fit(trainer)`` runs on every rank after a completed fit, before the teardown.
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    from dinosr.train import distributed as dist
    from dinosr.train.lock import RunLock

    dist.init_distributed(env, device, backend=cfg.run.dist_backend)
    trainer = None
    # One run per work directory, taken by rank 0 before anything is read or written (a second run
    # fails at once with LockError naming the holder; torchrun then stops the other ranks).
    lock = RunLock(cfg.run.workdir) if env.rank == 0 else None
    try:
        if lock is not None:
            lock.acquire()
        trainer = make_trainer()
        with logging_redirect_tqdm():  # log lines above the progress bar, not through it
            steps = trainer.fit()
        if after_fit is not None:
            after_fit(trainer)
        log.info("done: %d steps; checkpoints in %s", steps, trainer.checkpoint_dir)
        if trainer.best is not None:
            best = trainer.best
            log.info("best valid %s %.2f at step %d", best["metric"], best["value"], best["step"])
        return steps
    finally:
        if trainer is not None:
            trainer.close()
        dist.shutdown()
        if lock is not None:
            lock.release()


def exit_status(train: Callable[[Any], int], cfg: Any) -> int:
    """``train(cfg)`` as a command's exit status: 0 once it completed.

    A diverged run raises ``TrainingDiverged``, a DinosrError: it is not caught here but at the one error
    boundary, :func:`dinosr.cli.main`, which prints it as one ``dinosr <command>: error:`` line, exit
    status 1.
    """
    train(cfg)
    return 0
