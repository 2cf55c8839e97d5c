"""Optimiser, schedule and run options. Defaults follow the official base.yaml (spec section 8)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dinosr.configcheck import check


@dataclass(frozen=True)
class OptimConfig:
    """AdamW + learning-rate schedule."""

    lr: float = 5e-4  # optimization.lr
    betas: tuple[float, float] = (0.9, 0.98)  # adam_betas
    eps: float = 1e-6  # adam_eps
    weight_decay: float = 0.01  # weight_decay
    scheduler: Literal["tri_stage", "cosine", "constant"] = "tri_stage"  # lr_scheduler
    phase_ratio: tuple[float, float, float] = (0.03, 0.47, 0.50)  # tri-stage warm-up / hold / decay
    init_lr_scale: float = 0.01  # tri-stage: start at lr * this
    final_lr_scale: float = 0.01  # tri-stage / cosine: end at lr * this
    warmup_steps: int = 0  # cosine / constant: linear warm-up steps (0 = 3% of max_steps)
    clip_norm: float = 0.0  # clip_norm (0 = no clipping)

    def __post_init__(self) -> None:
        check(self.lr > 0, "lr must be > 0")
        check(all(0.0 <= b < 1.0 for b in self.betas), "betas must be in [0, 1)")
        check(self.eps > 0, "eps must be > 0")
        check(self.weight_decay >= 0, "weight_decay must be >= 0")
        check(abs(sum(self.phase_ratio) - 1.0) < 1e-6, "phase_ratio must sum to 1")
        check(all(r >= 0 for r in self.phase_ratio), "phase_ratio must be >= 0")
        check(self.clip_norm >= 0, "clip_norm must be >= 0")
        check(self.warmup_steps >= 0, "warmup_steps must be >= 0")


@dataclass(frozen=True)
class RunConfig:
    """Length of the run, precision, logging and checkpointing."""

    workdir: str = "runs/dinosr"  # checkpoints, config.json, metrics.jsonl
    max_steps: int = 400_000  # max_update
    max_minutes: float = 0.0  # stop (with a checkpoint) after this much wall time; 0 = no limit
    grad_accum: int = 1  # update_freq: micro-batches per optimizer step
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype (codebooks and targets stay fp32)
    seed: int = 1  # common.seed
    device: str = "auto"  # auto = cuda if available, else cpu
    log_every: int = 10  # log_interval (optimizer steps)
    save_every: int = 2500  # save_interval_updates
    keep_last: int = 3  # keep_interval_updates
    tensorboard: bool = False  # also log to TensorBoard under workdir/tb
    max_bad_steps: int = 10  # stop after this many non-finite losses in a row
    collapse_min_active: float = 0.1  # warn when a codebook uses less than this share of codewords
    collapse_min_loss: float = 0.05  # warn when the loss falls below this (teacher-collapse symptom)
    progress: bool = True  # tqdm progress bar on the terminal (rank 0)
    dist_backend: Literal["auto", "nccl", "gloo"] = "auto"  # auto = nccl on GPU, gloo on CPU
    num_threads: int = 0  # torch intra-op CPU threads per process (0 = torch's default)
    validate_every: int = 0  # run the task's validation every N optimizer steps (and at the end); 0 = never

    def __post_init__(self) -> None:
        check(bool(self.workdir.strip()), "workdir must not be empty (it would write into the cwd)")
        check(self.max_steps >= 1, "max_steps must be >= 1")
        check(self.max_minutes >= 0, "max_minutes must be >= 0")
        check(self.grad_accum >= 1, "grad_accum must be >= 1")
        check(self.log_every >= 1, "log_every must be >= 1")
        check(self.save_every >= 1, "save_every must be >= 1")
        check(self.keep_last >= 1, "keep_last must be >= 1")
        check(self.max_bad_steps >= 1, "max_bad_steps must be >= 1")
        check(0.0 <= self.collapse_min_active <= 1.0, "collapse_min_active must be in [0, 1]")
        check(self.collapse_min_loss >= 0, "collapse_min_loss must be >= 0")
        check(self.num_threads >= 0, "num_threads must be >= 0")
        check(self.validate_every >= 0, "validate_every must be >= 0 (0 = never)")
