"""AdamW over named parameter groups, and changes of the trained set (the extractor freeze).

The task says which parameters train (``Task.param_groups(model, step)``; for pretraining the model's
``param_groups()``: an ``"extractor"`` group, i.e. the CNN feature extractor + feature projection, and a
``"main"`` group); the optimizer never matches parameter names. When the trained set changes, the
optimizer follows with :func:`sync_groups`: a group that leaves is removed together with its Adam state,
like spidr at the teacher freeze (spec section 4): no more updates and no more weight decay on frozen
weights; a group that joins (fine-tuning's encoder after ``freeze_finetune_updates``) starts fresh.
"""

from __future__ import annotations

from collections.abc import Sequence

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
        fused: use the fused kernel (CUDA; CPU since torch 2.4).
    """
    groups = []
    for group in model.param_groups():
        if frozen and group["name"] == EXTRACTOR_GROUP:
            continue
        groups.append({"name": group["name"], "params": [p for p in group["params"] if p.requires_grad]})
    return optimizer_for_groups(groups, cfg, fused=fused)


def optimizer_for_groups(
    groups: Sequence[dict], cfg: OptimConfig, *, fused: bool = False
) -> torch.optim.AdamW:
    """AdamW over ``[{"name", "params"}, ...]`` in that order (empty groups left out)."""
    groups = [{"name": g["name"], "params": list(g["params"])} for g in groups if list(g["params"])]
    kwargs = {"fused": True} if fused else {}
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, **kwargs
    )


def group_layout(groups: Sequence[dict]) -> list[tuple[str, tuple[int, ...]]]:
    """``[(name, parameter ids)]`` of non-empty groups: equal layouts train the same parameters alike."""
    return [(str(g["name"]), tuple(id(p) for p in g["params"])) for g in groups if list(g["params"])]


def sync_groups(optimizer: torch.optim.Optimizer, groups: Sequence[dict]) -> None:
    """Make the optimizer's groups those of ``groups`` (in that order), keeping the hyperparameters and
    Adam state of every group whose name and parameters are unchanged; the others are dropped with their
    state (:func:`drop_group`) or added fresh."""
    wanted = [g for g in groups if list(g["params"])]
    kept = {name: ids for name, ids in group_layout(optimizer.param_groups)}
    for name, ids in list(kept.items()):
        if (name, ids) not in group_layout(wanted):
            drop_group(optimizer, name)
            kept.pop(name)
    for g in wanted:
        if str(g["name"]) not in kept:
            optimizer.add_param_group({"name": g["name"], "params": list(g["params"])})
    order = [str(g["name"]) for g in wanted]
    optimizer.param_groups.sort(key=lambda g: order.index(g["name"]))


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
