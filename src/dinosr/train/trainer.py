"""The training loop: `Trainer` owns the optimizer, scaler, data position, RNG state and checkpoints.

What a step *means* comes from a `Task` (dinosr/train/task.py; pretraining: pretrain_task.py, the default).
One optimizer step (``train_step``), in order:

1. every rank agrees which of its ``grad_accum`` micro-batches are non-empty (one collective), so
   ranks run the same number of forwards/backwards even when all files of a batch were bad;
2. per micro-batch: ``task.forward`` under autocast returns the *summed* loss and the micro-batch's
   statistics; backward of ``loss / task.loss_norm`` (a fixed constant; DDP syncs on the last one);
3. the statistics (a `StepStats`: named sums flattened into one all-reduce) are summed over micro-batches
   and ranks; they give the global normaliser (pretraining: masked frames, CTC: utterances);
4. gradients are rescaled by ``world_size * loss_norm / normaliser``: after DDP's averaging this is
   exactly the gradient of the global mean (docs/DESIGN.md "Loss reduction"), computed without knowing
   the global count before the backward passes;
5. unscale (fp16), clip, NaN/inf guard, AdamW step; then ``task.post_step`` once with the statistics
   of the whole effective batch, and the optimizer groups / DDP wrapper follow ``task.param_groups``.

Every ``run.validate_every`` updates ``task.validate`` runs (every rank) and ``checkpoints/best.pt`` is
kept for the task's ``best_metric``.

Why one module of ~570 lines: every attribute of `Trainer` is part of the state that ``state_dict`` /
``load_state_dict`` must restore bit-exactly on resume; keeping the loop and its state in one class keeps
that invariant checkable in one place. What does not touch that state already lives beside it
(checkpoint.py, optim.py, schedule.py, distributed.py, metrics_log.py, the tasks; the launch in launch.py).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dinosr.config import Config, save_config
from dinosr.errors import DinosrError
from dinosr.train import distributed as dist
from dinosr.train.checkpoint import (
    BEST_NAME,
    config_diff,
    load_newest_complete,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from dinosr.train.metrics_log import MetricsLogger, ProgressBar
from dinosr.train.optim import (
    group_layout,
    optimizer_for_groups,
    set_lr,
    sync_groups,
    trainable_parameters,
)
from dinosr.train.schedule import lr_at
from dinosr.train.task import StepStats, Task

log = logging.getLogger(__name__)

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Checkpoint entries of the loop; a task's checkpoint_extras may not reuse them.
_LOOP_KEYS = frozenset(
    {
        *("step", "model", "optimizer", "scheduler", "scaler", "data", "rng"),
        *("bad_steps", "world_size", "config", "best"),
    }
)


class TrainingDiverged(DinosrError, RuntimeError):
    """Too many optimizer steps in a row had a non-finite loss or gradient; the message names the workdir.

    A DinosrError so `dinosr pretrain` / `dinosr finetune` print it as one line, not a traceback; exit
    status 1 (not 2): the input was readable, the settings made the run fail.
    """

    exit_status = 1


def seed_process(seed: int) -> None:
    """Seed the torch, NumPy and Python global RNGs of this process."""
    import random

    import numpy as np

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (third-party code may use the global RNG)
    random.seed(seed)


class Trainer:
    """Training for one process of a (possibly distributed) job.

    Args:
        config: the resolved configuration (``config.run`` and ``config.optim`` drive the loop).
        task: what to train (a `Task`); DinoSR pretraining (`PretrainTask(config)`) when None.
        model: the module to train; ``task.build_model()`` (after seeding) when None.
        loader: anything with ``__iter__`` over batches, ``__len__``, ``set_epoch``, ``epoch``,
            ``state_dict``/``load_state_dict`` (a ``TrainLoader``); ``task.build_loader`` when None.
        device: defaults to ``config.run.device`` resolved for this rank.

    The process group (if any) must already exist (``dist.init_distributed``); the trainer reads
    rank and world size from it. Rank 0 alone logs and writes checkpoints.
    """

    def __init__(
        self,
        config: Config,
        *,
        task: Task | None = None,
        model: nn.Module | None = None,
        loader: Any = None,
        device: torch.device | None = None,
    ) -> None:
        self.cfg = config
        run = config.run
        self.rank, self.world_size = dist.rank(), dist.world_size()
        self.is_main = self.rank == 0
        self.device = device or dist.select_device(dist.DistEnv(local_rank=self._local_rank()), run.device)
        if task is None:
            from dinosr.train.pretrain_task import PretrainTask

            task = PretrainTask(config)
        self.task = task
        if model is None:
            seed_process(run.seed)  # identical initial weights on every rank
            model = task.build_model()
        self.model = model.to(self.device)
        self.loader = (
            loader if loader is not None else task.build_loader(rank=self.rank, world_size=self.world_size)
        )
        # The fused AdamW kernel (CUDA, and CPU since torch 2.4): one pass over all parameters; on CPU
        # 5x faster than the per-tensor loop, 2-3 % of a base step (docs/performance.md).
        self.fused = self.device.type in ("cuda", "cpu")
        self.step = 0  # completed optimizer updates
        self.optimizer = optimizer_for_groups(self._trainable_groups(), config.optim, fused=self.fused)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=run.precision == "fp16")
        self.bad_steps = 0  # consecutive non-finite steps
        self.best: dict[str, Any] | None = None  # {"metric", "mode", "value", "step"} of best.pt
        self.workdir = Path(run.workdir)
        self.checkpoint_dir = self.workdir / "checkpoints"
        self.metrics = MetricsLogger(self.workdir, tensorboard=run.tensorboard, enabled=self.is_main)
        self._reset_window()
        self._batches: Iterator | None = None
        self._saved_step = -1
        self._validated_step = -1
        self.progress = ProgressBar(enabled=self.is_main and run.progress)
        seed_process(run.seed + self.rank)  # masks and dropout differ per rank, reproducibly
        self.ddp_model = self._wrap()

    @staticmethod
    def _local_rank() -> int:
        return dist.detect_environment().local_rank

    # ----------------------------------------------------------------------------- the recipe
    def fit(self, *, until_step: int | None = None) -> int:
        """Train to ``run.max_steps`` (or stop early at ``until_step``), resuming from the newest checkpoint.

        Returns:
            The number of completed optimizer updates.
        """
        run = self.cfg.run
        if not self.resume():
            self.task.prepare(self.model, self.loader)
        if self.is_main:
            self.workdir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.workdir / "config.json")
            message = self.task.describe(self.world_size)
            if message:
                log.info("%s", message)
        stop_at = min(run.max_steps, until_step or run.max_steps)
        started = time.monotonic()
        self.model.train()
        self.progress.open(total=run.max_steps, initial=self.step)
        while self.step < stop_at:
            # The micro-batches of one update; the data position advances even if the step is skipped.
            batches = [self._next_batch() for _ in range(run.grad_accum)]
            result = self.train_step(batches)
            self._add_to_window(result)
            if not result["updated"]:
                self._on_skipped(result)
                continue
            self.bad_steps = 0
            self.progress.update()
            if self.step % run.log_every == 0:
                self.log()
            if run.validate_every and self.step % run.validate_every == 0:
                self.validate()
            if self.step % run.save_every == 0:
                self.save()
            if run.max_minutes > 0 and dist.any_rank(
                time.monotonic() - started > 60 * run.max_minutes, self.device
            ):
                log.info("max_minutes=%g reached at step %d", run.max_minutes, self.step)
                break
        if self._window_steps:
            self.log()  # the last, partial window
        if run.validate_every and self._validated_step != self.step and self.step > 0:
            self.validate()
        if self._saved_step != self.step:
            self.save()
        return self.step

    def train_step(
        self, batches: Sequence[Any], masks: Sequence[Tensor | None] | None = None
    ) -> dict[str, Any]:
        """One optimizer update from this rank's micro-batches (a collective under DDP).

        Args:
            batches: ``grad_accum`` batches (``lengths`` (B,), ``num_skipped``, ``.to(device)``); B may be 0.
            masks: optional per-micro-batch override passed to ``task.forward(mask=...)`` (tests).

        Returns:
            ``{"updated": bool, "reason": None | "empty" | "no_targets" | "nonfinite" | "overflow",
            "grad_norm", "stats": the reduced StepStats, **stats.result()}``; ``{"updated": False,
            "reason": "empty", "bad_files"}`` when every micro-batch was empty on some rank.
            Gradients stay on the parameters until the next call (tests inspect them).
        """
        masks = list(masks) if masks is not None else [None] * len(batches)
        set_lr(self.optimizer, self.lr)
        self.optimizer.zero_grad(set_to_none=True)
        present = torch.tensor([float(len(b.lengths) > 0) for b in batches], device=self.device)
        run = [i for i, ok in enumerate(dist.all_reduce_min(present).tolist()) if ok > 0]
        bad_files = sum(int(getattr(b, "num_skipped", 0)) for b in batches)
        if not run:
            return {"updated": False, "reason": "empty", "bad_files": bad_files}
        stats: StepStats | None = None
        for i in run:
            part = self._forward_backward(batches[i], masks[i], sync=i == run[-1])
            stats = part if stats is None else stats + part
        stats.bad_files = float(bad_files)
        stats = stats.all_reduce(self.device)
        normaliser = stats.normaliser()
        grad_norm = self._finish_gradients(normaliser)
        reason = self._apply_update(stats, normaliser, grad_norm)
        result = {"updated": reason is None, "reason": reason, "grad_norm": grad_norm, **stats.result()}
        result["stats"] = stats
        if reason is None:
            self.step += 1
            self.task.post_step(self.model, self.step, stats)
            self._follow_trainable_set()
        return result

    def validate(self) -> dict[str, float]:
        """Run ``task.validate`` (every rank), log it and keep ``checkpoints/best.pt`` on improvement."""
        devices = [self.device] if self.device.type == "cuda" else []
        self.model.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=devices):  # training RNG untouched
                values = {k: float(v) for k, v in (self.task.validate(self.model) or {}).items()}
        finally:
            self.model.train()
        self._validated_step = self.step
        if not values:
            return values
        row = {f"valid_{k}": v for k, v in values.items()}
        improved = False
        if self.task.best_metric is not None:
            name, mode = self.task.best_metric
            if name not in values:
                raise KeyError(f"task.validate() returned {sorted(values)}, not its best_metric {name!r}")
            value = values[name]
            best = self.best["value"] if self.best is not None else None
            better = best is None or (value < best if mode == "min" else value > best)
            # Rank 0 decides (saving is a collective); every rank returned the same values anyway.
            improved = dist.any_rank(self.is_main and math.isfinite(value) and better, self.device)
            if improved:
                self.best = {"metric": name, "mode": mode, "value": value, "step": self.step}
            if self.best is not None:
                row[f"best_valid_{name}"] = self.best["value"]
        if self.is_main:
            self.metrics.log(self.step, row)
            log.info("step %d valid %s", self.step, " ".join(f"{k} {v:.4g}" for k, v in values.items()))
        if improved:
            self.save_best()
        return values

    # ----------------------------------------------------------------------------- step internals
    @property
    def lr(self) -> float:
        return lr_at(self.step, self.cfg.optim, self.cfg.run.max_steps)

    def _autocast(self):
        dtype = _AUTOCAST_DTYPES.get(self.cfg.run.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def _forward_backward(self, batch: Any, mask: Tensor | None, *, sync: bool) -> StepStats:
        """Forward + backward of one micro-batch; returns its (local) statistics."""
        batch = batch.to(self.device, non_blocking=True)
        no_sync = (
            self.ddp_model.no_sync
            if (not sync and self.ddp_model is not self.model)
            else contextlib.nullcontext
        )
        with no_sync():
            with self._autocast():
                loss, stats = self.task.forward(self.ddp_model, batch, step=self.step, mask=mask)
            self.scaler.scale(loss / self.task.loss_norm).backward()
        return stats

    def _finish_gradients(self, normaliser: float) -> float:
        """Unscale (fp16), turn the summed loss's gradients into the global mean's, clip; returns the norm."""
        self.scaler.unscale_(self.optimizer)
        params = trainable_parameters(self.optimizer)
        grads = [p.grad for p in params if p.grad is not None]
        if grads and normaliser > 0:
            torch._foreach_mul_(grads, self.world_size * self.task.loss_norm / normaliser)
        clip = self.cfg.optim.clip_norm if self.cfg.optim.clip_norm > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(params, clip) if grads else torch.zeros(())
        return float(norm)

    def _apply_update(self, stats: StepStats, normaliser: float, grad_norm: float) -> str | None:
        """Optimizer step unless there is nothing to average over or the loss/gradients are not finite;
        returns why the update was skipped, or None."""
        fp16 = self.scaler.is_enabled()
        reason = None
        if normaliser <= 0:
            reason = "no_targets"  # e.g. no masked frame in the whole batch: nothing to learn, not divergence
        # fp16: inf gradients with a finite loss are the GradScaler's business (overflow, not divergence).
        elif not math.isfinite(stats.total_loss()) or (not fp16 and not math.isfinite(grad_norm)):
            reason = "nonfinite"
        if reason is not None:
            self.scaler.update()  # resets the scaler's per-step state (and backs off on inf grads)
            return reason
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if fp16 and self.scaler.get_scale() < scale:
            return "overflow"
        return None

    def _trainable_groups(self) -> list[dict[str, Any]]:
        """``task.param_groups`` at the current step, with ``requires_grad`` set to match."""
        groups = self.task.param_groups(self.model, self.step)
        trainable: set[int] = set()
        for group in groups:
            for p in group["params"]:
                if id(p) in trainable:
                    raise ValueError(f"task.param_groups: a parameter is in two groups ({group['name']!r})")
                trainable.add(id(p))
        names = [g["name"] for g in groups]
        if len(set(names)) != len(names):
            raise ValueError(f"task.param_groups: duplicate group names {names}")
        for p in self.model.parameters():
            p.requires_grad_(id(p) in trainable)
        return groups

    def _follow_trainable_set(self) -> None:
        """After an update: when the task's trainable set changed, rebuild the groups and re-wrap DDP."""
        groups = self._trainable_groups()
        if group_layout(groups) == group_layout(self.optimizer.param_groups):
            return
        before = [g["name"] for g in self.optimizer.param_groups]
        sync_groups(self.optimizer, groups)
        self._rewrap()
        if self.is_main:
            log.info(
                "step %d: trained parameter groups %s -> %s",
                self.step,
                before,
                [g["name"] for g in self.optimizer.param_groups],
            )

    def _rewrap(self) -> None:
        """Replace the DDP wrapper, freeing the old one first.

        A DDP wrapper sits in reference cycles (its autograd hooks), so once replaced it would linger, holding
        its reducer and buckets, until some later garbage collection at an arbitrary point of training (or
        after the process group is gone). Collecting it here, at a quiet point and with the process group
        alive, makes the release deterministic.
        """
        if dist.is_distributed():
            self.ddp_model = self.model
            gc.collect()
        self.ddp_model = self._wrap()

    def _wrap(self) -> nn.Module:
        """DDP over the currently trainable parameters (the bare model for one process)."""
        if not dist.is_distributed():
            return self.model
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        # State the task updates in post_step identically on every rank from all-reduced statistics
        # (codebooks, the teacher): nothing to broadcast before each forward.
        no_buffer_sync = (
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
            else {"broadcast_buffers": False}
        )
        return DistributedDataParallel(
            self.model,
            device_ids=[self.device] if self.device.type == "cuda" else None,
            # Parameters that leave the trainable set are handled by re-wrapping (_follow_trainable_set).
            find_unused_parameters=self.task.find_unused_parameters(self.model),
            **no_buffer_sync,
        )

    def _next_batch(self) -> Any:
        """The next batch, rolling over epochs; the global torch RNG is shielded from the DataLoader
        (iterator creation draws a seed), so masks/dropout depend only on the step, not on restarts."""
        for _ in range(2):
            with torch.random.fork_rng(devices=[]):
                if self._batches is None:
                    self._batches = iter(self.loader)
                try:
                    return next(self._batches)
                except StopIteration:
                    self._batches = None
                    self.loader.set_epoch(self.loader.epoch + 1)
        raise RuntimeError(
            "the training loader yields no batches (too little audio for max_tokens/world size?)"
        )

    def _on_skipped(self, result: dict[str, Any]) -> None:
        reason = result.get("reason")
        if reason == "nonfinite":
            self.bad_steps += 1
            log.warning(
                "step %d: non-finite loss/gradient, update skipped (%d in a row)",
                self.step + 1,
                self.bad_steps,
            )
            if self.bad_steps >= self.cfg.run.max_bad_steps:
                raise TrainingDiverged(
                    f"{self.workdir}: training diverged: {self.bad_steps} non-finite steps in a row at "
                    f"step {self.step}; lower optim.lr, enable optim.clip_norm or use precision=fp32, then "
                    "rerun (it resumes from the newest checkpoint there)"
                )
        elif reason == "overflow":
            log.debug(
                "step %d: fp16 gradient overflow, loss scale now %g", self.step + 1, self.scaler.get_scale()
            )
        elif reason == "no_targets" and self.is_main:
            log.warning(
                "step %d: nothing to average the loss over in the whole batch (no masked frame?); "
                "update skipped",
                self.step + 1,
            )
        elif reason == "empty" and self.is_main:
            log.warning(
                "step %d: a rank had an empty batch (unreadable files); micro-batch skipped", self.step + 1
            )

    # ----------------------------------------------------------------------------- run state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (a collective: every rank contributes its RNG state).

        Only tensors and plain containers, so ``torch.load(..., weights_only=True)`` reads it.
        """
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            # The LR is a pure function of the step (schedule.py); kept for readers of the file.
            "scheduler": {"name": self.cfg.optim.scheduler, "step": self.step, "lr": self.lr},
            "scaler": self.scaler.state_dict(),
            "data": dict(self.loader.state_dict()),
            "rng": dist.all_gather_object(rng_state()),
            "bad_steps": self.bad_steps,
            "world_size": self.world_size,
            "config": self.cfg.to_dict(),
        }
        if self.best is not None:
            state["best"] = dict(self.best)
        extras = self.task.checkpoint_extras()
        clash = sorted(set(extras) & _LOOP_KEYS)
        if clash:
            raise ValueError(f"task.checkpoint_extras() reuses the loop's checkpoint keys {clash}")
        state.update(extras)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (after building the trainer from the same config)."""
        self.step = int(state["step"])
        self.model.load_state_dict(state["model"])
        # requires_grad is not part of a state_dict, and the group layout is that of the saved step
        # (pretraining: without the extractor once frozen).
        self.optimizer = optimizer_for_groups(self._trainable_groups(), self.cfg.optim, fused=self.fused)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.loader.load_state_dict(state["data"])
        self._batches = None
        rngs = state["rng"]
        if len(rngs) == self.world_size:
            set_rng_state(rngs[self.rank])
        else:
            log.warning(
                "checkpoint from %d ranks, now %d: reseeding instead of restoring RNG",
                len(rngs),
                self.world_size,
            )
            seed_process(self.cfg.run.seed + self.rank + 1000 * self.step)
        self.bad_steps = int(state.get("bad_steps", 0))
        self.best = dict(state["best"]) if state.get("best") else None
        self.task.load_checkpoint_extras(state)
        self._rewrap()

    def resume(self) -> bool:
        """Load the newest checkpoint of ``run.workdir`` if there is one; returns whether it did."""
        # Newest *complete* checkpoint (a damaged newer one is skipped loudly, never deleted). On the CPU:
        # the RNG states must be CPU tensors, and load_state_dict moves the rest where it belongs.
        found = load_newest_complete(self.checkpoint_dir, map_location="cpu", tidy=self.is_main)
        # Steps logged after that checkpoint by a killed run are trained and logged again: drop their rows.
        self.metrics.truncate_after(int(found[1]["step"]) if found else 0)
        if found is None:
            return False
        path, state = found
        changed = config_diff(state.get("config", {}), self.cfg.to_dict())
        if changed and self.is_main:
            log.warning("resuming with a different config: %s", ", ".join(changed))
        self.load_state_dict(state)
        self._saved_step = self.step
        if self.is_main:
            log.info("resumed from %s (step %d, epoch %s)", path, self.step, state["data"].get("epoch"))
        return True

    def save(self) -> Path | None:
        """Checkpoint the current step (every rank must call it; rank 0 writes)."""
        state = self.state_dict()
        self._saved_step = self.step
        path = None
        if self.is_main:
            path = save_checkpoint(state, self.checkpoint_dir, self.step, keep_last=self.cfg.run.keep_last)
        dist.barrier()  # nobody runs ahead (and possibly exits) before the file exists
        return path

    def save_best(self) -> Path | None:
        """Write the current state as ``checkpoints/best.pt`` (atomic; every rank must call it)."""
        from dinosr.fileio import atomic_write

        state = self.state_dict()
        path = self.checkpoint_dir / BEST_NAME
        if self.is_main:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            with atomic_write(path, fsync=True) as f:
                torch.save(state, f)
            best = self.best or {}
            log.info("step %d: new best %s %s -> %s", self.step, best.get("metric"), best.get("value"), path)
        dist.barrier()
        return path if self.is_main else None

    # ----------------------------------------------------------------------------- logging
    def _reset_window(self) -> None:
        self._window: StepStats | None = None  # summed for_log() statistics of the updated steps
        self._window_steps = 0
        self._window_skipped = 0
        self._window_grad_norm = 0.0
        self._window_started = time.perf_counter()

    def _add_to_window(self, result: dict[str, Any]) -> None:
        if not result.get("updated", False):
            self._window_skipped += 1
            return
        part = result["stats"].for_log()
        self._window = part if self._window is None else self._window + part
        self._window_steps += 1
        self._window_grad_norm += result["grad_norm"]

    def log(self) -> dict[str, Any]:
        """Write the metrics of the steps since the last call (rank 0) and reset the window."""
        seconds = max(time.perf_counter() - self._window_started, 1e-9)
        steps = max(self._window_steps, 1)
        metrics: dict[str, Any] = {}
        if self._window is not None:
            metrics.update(
                self.task.metrics(self.model, self._window, steps=steps, seconds=seconds, step=self.step)
            )
        metrics.update(
            grad_norm=self._window_grad_norm / steps,
            seconds_per_step=seconds / steps,
            skipped_steps=self._window_skipped,
            lr=self.lr,
            epoch=self.loader.epoch,
        )
        if self.scaler.is_enabled():
            metrics["loss_scale"] = self.scaler.get_scale()
        warnings = self.task.warnings(metrics)
        metrics["warnings"] = warnings
        self._reset_window()
        if not self.is_main:
            return metrics
        self.metrics.log(self.step, metrics)
        for warning in warnings:
            log.warning("step %d: %s", self.step, warning)
        if not self.progress.show(metrics):
            log.info("step %d loss %.4f lr %.2e", self.step, metrics.get("loss", math.nan), metrics["lr"])
        return metrics

    def close(self) -> None:
        """Close the progress bar and the metric sinks."""
        self.progress.close()
        self.metrics.close()
