"""AdamW over the model's own parameter groups, and the extractor freeze.

The model says which parameters exist (``model.param_groups()``: an ``"extractor"`` group, i.e.
the CNN feature extractor + feature projection, and a ``"main"`` group); the optimizer never
matches parameter names. When the teacher freezes (``model.is_frozen(step)``) the extractor
group is removed from the optimizer together with its Adam state, like spidr (spec section 4):
no more updates and no more weight decay on frozen weights.
"""

from __future__ import annotations

import torch
from torch import nn

from dinosr.train.config import OptimConfig

EXTRACTOR_GROUP = "extractor"


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, *, frozen: bool = False, fused: bool = False
) -> torch.optim.AdamW:
    """AdamW (decoupled weight decay, as fairseq's Adam) over ``model.param_groups()``.

    Args:
        model: a DinoSR (anything with ``param_groups() -> [{"name", "params"}, ...]``).
        cfg: betas, eps, weight decay and peak LR (the trainer overwrites ``lr`` every step).
        frozen: leave out the extractor group (resuming after the freeze step), so the group
            layout matches the optimizer state saved after :func:`drop_group`.
        fused: use the fused CUDA kernel.
    """
    groups = []
    for group in model.param_groups():
        if frozen and group["name"] == EXTRACTOR_GROUP:
            continue
        params = [p for p in group["params"] if p.requires_grad]
        if params:
            groups.append({"name": group["name"], "params": params})
    kwargs = {"fused": True} if fused else {}
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, **kwargs
    )


def has_group(optimizer: torch.optim.Optimizer, name: str) -> bool:
    return any(g.get("name") == name for g in optimizer.param_groups)


def drop_group(optimizer: torch.optim.Optimizer, name: str) -> None:
    """Remove the param group called ``name`` and the optimizer state of its parameters."""
    keep = []
    for group in optimizer.param_groups:
        if group.get("name") == name:
            for p in group["params"]:
                optimizer.state.pop(p, None)
                p.grad = None
        else:
            keep.append(group)
    optimizer.param_groups[:] = keep


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def trainable_parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The parameters the optimizer updates (what gradients are scaled, clipped and measured over)."""
    return [p for g in optimizer.param_groups for p in g["params"]]
