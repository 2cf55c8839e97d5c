"""EMA teacher (spec section 4): creation, decay schedule and the averaging step."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from dinosr.model.encoder import Transformer


def ema_decay(
    step: int,
    *,
    start: float = 0.999,
    end: float = 0.9999,
    anneal_end_step: int = 30000,
    freeze_step: int = 200001,
) -> float:
    """Teacher EMA decay after ``step`` completed optimizer updates.

    Linear from ``start`` (step 0) to ``end`` at ``anneal_end_step``, then ``end``; 1.0 (frozen teacher) from
    ``freeze_step`` on. Identical in fairseq and spidr (spec 4).
    """
    if step >= freeze_step:
        return 1.0
    if step >= anneal_end_step:
        return end
    return end - (end - start) * (1.0 - step / anneal_end_step)


def is_frozen(step: int, freeze_step: int) -> bool:
    """Whether the teacher and the feature extractor/projection are frozen after ``step`` updates."""
    return step >= freeze_step


def make_teacher(student: Transformer, *, reinit: bool = False) -> Transformer:
    """A frozen fp32 copy of the student transformer in eval mode.

    Args:
        reinit: re-draw the layers' Linear weights (spidr's independent random teacher); otherwise an exact
            copy (official). LayerNorms and the positional conv are copied in both cases.
    """
    teacher = copy.deepcopy(student).float()
    if reinit:
        teacher.reset_linear_parameters()
    teacher.requires_grad_(False)
    return teacher.eval()


@torch.no_grad()
def ema_update(
    teacher: nn.Module, student: nn.Module, decay: float, *, copy_prefixes: Sequence[str] = ("pos_conv.",)
) -> None:
    """teacher <- decay * teacher + (1 - decay) * student, parameter by parameter (fp32).

    Parameters whose name starts with one of ``copy_prefixes`` are copied instead of averaged (fairseq
    ``ema_layers_only``: the positional conv is shared, spec 4). Buffers are copied.
    """
    student_params = dict(student.named_parameters())
    averaged_t, averaged_s = [], []
    for name, t in teacher.named_parameters():
        s = student_params[name].detach()
        if name.startswith(tuple(copy_prefixes)):
            t.copy_(s)
        else:
            averaged_t.append(t)
            averaged_s.append(s.to(t.dtype))
    if averaged_t:
        # One fused kernel over all tensors instead of a Python loop of lerp_ calls.
        torch._foreach_lerp_(averaged_t, averaged_s, 1.0 - decay)
    student_buffers = dict(student.named_buffers())
    for name, b in teacher.named_buffers():
        b.copy_(student_buffers[name])
