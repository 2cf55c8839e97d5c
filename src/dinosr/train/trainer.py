"""The pretraining loop: `Trainer` owns the model, optimizer, scaler, data position and RNG state.

One optimizer step (``train_step``), in order:

1. every rank agrees which of its ``grad_accum`` micro-batches are non-empty (one collective), so
   ranks run the same number of forwards/backwards even when all files of a batch were bad;
2. per micro-batch: forward under autocast (codebooks, targets and CE stay fp32 inside the model),
   backward of the *summed* per-frame loss divided by a fixed constant (DDP syncs on the last one);
3. the codebook statistics, masked-frame count and loss sums are all-reduced over ranks;
4. gradients are rescaled by ``world_size * const / global_num_masked``: after DDP's averaging
   this is exactly the global per-frame mean of spec section 7 (docs/DESIGN.md "Loss reduction"),
   computed without knowing the global count before the backward passes;
5. unscale (fp16), clip, NaN/inf guard, AdamW step; then ``model.post_step`` once with the
   statistics of the whole effective batch (docs/DESIGN.md "Gradient accumulation").
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dinosr.config import Config, save_config
from dinosr.train import distributed as dist
from dinosr.train.checkpoint import (
    config_diff,
    load_newest_complete,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from dinosr.train.metrics_log import (
    MetricsLogger,
    ProgressBar,
    WindowMeter,
    collapse_warnings,
    effective_batch_message,
)
from dinosr.train.optim import (
    EXTRACTOR_GROUP,
    build_optimizer,
    drop_group,
    has_group,
    set_lr,
    trainable_parameters,
)
from dinosr.train.schedule import lr_at

log = logging.getLogger(__name__)

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingDiverged(RuntimeError):
    """Too many optimizer steps in a row had a non-finite loss or gradient."""


def seed_process(seed: int) -> None:
    """Seed the torch, NumPy and Python global RNGs of this process."""
    import random

    import numpy as np

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (third-party code may use the global RNG)
    random.seed(seed)


def build_loader(cfg: Config, *, rank: int, world_size: int):
    """The training loader for ``cfg.data`` (``manifest = ""``: the bundled corpus's train.tsv)."""
    from dinosr.data.loader import build_train_loader
    from dinosr.data.manifest import read_manifest

    if cfg.data.manifest:
        entries = read_manifest(cfg.data.manifest)
    else:
        from dinosr.data.corpus import bundled_corpus

        entries = read_manifest(Path(bundled_corpus()) / "train.tsv")
    return build_train_loader(cfg.data, entries, rank=rank, world_size=world_size, seed=cfg.run.seed)


class Trainer:
    """DinoSR pretraining for one process of a (possibly distributed) job.

    Args:
        config: the resolved configuration.
        model: a DinoSR; built from ``config.model`` / ``config.masking`` when None.
        loader: anything with ``__iter__`` over Batches, ``__len__``, ``set_epoch``, ``epoch``,
            ``state_dict``/``load_state_dict`` (a ``TrainLoader``); built from ``config.data`` when None.
        device: defaults to ``config.run.device`` resolved for this rank.

    The process group (if any) must already exist (``dist.init_distributed``); the trainer reads
    rank and world size from it. Rank 0 alone logs and writes checkpoints.
    """

    def __init__(
        self,
        config: Config,
        *,
        model: nn.Module | None = None,
        loader: Any = None,
        device: torch.device | None = None,
    ) -> None:
        self.cfg = config
        run = config.run
        self.rank, self.world_size = dist.rank(), dist.world_size()
        self.is_main = self.rank == 0
        self.device = device or dist.select_device(dist.DistEnv(local_rank=self._local_rank()), run.device)
        if model is None:
            from dinosr.model.dinosr import DinoSR

            seed_process(run.seed)  # identical initial weights on every rank
            model = DinoSR(config.model, config.masking)
        self.model = model.to(self.device)
        self.loader = (
            loader if loader is not None else build_loader(config, rank=self.rank, world_size=self.world_size)
        )
        self.fused = self.device.type == "cuda"
        self.optimizer = build_optimizer(self.model, config.optim, fused=self.fused)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=run.precision == "fp16")
        self.step = 0  # completed optimizer updates
        self.bad_steps = 0  # consecutive non-finite steps
        hop = config.model.hop_length
        # Fixed divisor of the summed loss before backward: keeps gradient magnitudes (and fp16
        # ranges) near those of a per-frame mean; step 4 of the module docstring removes it exactly.
        self.loss_norm = max(1.0, config.data.max_tokens / hop)
        self.workdir = Path(run.workdir)
        self.checkpoint_dir = self.workdir / "checkpoints"
        self.meter = WindowMeter()
        self.metrics = MetricsLogger(self.workdir, tensorboard=run.tensorboard, enabled=self.is_main)
        self._batches: Iterator | None = None
        self._saved_step = -1
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
            self.prepare_anchor()
        if self.is_main:
            self.workdir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.workdir / "config.json")
            log.info("%s", effective_batch_message(self.cfg, self.world_size))
        stop_at = min(run.max_steps, until_step or run.max_steps)
        started = time.monotonic()
        self.model.train()
        self.progress.open(total=run.max_steps, initial=self.step)
        while self.step < stop_at:
            # The micro-batches of one update; the data position advances even if the step is skipped.
            batches = [self._next_batch() for _ in range(run.grad_accum)]
            result = self.train_step(batches)
            self.meter.add(result)
            if not result["updated"]:
                self._on_skipped(result)
                continue
            self.bad_steps = 0
            self.progress.update()
            if self.step % run.log_every == 0:
                self.log()
            if self.step % run.save_every == 0:
                self.save()
            if run.max_minutes > 0 and dist.any_rank(
                time.monotonic() - started > 60 * run.max_minutes, self.device
            ):
                log.info("max_minutes=%g reached at step %d", run.max_minutes, self.step)
                break
        if self.meter.steps:
            self.log()  # the last, partial window
        if self._saved_step != self.step:
            self.save()
        return self.step

    def train_step(
        self, batches: Sequence[Any], masks: Sequence[Tensor | None] | None = None
    ) -> dict[str, Any]:
        """One optimizer update from this rank's micro-batches (a collective under DDP).

        Args:
            batches: ``grad_accum`` Batches (waveforms (B, L), lengths (B,), num_skipped); B may be 0.
            masks: optional (B, T) bool mask per micro-batch (tests); None samples masks in the model.

        Returns:
            ``{"updated": bool, ...}`` with the all-reduced sums of the step (see ``WindowMeter.add``).
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
        stats, sums = None, None
        for i in run:
            out = self._forward_backward(batches[i], masks[i], sync=i == run[-1])
            stats = out["stats"] if stats is None else stats + out["stats"]
            sums = out["sums"] if sums is None else sums + out["sums"]
        sums[4] += bad_files
        dist.all_reduce_sum(sums)
        stats.all_reduce()
        loss_sum, num_masked = float(sums[0]), int(sums[1])
        k = self.cfg.model.num_codebook_layers
        layer_loss_sum, anchor = sums[5 : 5 + k], sums[5 + k :]  # anchor: [loss sum, frames] or empty
        grad_norm = self._finish_gradients(num_masked)
        reason = self._apply_update(math.isfinite(loss_sum) and num_masked > 0, grad_norm)
        result = {
            "updated": reason is None,
            "reason": reason,
            "loss_sum": loss_sum,
            "num_masked": num_masked,
            "audio_samples": int(sums[2]),
            "utterances": int(sums[3]),
            "bad_files": int(sums[4]),
            "layer_loss_sum": layer_loss_sum.float(),
            "anchor_loss_sum": float(anchor[0]) if len(anchor) else 0.0,
            "anchor_frames": int(anchor[1]) if len(anchor) else 0,
            "grad_norm": grad_norm,
            "counts": stats.counts,
            "pred_prob_sum": stats.pred_prob_sum,
        }
        if reason is None:
            self.step += 1
            self.model.post_step(self.step, stats)
            self._maybe_freeze()
        return result

    def prepare_anchor(self) -> None:
        """Fit the acoustic anchor's k-means on the training speech once, before the first step."""
        anchor = getattr(self.model, "anchor", None)
        if anchor is None or bool(anchor.fitted):
            return
        entries = getattr(self.loader, "entries", None)
        if entries is None:
            raise RuntimeError(
                "model.anchor_units > 0 needs the training manifest entries (loader.entries) to fit the "
                "anchor k-means; fit model.anchor yourself when passing a custom loader"
            )
        from dinosr.train.anchor_fit import fit_anchor

        with torch.random.fork_rng(devices=[]):  # the fit must not shift the masks/dropout of training
            fit_anchor(self.model, entries, self.cfg.data, seed=self.cfg.run.seed)

    # ----------------------------------------------------------------------------- step internals
    @property
    def lr(self) -> float:
        return lr_at(self.step, self.cfg.optim, self.cfg.run.max_steps)

    def _autocast(self):
        dtype = _AUTOCAST_DTYPES.get(self.cfg.run.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def _forward_backward(self, batch: Any, mask: Tensor | None, *, sync: bool) -> dict[str, Any]:
        """Forward + backward of one micro-batch; returns its stats and its local sums vector."""
        waveforms = batch.waveforms.to(self.device, non_blocking=True)
        lengths = batch.lengths.to(self.device, non_blocking=True)
        no_sync = (
            self.ddp_model.no_sync
            if (not sync and self.ddp_model is not self.model)
            else contextlib.nullcontext
        )
        with no_sync():
            with self._autocast():
                out = self.ddp_model(waveforms, lengths, mask=mask)
            frame_loss = out.losses.float().mean(1)  # (M,) mean over the K codebook layers
            total = frame_loss.sum()
            anchor = out.anchor_losses  # acoustic anchor (small-batch option, model/anchor.py)
            if anchor is not None:
                # Summed over its frames and, like the DinoSR loss, divided by the global number of masked
                # frames (step 4 above): exact under DDP and gradient accumulation.
                total = total + self.model.anchor_weight(self.step) * anchor.float().sum()
            self.scaler.scale(total / self.loss_norm).backward()
        with torch.no_grad():
            # [loss_sum, num_masked, audio_samples, utterances, bad_files, per-layer loss sums (K),
            #  anchor loss sum and anchor frames (only with the acoustic anchor)]
            head = torch.tensor(
                [0.0, out.num_masked, float(lengths.sum()), len(lengths), 0.0],
                dtype=torch.float64,
                device=self.device,
            )
            head[0] = frame_loss.detach().double().sum()
            parts = [head, out.losses.detach().double().sum(0)]
            if anchor is not None:
                parts.append(torch.stack([anchor.detach().double().sum(), anchor.new_tensor(anchor.numel())]))
            sums = torch.cat(parts)
        return {"stats": out.stats, "sums": sums}

    def _finish_gradients(self, num_masked: int) -> float:
        """Unscale (fp16), turn the summed loss's gradients into the global mean's, clip; returns the norm."""
        self.scaler.unscale_(self.optimizer)
        params = trainable_parameters(self.optimizer)
        grads = [p.grad for p in params if p.grad is not None]
        if grads and num_masked > 0:
            torch._foreach_mul_(grads, self.world_size * self.loss_norm / num_masked)
        clip = self.cfg.optim.clip_norm if self.cfg.optim.clip_norm > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(params, clip) if grads else torch.zeros(())
        return float(norm)

    def _apply_update(self, loss_ok: bool, grad_norm: float) -> str | None:
        """Optimizer step unless the loss/gradients are not finite; returns why it was skipped, or None."""
        fp16 = self.scaler.is_enabled()
        # fp16: inf gradients with a finite loss are the GradScaler's business (overflow, not divergence).
        if not loss_ok or (not fp16 and not math.isfinite(grad_norm)):
            self.scaler.update()  # resets the scaler's per-step state (and backs off on inf grads)
            return "nonfinite"
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if fp16 and self.scaler.get_scale() < scale:
            return "overflow"
        return None

    def _maybe_freeze(self) -> None:
        """At the freeze step drop the extractor from the optimizer and re-wrap DDP without it."""
        if self.model.is_frozen(self.step) and has_group(self.optimizer, EXTRACTOR_GROUP):
            drop_group(self.optimizer, EXTRACTOR_GROUP)
            self.ddp_model = self._wrap()
            if self.is_main:
                log.info("step %d: teacher, feature extractor and projection frozen", self.step)

    def _wrap(self) -> nn.Module:
        """DDP over the currently trainable parameters (the bare model for one process)."""
        if not dist.is_distributed():
            return self.model
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        # Codebooks and the teacher are buffers/frozen parameters that post_step updates identically on
        # every rank from all-reduced statistics: nothing to broadcast before each forward.
        no_buffer_sync = (
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
            else {"broadcast_buffers": False}
        )
        return DistributedDataParallel(
            self.model,
            device_ids=[self.device] if self.device.type == "cuda" else None,
            # LayerDrop skips whole layers at random, so those parameters get no gradient in that step.
            # (Frozen parameters are handled by re-wrapping at the freeze, see _maybe_freeze.)
            find_unused_parameters=self.cfg.model.layerdrop > 0,
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
                    f"{self.bad_steps} non-finite steps in a row at step {self.step}; lower optim.lr, "
                    "enable optim.clip_norm or use precision=fp32"
                )
        elif reason == "overflow":
            log.debug(
                "step %d: fp16 gradient overflow, loss scale now %g", self.step + 1, self.scaler.get_scale()
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
        return {
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

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (after building the trainer from the same config)."""
        self.step = int(state["step"])
        self.model.load_state_dict(state["model"])
        frozen = self.model.apply_freeze(self.step)  # requires_grad is not part of a state_dict
        # Same group layout as when it was saved: without the extractor once frozen.
        self.optimizer = build_optimizer(self.model, self.cfg.optim, frozen=frozen, fused=self.fused)
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
        self.ddp_model = self._wrap()

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

    # ----------------------------------------------------------------------------- logging
    def log(self) -> dict[str, Any]:
        """Write the metrics of the steps since the last call (rank 0) and reset the window."""
        metrics = self.meter.summary(sample_rate=self.cfg.data.sample_rate)
        metrics.update(lr=self.lr, ema_decay=self.model.ema_decay(self.step), epoch=self.loader.epoch)
        if self.scaler.is_enabled():
            metrics["loss_scale"] = self.scaler.get_scale()
        warnings = collapse_warnings(
            metrics,
            codebook_size=self.cfg.model.codebook_size,
            min_active=self.cfg.run.collapse_min_active,
            min_loss=self.cfg.run.collapse_min_loss,
        )
        metrics["warnings"] = warnings
        self.meter.reset()
        if not self.is_main:
            return metrics
        self.metrics.log(self.step, metrics)
        for warning in warnings:
            log.warning("step %d: %s", self.step, warning)
        if not self.progress.show(metrics):
            log.info("step %d loss %.4f lr %.2e", self.step, metrics["loss"], metrics["lr"])
        return metrics

    def close(self) -> None:
        """Close the progress bar and the metric sinks."""
        self.progress.close()
        self.metrics.close()
