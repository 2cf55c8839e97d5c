"""Learning-rate schedules as pure functions of the number of completed optimizer updates.

The trainer sets every param group's ``lr`` to ``lr_at(step, optim_cfg, max_steps)`` before each
update, so the schedule has no state of its own: resuming at step ``t`` gives the same learning
rate as an uninterrupted run, and dropping a param group (extractor freeze) cannot shift it.
"""

from __future__ import annotations

import math

from dinosr.train.config import OptimConfig


def tri_stage_lr(
    step: int,
    *,
    peak: float,
    max_steps: int,
    phase_ratio: tuple[float, float, float],
    init_scale: float,
    final_scale: float,
) -> float:
    """fairseq's tri-stage schedule: linear warm-up, hold, exponential decay, then constant.

    Args:
        step: completed optimizer updates (the LR used for update ``step + 1``).
        peak: the learning rate of the hold stage.
        max_steps: total updates; the stages take ``int(max_steps * ratio)`` updates each.
        phase_ratio: (warm-up, hold, decay) shares of ``max_steps``.
        init_scale: warm-up starts at ``peak * init_scale``.
        final_scale: decay ends at ``peak * final_scale`` (and stays there).
    """
    warmup, hold, decay = (int(max_steps * r) for r in phase_ratio)
    init_lr, final_lr = peak * init_scale, peak * final_scale
    if step < warmup:
        return init_lr + (peak - init_lr) * step / warmup
    step -= warmup
    if step < hold:
        return peak
    step -= hold
    if step <= decay and decay > 0:
        # exp(-k * decay) = final_scale, so the curve lands exactly on final_lr at the end.
        return peak * math.exp(math.log(final_scale) * step / decay)
    return final_lr


def cosine_lr(
    step: int, *, peak: float, max_steps: int, warmup: int, init_scale: float, final_scale: float
) -> float:
    """Linear warm-up from ``peak * init_scale``, then half a cosine down to ``peak * final_scale``."""
    if step < warmup:
        return peak * init_scale + peak * (1 - init_scale) * step / warmup
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    final_lr = peak * final_scale
    return final_lr + (peak - final_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def constant_lr(step: int, *, peak: float, warmup: int, init_scale: float) -> float:
    """Linear warm-up from ``peak * init_scale``, then constant ``peak``."""
    if step < warmup:
        return peak * init_scale + peak * (1 - init_scale) * step / warmup
    return peak


def warmup_steps(cfg: OptimConfig, max_steps: int) -> int:
    """Warm-up length of the cosine/constant schedules: ``cfg.warmup_steps`` or 3% of the run."""
    return cfg.warmup_steps if cfg.warmup_steps > 0 else int(0.03 * max_steps)


def lr_at(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """The learning rate for the update after ``step`` completed updates, per ``cfg.scheduler``."""
    if cfg.scheduler == "tri_stage":
        return tri_stage_lr(
            step,
            peak=cfg.lr,
            max_steps=max_steps,
            phase_ratio=cfg.phase_ratio,
            init_scale=cfg.init_lr_scale,
            final_scale=cfg.final_lr_scale,
        )
    if cfg.scheduler == "cosine":
        return cosine_lr(
            step,
            peak=cfg.lr,
            max_steps=max_steps,
            warmup=warmup_steps(cfg, max_steps),
            init_scale=cfg.init_lr_scale,
            final_scale=cfg.final_lr_scale,
        )
    if cfg.scheduler == "constant":
        return constant_lr(
            step, peak=cfg.lr, warmup=warmup_steps(cfg, max_steps), init_scale=cfg.init_lr_scale
        )
    raise ValueError(f"unknown scheduler {cfg.scheduler!r}")
