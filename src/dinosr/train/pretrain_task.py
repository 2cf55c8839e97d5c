"""DinoSR pretraining as a `Task` of the training loop (docs/DESIGN.md "Loss reduction").

The summed loss of a micro-batch is ``sum over masked frames of the layer-mean CE`` (+ the acoustic anchor's
weighted CE summed over its frames); the normaliser is the global number of masked frames, so after the
loop's rescale and DDP's averaging the gradient is that of the global per-frame mean of spec section 7.
``post_step`` applies the codebook EMA (statistics of the whole effective batch) and the teacher EMA; the
extractor + projection leave the trainable set at the freeze step.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from dinosr.model.codebook import CodebookStats, perplexity
from dinosr.train.metrics_log import active_codewords, collapse_warnings, effective_batch_message
from dinosr.train.task import StepStats, Task

if TYPE_CHECKING:
    from dinosr.config import Config

log = logging.getLogger(__name__)

EXTRACTOR_GROUP = "extractor"


@dataclasses.dataclass(kw_only=True)
class PretrainStats(StepStats):
    """Sums of one pretraining step (local per micro-batch, then global over micro-batches and ranks)."""

    loss_sum: Tensor | float  # sum over masked frames of the layer-mean CE (the anchor not included)
    num_masked: Tensor | float  # masked frames: the normaliser
    audio_samples: float
    utterances: float
    layer_loss_sum: Tensor  # (K,) float64: CE summed over masked frames per codebook layer
    anchor_loss_sum: Tensor | float = 0.0  # acoustic anchor CE summed over its frames (0 without anchor)
    anchor_frames: float = 0.0
    # Reduced on its own (its samples are gathered, not summed); what post_step needs. Dropped in the log.
    codebook: CodebookStats | None = None
    # The log window keeps only these of the codebook statistics (float64, from ``for_log``).
    counts: Tensor | None = None  # (K, V) target assignments
    pred_prob_sum: Tensor | None = None  # (K, V) summed head softmax

    def total_loss(self) -> float:
        return float(self.loss_sum)

    def normaliser(self) -> float:
        return float(self.num_masked)

    def for_log(self) -> PretrainStats:
        cb = self.codebook
        counts, probs = cb.counts.detach().double(), cb.pred_prob_sum.detach().double()
        return dataclasses.replace(self, codebook=None, counts=counts, pred_prob_sum=probs)

    def result(self) -> dict[str, Any]:
        cb = self.codebook
        return {
            "loss_sum": float(self.loss_sum),
            "num_masked": int(self.num_masked),
            "audio_samples": int(self.audio_samples),
            "utterances": int(self.utterances),
            "bad_files": int(self.bad_files),
            "layer_loss_sum": self.layer_loss_sum.float(),
            "anchor_loss_sum": float(self.anchor_loss_sum),
            "anchor_frames": int(self.anchor_frames),
            "counts": cb.counts if cb is not None else self.counts,
            "pred_prob_sum": cb.pred_prob_sum if cb is not None else self.pred_prob_sum,
        }


class PretrainTask(Task):
    """DinoSR self-supervised pretraining: ``config.model`` / ``config.masking`` / ``config.data``."""

    best_metric = None

    def __init__(self, config: Config) -> None:
        self.cfg = config
        hop = config.model.hop_length
        # About the masked frames of one micro-batch (it only has to be fixed, see Task.loss_norm).
        self.loss_norm = max(1.0, config.data.max_tokens / hop)

    def build_model(self) -> nn.Module:
        from dinosr.model.dinosr import DinoSR

        return DinoSR(self.cfg.model, self.cfg.masking)

    def build_loader(self, *, rank: int, world_size: int) -> Any:
        """The training loader for ``cfg.data`` (``manifest = ""``: the bundled corpus's train.tsv)."""
        from dinosr.data.loader import build_train_loader
        from dinosr.data.manifest import read_manifest

        cfg = self.cfg
        if cfg.data.manifest:
            entries = read_manifest(cfg.data.manifest)
        else:
            from dinosr.data.corpus import bundled_corpus

            entries = read_manifest(Path(bundled_corpus()) / "train.tsv")
        return build_train_loader(cfg.data, entries, rank=rank, world_size=world_size, seed=cfg.run.seed)

    def describe(self, world_size: int) -> str:
        return effective_batch_message(self.cfg, world_size)

    def prepare(self, model: nn.Module, loader: Any) -> None:
        """Fit the acoustic anchor's k-means on the training speech once, before the first step."""
        anchor = getattr(model, "anchor", None)
        if anchor is None or bool(anchor.fitted):
            return
        entries = getattr(loader, "entries", None)
        if entries is None:
            raise RuntimeError(
                "model.anchor_units > 0 needs the training manifest entries (loader.entries) to fit the "
                "anchor k-means; fit model.anchor yourself when passing a custom loader"
            )
        from dinosr.train.anchor_fit import fit_anchor

        with torch.random.fork_rng(devices=[]):  # the fit must not shift the masks/dropout of training
            fit_anchor(model, entries, self.cfg.data, seed=self.cfg.run.seed)

    def param_groups(self, model: nn.Module, step: int) -> list[dict[str, Any]]:
        """The model's groups; the extractor (CNN + projection) leaves them at the teacher freeze."""
        frozen = model.is_frozen(step)
        return [g for g in model.param_groups() if not (frozen and g["name"] == EXTRACTOR_GROUP)]

    def find_unused_parameters(self, model: nn.Module) -> bool:
        # LayerDrop skips whole layers at random, so those parameters get no gradient in that step.
        return self.cfg.model.layerdrop > 0

    def forward(
        self, model: nn.Module, batch: Any, *, step: int, mask: Tensor | None = None
    ) -> tuple[Tensor, PretrainStats]:
        lengths = batch.lengths
        out = model(batch.waveforms, lengths, mask=mask)
        frame_loss = out.losses.float().mean(1)  # (M,) mean over the K codebook layers
        total = frame_loss.sum()
        anchor = out.anchor_losses  # acoustic anchor (small-batch option, model/anchor.py)
        if anchor is not None:
            # Summed over its frames and, like the DinoSR loss, divided by the global number of masked
            # frames (the normaliser): exact under DDP and gradient accumulation.
            total = total + _unwrap(model).anchor_weight(step) * anchor.float().sum()
        with torch.no_grad():
            stats = PretrainStats(
                loss_sum=frame_loss.detach().double().sum(),
                num_masked=float(out.num_masked),
                audio_samples=float(lengths.sum()),
                utterances=float(len(lengths)),
                layer_loss_sum=out.losses.detach().double().sum(0),
                codebook=out.stats,
            )
            if anchor is not None:
                stats.anchor_loss_sum = anchor.detach().double().sum()
                stats.anchor_frames = float(anchor.numel())
        return total, stats

    def post_step(self, model: nn.Module, step: int, stats: PretrainStats) -> None:
        was_frozen = model.is_frozen(step - 1)
        model.post_step(step, stats.codebook)
        if model.is_frozen(step) and not was_frozen:
            log.info("step %d: teacher, feature extractor and projection frozen", step)

    def metrics(
        self, model: nn.Module, stats: PretrainStats, *, steps: int, seconds: float, step: int
    ) -> dict[str, Any]:
        sample_rate = self.cfg.data.sample_rate
        steps = max(steps, 1)
        num_masked = float(stats.num_masked)
        masked = max(num_masked, 1)
        audio = float(stats.audio_samples)
        out: dict[str, Any] = {
            "loss": float(stats.loss_sum) / masked,
            "masked_frames_per_step": num_masked / steps,
            "batch_seconds": audio / sample_rate / steps,
            "utterances_per_step": float(stats.utterances) / steps,
            "audio_seconds_per_second": audio / sample_rate / max(seconds, 1e-9),
            "bad_files": int(stats.bad_files),
        }
        if stats.anchor_frames:
            out["anchor_loss"] = float(stats.anchor_loss_sum) / float(stats.anchor_frames)
        out["loss_per_layer"] = (stats.layer_loss_sum.double().cpu() / masked).tolist()
        if stats.counts is not None:
            out["target_ppl"] = perplexity(stats.counts.cpu()).tolist()
            out["active_codewords"] = active_codewords(stats.counts.cpu()).tolist()
        if stats.pred_prob_sum is not None:
            out["pred_ppl"] = perplexity(stats.pred_prob_sum.cpu()).tolist()
        out["ema_decay"] = model.ema_decay(step)
        return out

    def warnings(self, metrics: dict[str, Any]) -> list[str]:
        run = self.cfg.run
        return collapse_warnings(
            metrics,
            codebook_size=self.cfg.model.codebook_size,
            min_active=run.collapse_min_active,
            min_loss=run.collapse_min_loss,
        )


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)

