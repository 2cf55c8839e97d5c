"""DinoSR: masked prediction of online-clustered EMA-teacher targets (spec sections 2-7, 9).

The forward pass is pure: it computes targets from the *current* teacher and codebooks, the per-frame
losses and this batch's codebook statistics, and changes no parameter or buffer. All state changes
(codebook EMA, teacher EMA, freezing) happen in :meth:`DinoSR.post_step`, called once per optimizer step.

Shapes: B batch, L samples, T frames, D model dim, K codebooks (= target layers), V codewords,
M masked frames.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinosr.model.anchor import AcousticAnchor
from dinosr.model.codebook import Codebooks, CodebookStats
from dinosr.model.config import MaskingConfig, ModelConfig, tiny_model_config
from dinosr.model.encoder import (
    FeatureExtractor,
    FeatureProjection,
    Transformer,
    TransformerOutput,
    lengths_to_padding_mask,
)
from dinosr.model.logmel import LogMelFrontend
from dinosr.model.masking import compute_span_mask
from dinosr.model.norm import instance_norm_frames, normalise_logmel
from dinosr.model.remedies import CodebookUpkeep, sample_frames
from dinosr.model.teacher import ema_decay, ema_update, is_frozen, make_teacher


def make_front_end(cfg: ModelConfig) -> FeatureExtractor | LogMelFrontend:
    """The waveform front end of ``cfg``: the conv feature extractor, or the log-mel front end."""
    return LogMelFrontend(cfg.n_mels) if cfg.frontend == "logmel" else FeatureExtractor(cfg.conv_layers)


def make_encoder(cfg: ModelConfig) -> Transformer:
    """The transformer encoder of ``cfg`` (the student; also the CTC model's encoder)."""
    return Transformer(
        cfg.embed_dim,
        cfg.num_layers,
        cfg.num_heads,
        cfg.ffn_dim,
        pos_conv_kernel=cfg.pos_conv_layer_kernel,
        pos_conv_groups=cfg.pos_conv_groups,
        pos_conv_depth=cfg.pos_conv_depth,
        dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout,
        activation_dropout=cfg.activation_dropout,
        layerdrop=cfg.layerdrop,
        qkv_bias=cfg.qkv_bias,
    )


class EncoderOutput(NamedTuple):
    """Result of :meth:`DinoSR.encode`.

    layer_input: (B, T, D) transformer input after pos-conv + encoder LayerNorm ("layer 0").
    residuals: per layer (B, T, D) residual-stream outputs (after the layer's final LayerNorm).
    ffn: per layer (B, T, D) FFN outputs before residual (the target tensor); None for a LayerDrop-skipped
        layer (student in training mode only).
    padding_mask: (B, T) bool, True = padded, or None.
    """

    layer_input: Tensor
    residuals: list[Tensor]
    ffn: list[Tensor | None]
    padding_mask: Tensor | None


@dataclass
class DinoSROutput:
    """Result of :meth:`DinoSR.forward`.

    losses: (M, K) fp32 cross-entropy per masked frame and codebook layer.
    num_masked: M.
    stats: codebook statistics of this batch (apply with ``post_step`` after summing / all-reducing).
    mask: (B, T) bool, the masked frames used.
    padding_mask: (B, T) bool (True = padded) or None.
    codes: (K, M) int64 target codeword of each masked frame.
    anchor_losses: fp32 cross-entropy of the acoustic anchor head per anchor frame (the M masked frames, or
        every valid frame with ``anchor_frames="all"``) when ``anchor_units > 0``, else None.
    """

    losses: Tensor
    num_masked: int
    stats: CodebookStats
    mask: Tensor
    padding_mask: Tensor | None
    codes: Tensor
    anchor_losses: Tensor | None = None


class DinoSR(nn.Module):
    """DinoSR student + EMA teacher + online codebooks + prediction heads (see docs/DESIGN.md)."""

    def __init__(self, cfg: ModelConfig, masking_cfg: MaskingConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.masking_cfg = masking_cfg if masking_cfg is not None else MaskingConfig()
        d = cfg.embed_dim
        self.feature_extractor = make_front_end(cfg)
        self.feature_projection = FeatureProjection(cfg.extractor_dim, d, logmel_conv=cfg.logmel_conv)
        self.mask_embedding = nn.Parameter(torch.empty(d).uniform_())  # U[0,1) (spec 3.4)
        self.dropout_input = nn.Dropout(cfg.dropout_input)
        self.student = make_encoder(cfg)
        self.teacher = make_teacher(self.student, reinit=cfg.teacher_init == "reinit")
        k = cfg.num_codebook_layers
        self.heads = nn.ModuleList(nn.Linear(d, cfg.codebook_size) for _ in range(k))
        self.codebooks = Codebooks(k, cfg.codebook_size, d)
        # Small-batch remedies (research/small_batch.md); absent in the official recipe (same state dict).
        self.codebook_upkeep = (
            CodebookUpkeep(
                k,
                cfg.codebook_size,
                kmeans_init=cfg.codebook_init == "kmeans",
                restart_steps=cfg.codebook_restart_steps,
            )
            if cfg.needs_codebook_samples
            else None
        )
        self.anchor = (
            AcousticAnchor(cfg.anchor_units, d, n_mels=cfg.anchor_mels, context=cfg.anchor_context)
            if cfg.anchor_units > 0
            else None
        )

    # ----------------------------------------------------------------------------- state / schedule
    def train(self, mode: bool = True) -> DinoSR:
        """Set train/eval mode; the teacher always stays in eval mode (no dropout, no LayerDrop)."""
        super().train(mode)
        self.teacher.eval()
        return self

    def is_frozen(self, step: int) -> bool:
        """Whether teacher, feature extractor and projection are frozen after ``step`` updates."""
        return is_frozen(step, self.cfg.freeze_teacher_step)

    def ema_decay(self, step: int) -> float:
        """Teacher EMA decay after ``step`` completed updates (1.0 once frozen)."""
        c = self.cfg
        return ema_decay(
            step,
            start=c.ema_decay,
            end=c.ema_end_decay,
            anneal_end_step=c.ema_anneal_end_step,
            freeze_step=c.freeze_teacher_step,
        )

    def apply_freeze(self, step: int) -> bool:
        """Set requires_grad of the feature extractor + projection from the schedule; returns is_frozen.

        Called by ``post_step``; call it after restoring a checkpoint too (it is idempotent).
        """
        frozen = self.is_frozen(step)
        for module in (self.feature_extractor, self.feature_projection):
            module.requires_grad_(not frozen)
        return frozen

    @torch.no_grad()
    def post_step(self, step: int, stats: CodebookStats | None) -> None:
        """Apply the state updates of one optimizer step (``step`` = completed updates, after the step).

        Codebook EMA from ``stats`` (already summed over micro-batches and ranks), then teacher EMA with
        ``ema_decay(step)`` (pos-conv copied); from the freeze step on the teacher stays fixed and the feature
        extractor + projection stop training. Codebooks keep updating after the freeze (spec 4).
        """
        if stats is not None:
            if self.codebook_upkeep is not None:
                self.codebook_upkeep.apply(self.codebooks, stats, step, self.cfg.codebook_decay)
            else:
                self.codebooks.update(stats.sums, stats.counts, self.cfg.codebook_decay)
        decay = self.ema_decay(step)
        if decay < 1.0:
            ema_update(self.teacher, self.student, decay)
        self.apply_freeze(step)

    def anchor_weight(self, step: int) -> float:
        """Weight of the acoustic anchor loss in the update after ``step`` completed updates (0 = none).

        Constant over the run today; ``step`` keeps the trainer's call site schedule-ready.
        """
        return 0.0 if self.anchor is None else self.cfg.anchor_weight

    def param_groups(self) -> list[dict]:
        """Student parameters: the extractor group (frozen later) and everything else trainable."""
        extractor = [*self.feature_extractor.parameters(), *self.feature_projection.parameters()]
        main = [self.mask_embedding, *self.student.parameters(), *self.heads.parameters()]
        if self.anchor is not None:
            main += list(self.anchor.head.parameters())
        return [{"name": "extractor", "params": extractor}, {"name": "main", "params": main}]

    # ----------------------------------------------------------------------------- encoding
    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """(B,) sample counts -> (B,) frame counts after the CNN."""
        return self.feature_extractor.output_lengths(lengths)

    def features(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(B, L) waveforms -> projected features (B, T, D), padding mask (B, T) (True = padded) or None."""
        x = self.feature_extractor(waveforms)
        padding_mask = None
        if lengths is not None:
            padding_mask = lengths_to_padding_mask(self.frame_lengths(lengths.to(x.device)), x.shape[1])
        if self.cfg.logmel_cmn:
            x = normalise_logmel(x, padding_mask, variance=self.cfg.logmel_cvn)
        return self.feature_projection(x, padding_mask), padding_mask

    def sample_mask(self, batch_size: int, num_frames: int, padding_mask: Tensor | None = None) -> Tensor:
        """(B, T) bool span mask (CPU) from ``masking_cfg`` using the global torch RNG."""
        m = self.masking_cfg
        return compute_span_mask(
            batch_size,
            num_frames,
            mask_prob=m.mask_prob,
            mask_length=m.mask_length,
            min_masks=m.min_masks,
            require_same_masks=m.require_same_masks,
            padding_mask=None if padding_mask is None else padding_mask.cpu(),
        )

    def encode(
        self,
        waveforms: Tensor,
        lengths: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        teacher: bool = False,
        max_layer: int | None = None,
    ) -> EncoderOutput:
        """Per-layer representations of the student (or teacher) transformer.

        Args:
            waveforms: (B, L) standardised audio; lengths: (B,) valid samples or None.
            mask: (B, T) bool frames to replace by the mask embedding (student only).
            teacher: run the EMA teacher instead of the student (always unmasked, no grad).
            max_layer: stop after this many layers.

        Call ``model.eval()`` first for deterministic features (dropout, LayerDrop).
        """
        x, padding_mask = self.features(waveforms, lengths)
        if teacher:
            if mask is not None:
                raise ValueError("the teacher always sees unmasked input")
            with torch.no_grad():
                out = self.teacher(x, padding_mask, max_layer=max_layer)
        else:
            x = self.dropout_input(x)
            if mask is not None:
                x = torch.where(mask[..., None].to(x.device), self.mask_embedding.to(x.dtype), x)
            out = self.student(x, padding_mask, max_layer=max_layer)
        return EncoderOutput(out.layer_input, out.residuals, out.ffn, padding_mask)

    # ----------------------------------------------------------------------------- training forward
    @torch.no_grad()
    def _targets(self, features: Tensor, padding_mask: Tensor | None, mask: Tensor) -> Tensor:
        """Instance-normalised teacher FFN outputs of the top-K layers at masked frames: (K, M, D) fp32."""
        out = self.teacher(features, padding_mask)
        first = self.cfg.num_layers - self.cfg.num_codebook_layers
        return torch.stack([instance_norm_frames(f, padding_mask)[mask] for f in out.ffn[first:]])

    def _logits(self, out: TransformerOutput, mask: Tensor) -> Tensor:
        """Head logits at masked frames: (K, M, V) in the compute dtype."""
        if self.cfg.head_placement == "final":
            h = out.residuals[-1][mask]
            return torch.stack([head(h) for head in self.heads])
        first = self.cfg.num_layers - self.cfg.num_codebook_layers
        return torch.stack([head(f[mask]) for head, f in zip(self.heads, out.ffn[first:])])

    def _anchor_frames(self, mask: Tensor, padding_mask: Tensor | None) -> Tensor:
        """(B, T) bool frames of the acoustic anchor loss: the masked ones, or every valid frame."""
        if self.cfg.anchor_frames == "masked":
            return mask
        return torch.ones_like(mask) if padding_mask is None else ~padding_mask

    def forward(
        self, waveforms: Tensor, lengths: Tensor | None = None, *, mask: Tensor | None = None
    ) -> DinoSROutput:
        """Per-masked-frame losses and codebook statistics; mutates nothing.

        Args:
            waveforms: (B, L) standardised audio.
            lengths: (B,) valid samples per utterance, or None (no padding).
            mask: (B, T) bool frames to mask; None samples one with ``masking_cfg`` (global torch RNG).
                Padded frames are never masked.
        """
        features, padding_mask = self.features(waveforms, lengths)
        b, t, _ = features.shape
        if mask is None:
            mask = self.sample_mask(b, t, padding_mask)
        if mask.shape != (b, t):
            raise ValueError(f"mask shape {tuple(mask.shape)} != frames {(b, t)}")
        mask = mask.to(features.device, torch.bool)
        if padding_mask is not None:
            mask = mask & ~padding_mask

        # Teacher: unmasked features before input dropout (spec 2.3); no gradient into the CNN from here.
        targets = self._targets(features.detach(), padding_mask, mask)
        codes = self.codebooks.assign(targets)

        x = self.dropout_input(features)
        x = torch.where(mask[..., None], self.mask_embedding.to(x.dtype), x)
        student = self.student(x, padding_mask)
        logits = self._logits(student, mask).float()  # CE in fp32 (spec 7)
        k, m, v = logits.shape
        losses = F.cross_entropy(logits.reshape(k * m, v), codes.reshape(k * m), reduction="none")
        anchor_losses = None
        if self.anchor is not None:
            frames = self._anchor_frames(mask, padding_mask)
            anchor_losses = self.anchor.losses(waveforms, padding_mask, frames, student.residuals[-1])

        with torch.no_grad():
            sums, counts = self.codebooks.batch_stats(targets, codes)
            pred_prob_sum = logits.detach().softmax(-1).sum(1)
            samples = valid = None
            if self.codebook_upkeep is not None:
                samples = sample_frames(targets, self.cfg.codebook_sample_frames)
                valid = torch.full((samples.shape[1],), m > 0, dtype=torch.bool, device=samples.device)
        return DinoSROutput(
            losses=losses.view(k, m).t(),
            num_masked=m,
            stats=CodebookStats(sums, counts, pred_prob_sum, samples, valid),
            mask=mask,
            padding_mask=padding_mask,
            codes=codes,
            anchor_losses=anchor_losses,
        )


def dinosr_base(masking_cfg: MaskingConfig | None = None, **overrides) -> DinoSR:
    """Official DinoSR base (12 x 768, 8 codebooks x 256); ``overrides`` replace ModelConfig fields."""
    return DinoSR(ModelConfig(**overrides), masking_cfg)


def dinosr_tiny(masking_cfg: MaskingConfig | None = None, **overrides) -> DinoSR:
    """A CPU-sized DinoSR with the tiny recipe's sizes but the official objective and CNN front end.

    For tests and experiments, not the tiny recipe (see ``tiny_model_config``): a checkpoint of
    configs/tiny.toml loads with ``dinosr.load_model``, not into this model. ``overrides`` replace fields.
    """
    return DinoSR(replace(tiny_model_config(), **overrides), masking_cfg)
