"""Training metrics: a JSONL/TensorBoard sink, the progress bar, collapse checks.

Every logged number is computed from sums that were already all-reduced over ranks (the task's
`StepStats`, summed over the log window by the trainer), so the values are exact for the global batch
rather than rank 0's view of it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from dinosr.config import Config

log = logging.getLogger(__name__)


def active_codewords(counts: torch.Tensor) -> torch.Tensor:
    """(K, V) assignment counts -> (K,) number of codewords chosen at least once."""
    return (counts > 0).sum(-1)


# Named in every collapse warning: the small-batch options the tiny recipe uses (research/small_batch.md).
COLLAPSE_REMEDIES = (
    'remedies (research/small_batch.md, configs/tiny.toml): model.codebook_init="kmeans", '
    "model.codebook_restart_steps=N, model.anchor_units=N, or a larger batch "
    "(data.max_tokens, run.grad_accum)"
)


def collapse_warnings(
    metrics: dict[str, Any], *, codebook_size: int, min_active: float, min_loss: float
) -> list[str]:
    """Human-readable warnings for the teacher-collapse symptoms of spec section 15.

    Args:
        metrics: a log row (``PretrainTask.metrics``).
        codebook_size: V.
        min_active: warn when a codebook uses fewer than ``min_active * V`` codewords in the window, or its
            target perplexity is below ``min_active * V``.
        min_loss: warn when the loss is below this (a collapsed teacher is trivially predictable).

    Every warning ends with the remedy options (``COLLAPSE_REMEDIES``).
    """
    warnings = []
    floor = min_active * codebook_size
    active = metrics.get("active_codewords") or []
    low = [k for k, a in enumerate(active) if a < floor]
    if low:
        shown = ", ".join(f"{k}:{active[k]}" for k in low)
        warnings.append(f"codebook collapse: few active codewords (layer:active of {codebook_size}) {shown}")
    ppl = metrics.get("target_ppl") or []
    low_ppl = [k for k, p in enumerate(ppl) if p < floor]
    if low_ppl:
        shown = ", ".join(f"{k}:{ppl[k]:.1f}" for k in low_ppl)
        warnings.append(
            f"codebook collapse: target perplexity below {floor:.0f} "
            f"(layer:perplexity of {codebook_size}) {shown}"
        )
    loss = metrics.get("loss")
    if loss is not None and math.isfinite(loss) and loss < min_loss:
        warnings.append(f"loss {loss:.4f} < {min_loss}: the teacher may have collapsed (spec section 15)")
    return [f"{w}; {COLLAPSE_REMEDIES}" for w in warnings]


class MetricsLogger:
    """Writes one JSON object per line to ``metrics.jsonl`` (always) and TensorBoard scalars (optional).

    Only rank 0 should create one with ``enabled=True``; a disabled logger ignores everything.
    """

    def __init__(self, workdir: str | Path, *, tensorboard: bool = False, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(workdir) / "metrics.jsonl"
        self.tb_dir = Path(workdir) / "tb"
        self._file = None
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", buffering=1)  # line-buffered: tail -f works, crashes lose nothing
        if tensorboard:
            self._open_tensorboard()

    def _open_tensorboard(self, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover - optional dependency
            log.warning("tensorboard is not installed; pip install 'dinosr[tensorboard]'")
        else:
            self._tb = SummaryWriter(str(self.tb_dir), purge_step=purge_step)

    def truncate_after(self, step: int) -> int:
        """Drop the rows of steps > ``step`` (a resumed run logs them again); returns how many were dropped.

        ``metrics.jsonl`` is rewritten atomically (a half-written last line of a killed run goes too);
        TensorBoard hides the events past ``step`` (``purge_step``).
        """
        if not self.enabled:
            return 0
        from dinosr.fileio import atomic_write

        self._file.close()
        kept, dropped = [], 0
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row_step = json.loads(line)["step"]
            except (ValueError, KeyError, TypeError):
                row_step = None  # not a complete row
            if isinstance(row_step, int) and row_step <= step:
                kept.append(line + "\n")
            else:
                dropped += 1
        if dropped:
            with atomic_write(self.path, binary=False) as f:
                f.writelines(kept)
            log.info("%s: dropped %d row(s) past step %d (logged again now)", self.path, dropped, step)
        self._file = self.path.open("a", buffering=1)
        if self._tb is not None:
            self._tb.close()
            self._open_tensorboard(purge_step=step + 1)
        return dropped

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": time.time(), **metrics}
        self._file.write(json.dumps(record, allow_nan=True) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(f"train/{key}", value, step)
                elif isinstance(value, list) and value and isinstance(value[0], (int, float)):
                    for k, v in enumerate(value):
                        self._tb.add_scalar(f"train/{key}/{k}", v, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def effective_batch_message(cfg: Config, world_size: int) -> str:
    """The effective batch per optimizer step: what decides whether a recipe matches the paper's."""
    d, run = cfg.data, cfg.run
    samples = d.max_tokens * run.grad_accum * world_size
    hop = cfg.model.hop_length
    # Overlapping spans cover about 1 - exp(-mask_prob) of the frames of a long utterance (55 % at 0.8;
    # fewer on short crops: ~47 % on the tiny recipe's 2 s, where spans are clipped at the ends).
    masked = samples / hop * (1 - math.exp(-cfg.masking.mask_prob))
    return (
        f"effective batch <= {samples / d.sample_rate:.1f} s of audio per optimizer step (max_tokens "
        f"{d.max_tokens} x grad_accum {run.grad_accum} x world {world_size} / {d.sample_rate} Hz), "
        f"~{masked:.0f} masked frames per step (measured: batch_seconds, masked_frames_per_step)"
    )


class ProgressBar:
    """tqdm bar over optimizer steps whose postfix shows the last logged metrics and collapse warnings."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._bar = None

    def open(self, *, total: int, initial: int) -> None:
        if self.enabled and self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

    def update(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def show(self, metrics: dict[str, Any]) -> bool:
        """Put ``metrics`` in the postfix; returns False when there is no bar (log them instead)."""
        if self._bar is None:
            return False
        # Whatever of these the task logs (pretraining has all of them).
        postfix = {"loss": f"{metrics.get('loss', math.nan):.3f}", "lr": f"{metrics['lr']:.1e}"}
        if metrics.get("target_ppl"):
            postfix["ppl"] = f"{sum(metrics['target_ppl']) / len(metrics['target_ppl']):.0f}"
        if "audio_seconds_per_second" in metrics:
            postfix["aud_s/s"] = f"{metrics['audio_seconds_per_second']:.1f}"
        if metrics.get("warnings"):
            postfix["WARNING"] = "COLLAPSE?"
        self._bar.set_postfix(postfix, refresh=False)
        return True

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
