"""What a training task plugs into the loop (`dinosr.train.trainer.Trainer`), and its step statistics.

The loop owns everything that is the same for every task: checkpoints and exact resume, DDP (wrap and
re-wrap), autocast / GradScaler, gradient accumulation, the rescale of the summed loss's gradients by the
global normaliser, clipping, the LR schedule, the NaN/inf guard, logging, progress, validation and the
best checkpoint. A task owns what a step *means*: the model, the micro-batch forward and its summed loss,
the step statistics and the normaliser, which parameters train, the post-step state update and the
metrics. Pretraining is `dinosr.train.pretrain_task.PretrainTask`; CTC fine-tuning is the second task.

Every method gets the model from the loop (the task keeps no reference to it): ``forward`` gets the module
to call (the DDP wrapper under DDP), everything else the bare module.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
from torch import Tensor, nn

from dinosr.train import distributed as dist


@dataclasses.dataclass(kw_only=True)
class StepStats:
    """Named sums of one optimizer step that are added over micro-batches and all-reduced over ranks.

    Subclasses declare their fields. A field that is a number or a Tensor is *summed*: all of them are
    flattened into one float64 vector for a single all-reduce and unflattened after it (like
    ``CodebookStats``), so a count arrives as a float holding an integer. Any other field value must itself
    support ``a + b`` and an in-place ``.all_reduce()`` (e.g. ``CodebookStats``), and is reduced on its own.

    ``bad_files`` belongs to the loop: it sets it (files the loader skipped in the step's micro-batches)
    before the all-reduce. A field that is None is skipped by the sum and the reduction.
    """

    bad_files: float = 0.0

    # What the loop reads from a reduced step; every task's statistics define both.
    def total_loss(self) -> float:
        """The global summed loss of the step (the step is skipped as non-finite when it is NaN/inf)."""
        raise NotImplementedError

    def normaliser(self) -> float:
        """The global count the summed loss is averaged over (pretraining: masked frames; CTC:
        utterances). Zero skips the step (reason ``"no_targets"``, not counted as divergence)."""
        raise NotImplementedError

    def for_log(self) -> StepStats:
        """What the log window keeps of a reduced step (summed over the window); default: all of it.
        Override to drop large per-step parts the metrics do not need."""
        return self

    # ------------------------------------------------------------------ generic sum / reduce mechanics
    def _summed(self) -> list[str]:
        summed = (int, float, Tensor)
        return [f.name for f in dataclasses.fields(self) if isinstance(getattr(self, f.name), summed)]

    def __add__(self, other: StepStats) -> StepStats:
        if type(other) is not type(self):
            raise TypeError(f"cannot add {type(other).__name__} to {type(self).__name__}")
        values = {}
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            values[f.name] = b if a is None else a if b is None else a + b
        return dataclasses.replace(self, **values)

    def flatten(self, device: torch.device | str = "cpu") -> Tensor:
        """The summed fields as one float64 vector, in field order."""
        parts = [torch.as_tensor(getattr(self, n), dtype=torch.float64).reshape(-1) for n in self._summed()]
        return torch.cat([p.to(device) for p in parts]) if parts else torch.zeros(0, dtype=torch.float64)

    def unflatten(self, flat: Tensor) -> StepStats:
        """A copy with the summed fields read back from ``flat`` (numbers become floats; tensors keep
        their shape and dtype)."""
        values, pos = {}, 0
        for name in self._summed():
            value = getattr(self, name)
            n = value.numel() if isinstance(value, Tensor) else 1
            chunk = flat[pos : pos + n]
            pos += n
            values[name] = chunk.view_as(value).to(value.dtype) if isinstance(value, Tensor) else float(chunk)
        if pos != flat.numel():
            raise ValueError(f"flat vector of {flat.numel()} values for {pos} summed values")
        return dataclasses.replace(self, **values)

    def all_reduce(self, device: torch.device | str = "cpu") -> StepStats:
        """The sums over ranks: one all-reduce for the summed fields, then each other field's own
        ``all_reduce``. Every rank must call it (a no-op without a process group)."""
        if not dist.is_distributed():
            return self
        reduced = self.unflatten(dist.all_reduce_sum(self.flatten(device)))
        for f in dataclasses.fields(reduced):
            value = getattr(reduced, f.name)
            if f.name not in self._summed() and value is not None:
                value.all_reduce()
        return reduced

    def result(self) -> dict[str, Any]:
        """The step's values for ``Trainer.train_step``'s result dict (tests, scripts)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class Task:
    """The training task interface of `Trainer` (see the module docstring and docs/DESIGN.md "train/").

    Subclass it: the methods that raise NotImplementedError are required, the others have defaults that
    do nothing.

    Attributes:
        loss_norm: a fixed divisor of the summed loss before backward, about the normaliser of one
            micro-batch: keeps gradient magnitudes (and fp16 ranges) near a mean's. The loop removes it
            exactly when it rescales by ``world_size * loss_norm / normaliser``.
        best_metric: ``(name, "min" | "max")`` of the ``validate`` result that selects
            ``checkpoints/best.pt``, or None (no best checkpoint).
    """

    loss_norm: float = 1.0
    best_metric: tuple[str, Literal["min", "max"]] | None = None

    # ------------------------------------------------------------------ required
    def build_model(self) -> nn.Module:
        """The model to train, on the CPU; called after the loop seeded the RNGs (identical on every rank)."""
        raise NotImplementedError

    def build_loader(self, *, rank: int, world_size: int) -> Any:
        """The training loader: iterable over batches with ``lengths`` (B,) and ``num_skipped``, ``__len__``,
        ``epoch``, ``set_epoch(epoch)``, ``state_dict()``/``load_state_dict()`` (a ``TrainLoader``)."""
        raise NotImplementedError

    def param_groups(self, model: nn.Module, step: int) -> list[dict[str, Any]]:
        """``[{"name": str, "params": [...]}, ...]``: the parameters trained in the update after ``step``
        completed updates (names unique, no parameter twice). The loop sets ``requires_grad`` True on
        exactly these and False on every other parameter of the model. It asks after every update and,
        when the set changed, rebuilds the optimizer groups (a dropped group loses its Adam state, a new
        one starts fresh, kept ones keep theirs) and re-wraps DDP; on resume it builds the layout of the
        saved step directly."""
        raise NotImplementedError

    def forward(
        self, model: nn.Module, batch: Any, *, step: int, mask: Tensor | None = None
    ) -> tuple[Tensor, StepStats]:
        """One non-empty micro-batch: ``(loss, stats)`` with ``loss`` the *summed* (not averaged) fp32 scalar
        loss to backpropagate and ``stats`` this micro-batch's (local) statistics. ``model`` is the module
        to call (DDP wrapper or bare model); it runs under the loop's autocast. ``step`` = completed
        updates. ``mask`` is an optional per-micro-batch override given to ``Trainer.train_step`` (tests)."""
        raise NotImplementedError

    def metrics(self, model: nn.Module, stats: StepStats, *, steps: int, seconds: float, step: int) -> dict:
        """The task's values of a log row from the statistics summed over the ``steps`` updates of the
        window (``seconds`` long) that ends at ``step``. JSON-friendly values (lists for per-layer ones)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ optional
    def describe(self, world_size: int) -> str | None:
        """One line logged at the start of ``fit`` (e.g. the effective batch), or None."""
        return None

    def prepare(self, model: nn.Module, loader: Any) -> None:
        """Run once before step 0 of a fresh run, not on resume (a collective under DDP if it needs one)."""

    def find_unused_parameters(self, model: nn.Module) -> bool:
        """DDP ``find_unused_parameters``: True when a forward may skip trainable parameters (LayerDrop)."""
        return False

    def post_step(self, model: nn.Module, step: int, stats: StepStats) -> None:
        """State updates after the optimizer step (``step`` = completed updates), with the step's
        statistics summed over micro-batches and ranks (pretraining: codebook and teacher EMA)."""

    def warnings(self, metrics: dict[str, Any]) -> list[str]:
        """Warnings for a log row (logged and stored under ``"warnings"``), e.g. collapse symptoms."""
        return []

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Validation metrics, run every ``run.validate_every`` updates (and after the last) on *every*
        rank, with the model in eval mode, under no_grad, the training CPU RNG untouched; it must return
        the same values on every rank (shard and all-reduce, or compute on rank 0 and broadcast).
        Logged to metrics.jsonl as ``valid_<name>``; ``best_metric`` picks ``checkpoints/best.pt``."""
        return {}

    def checkpoint_extras(self) -> dict[str, Any]:
        """Extra top-level checkpoint entries (tensors / plain containers, e.g. the label symbols); a name
        the loop uses itself is an error."""
        return {}

    def load_checkpoint_extras(self, state: dict[str, Any]) -> None:
        """Called on resume with the whole checkpoint dict (after the loop restored its part)."""
