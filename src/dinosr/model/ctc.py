"""CTC fine-tuning model on the DinoSR student encoder (fairseq ``wav2vec_ctc``; spec FINETUNING.md).

:class:`DinoSRForCTC` is the student of :class:`~dinosr.model.dinosr.DinoSR` with the pretraining modules
removed (teacher, codebooks, prediction heads, acoustic anchor: fairseq's ``remove_pretraining_modules``),
plus dropout and a linear layer to the letter vocabulary. Its submodules carry the student's names
(``feature_extractor``, ``feature_projection``, ``mask_embedding``, ``student``), so the pretrained weights
copy 1:1 (:meth:`DinoSRForCTC.from_dinosr`); the output layer is ``head``.

What fine-tuning changes, as in fairseq:

* the front end (CNN or log-mel) never trains (``feature_grad_mult 0``): it runs under ``no_grad`` and its
  parameters have ``requires_grad=False``; the feature LayerNorm + projection do train;
* the encoder's dropout rates and LayerDrop are *replaced* by the fine-tuning ones in :class:`CTCConfig`
  (fairseq's ``arg_overrides``: ``dropout``, ``attention_dropout``, ``activation_dropout``, ``dropout_input``,
  ``encoder_layerdrop``);
* time masking with the mask embedding and channel masking (zeroed feature channels over all frames), during
  training only (``apply_mask``), time first then channels (data2vec's ``apply_mask``);
* ``freeze_encoder=True`` (fairseq: ``num_updates < freeze_finetune_updates``) runs the whole encoder under
  ``no_grad``: only ``head`` gets gradients.

Input: standardised 16 kHz waveforms, exactly as in pretraining (``(x - mean) / sqrt(var + 1e-5)`` per
utterance, done by ``dinosr.data.audio.load_audio`` / the loaders, never inside the model; fairseq asserts
``task.normalize`` equals the pretraining value).

Blank = vocabulary index 0 (fairseq's ``<s>``/bos, see ``dinosr.data.labels.Dictionary``).

Shapes: B batch, L samples, T frames, D model dim, V vocabulary size, U target length.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinosr.configcheck import check
from dinosr.model.config import ModelConfig
from dinosr.model.dinosr import make_encoder, make_front_end
from dinosr.model.encoder import FeatureProjection, lengths_to_padding_mask
from dinosr.model.masking import compute_span_mask
from dinosr.model.norm import normalise_logmel

if TYPE_CHECKING:
    from dinosr.model.dinosr import DinoSR

# Modules of DinoSR that fine-tuning keeps; everything else (teacher, heads, codebooks, anchor) is dropped.
STUDENT_PREFIXES = ("feature_extractor.", "feature_projection.", "mask_embedding", "student.")


@dataclass(frozen=True)
class CTCConfig:
    """Fine-tuning hyper-parameters of the CTC model (fairseq ``Wav2Vec2AsrConfig`` + ``base_100h.yaml``).

    The dropout/LayerDrop fields replace the pretrained model's (fairseq ``arg_overrides``); the per-split
    fairseq values (10m/1h: mask_channel_prob 0.25, layerdrop 0.1; 10h: 0.5, 0.05; 100h: 0.5, 0.1) live in
    the fine-tuning configs. Defaults = base_100h.
    """

    final_dropout: float = 0.0  # final_dropout: before the output projection
    dropout: float = 0.0  # dropout (Wav2Vec2AsrConfig default, overrides the encoder's 0.1)
    attention_dropout: float = 0.0  # attention_dropout
    activation_dropout: float = 0.1  # activation_dropout (base_*.yaml)
    dropout_input: float = 0.0  # dropout_input
    layerdrop: float = 0.1  # layerdrop -> encoder_layerdrop (base_100h; 10h: 0.05)
    mask_prob: float = 0.65  # mask_prob (time masking, spans filled with the mask embedding)
    mask_length: int = 10  # mask_length
    min_masks: int = 1  # data2vec/DinoSR apply_mask: min_masks=1 (wav2vec 2.0 uses 2)
    require_same_masks: bool = True  # require_same_masks
    mask_channel_prob: float = 0.5  # mask_channel_prob (channels zeroed across all frames)
    mask_channel_length: int = 64  # mask_channel_length

    def __post_init__(self) -> None:
        for name in ("final_dropout", "dropout", "attention_dropout", "activation_dropout", "dropout_input"):
            check(0.0 <= getattr(self, name) < 1.0, f"ctc {name} must be in [0, 1)")
        check(0.0 <= self.layerdrop < 1.0, "ctc layerdrop must be in [0, 1)")
        check(0.0 <= self.mask_prob <= 1.0, "ctc mask_prob must be in [0, 1]")
        check(0.0 <= self.mask_channel_prob <= 1.0, "ctc mask_channel_prob must be in [0, 1]")
        check(self.mask_length >= 1, "ctc mask_length must be >= 1")
        check(self.mask_channel_length >= 1, "ctc mask_channel_length must be >= 1")
        check(self.min_masks >= 0, "ctc min_masks must be >= 0")

    def encoder_overrides(self) -> dict[str, float]:
        """The ModelConfig fields this config replaces (fairseq ``arg_overrides``)."""
        return {
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "activation_dropout": self.activation_dropout,
            "dropout_input": self.dropout_input,
            "layerdrop": self.layerdrop,
        }


class CTCOutput(NamedTuple):
    """Result of :meth:`DinoSRForCTC.forward`.

    logits: (B, T, V) un-normalised scores in the compute dtype (log_softmax them in fp32).
    frame_lengths: (B,) int64 valid frames per utterance (T for every row without ``lengths``).
    padding_mask: (B, T) bool, True = padded frame, or None when nothing is padded.
    """

    logits: Tensor
    frame_lengths: Tensor
    padding_mask: Tensor | None


class DinoSRForCTC(nn.Module):
    """DinoSR student encoder + dropout + Linear(D, V) trained with CTC (see the module docstring)."""

    def __init__(self, model_cfg: ModelConfig, vocab_size: int, ctc_cfg: CTCConfig | None = None) -> None:
        """Args:
        model_cfg: the pretrained model's architecture; its dropout/LayerDrop fields are replaced by
            ``ctc_cfg``'s (the resulting config is ``self.cfg``).
        vocab_size: output classes including the blank (``len(dictionary)``).
        ctc_cfg: fine-tuning hyper-parameters (default: fairseq base_100h).
        """
        super().__init__()
        check(vocab_size >= 2, f"vocab_size must be >= 2 (blank + at least one symbol), got {vocab_size}")
        self.ctc_cfg = ctc_cfg if ctc_cfg is not None else CTCConfig()
        cfg = replace(model_cfg, **self.ctc_cfg.encoder_overrides())
        self.cfg = cfg
        self.vocab_size = vocab_size
        d = cfg.embed_dim
        # The student's modules, built in the same order as DinoSR's (same init RNG use).
        self.feature_extractor = make_front_end(cfg)
        self.feature_extractor.requires_grad_(False)  # never trained (fairseq feature_grad_mult 0)
        self.feature_projection = FeatureProjection(cfg.extractor_dim, d, logmel_conv=cfg.logmel_conv)
        self.mask_embedding = nn.Parameter(torch.empty(d).uniform_())
        self.dropout_input = nn.Dropout(cfg.dropout_input)
        self.student = make_encoder(cfg)
        self.final_dropout = nn.Dropout(self.ctc_cfg.final_dropout)
        self.head = nn.Linear(d, vocab_size)
        # fairseq's Linear(): Xavier-uniform weight, zero bias.
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_dinosr(cls, model: DinoSR, vocab_size: int, ctc_cfg: CTCConfig | None = None) -> DinoSRForCTC:
        """A CTC model whose encoder is ``model``'s student (weights copied; ``head`` freshly initialised).

        Teacher, codebooks, prediction heads and anchor are not copied. Raises if any student weight of
        ``model`` has no place in the CTC model or the other way round (architecture mismatch).
        """
        ctc = cls(model.cfg, vocab_size, ctc_cfg)
        source = {k: v for k, v in model.state_dict().items() if k.startswith(STUDENT_PREFIXES)}
        target = {k for k in ctc.state_dict() if not k.startswith("head.")}
        if set(source) != target:
            missing, extra = sorted(target - set(source)), sorted(set(source) - target)
            raise ValueError(
                f"student weights do not fit the CTC model: missing {missing}, unexpected {extra}"
            )
        result = ctc.load_state_dict(source, strict=False)
        if result.unexpected_keys or set(result.missing_keys) != {"head.weight", "head.bias"}:
            raise ValueError(f"weight copy left keys unused: {result}")  # cannot happen after the check above
        ctc.to(next(model.parameters()).device)
        return ctc

    def param_groups(self) -> list[dict]:
        """Trainable parameters: ``"encoder"`` (feature projection, mask embedding, transformer), ``"head"``.

        The front end is in neither group: it never trains.
        """
        encoder = [*self.feature_projection.parameters(), self.mask_embedding, *self.student.parameters()]
        head = list(self.head.parameters())
        return [{"name": "encoder", "params": encoder}, {"name": "head", "params": head}]

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """(B,) sample counts -> (B,) frame counts after the front end."""
        return self.feature_extractor.output_lengths(lengths)

    # ----------------------------------------------------------------------------- masking
    def sample_masks(
        self, batch_size: int, num_frames: int, padding_mask: Tensor | None = None
    ) -> tuple[Tensor | None, Tensor | None]:
        """Fine-tuning masks from the global torch RNG (CPU; checkpointed by the trainer).

        Returns (time_mask (B, T) bool or None when mask_prob = 0, channel_mask (B, D) bool or None when
        mask_channel_prob = 0). Time spans never cover padded frames; channel spans use no padding and no
        minimum count (fairseq ``compute_mask_indices((B, C), None, ...)``).
        """
        c = self.ctc_cfg
        time_mask = channel_mask = None
        if c.mask_prob > 0:
            time_mask = compute_span_mask(
                batch_size,
                num_frames,
                mask_prob=c.mask_prob,
                mask_length=c.mask_length,
                min_masks=c.min_masks,
                require_same_masks=c.require_same_masks,
                padding_mask=None if padding_mask is None else padding_mask.cpu(),
            )
        if c.mask_channel_prob > 0:
            channel_mask = compute_span_mask(
                batch_size,
                self.cfg.embed_dim,
                mask_prob=c.mask_channel_prob,
                mask_length=c.mask_channel_length,
                min_masks=0,
                require_same_masks=c.require_same_masks,
            )
        return time_mask, channel_mask

    # ----------------------------------------------------------------------------- forward
    def encode(
        self, waveforms: Tensor, lengths: Tensor | None = None, *, apply_mask: bool = False
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Encoder output before the final dropout and head.

        Args:
            waveforms: (B, L) standardised audio; lengths: (B,) valid samples or None.
            apply_mask: sample and apply time + channel masks (training).

        Returns:
            (hidden (B, T, D) = last layer's residual stream, frame_lengths (B,), padding_mask (B, T) | None).
        """
        with torch.no_grad():  # the front end never trains
            x = self.feature_extractor(waveforms)
        b, t, _ = x.shape
        if lengths is None:
            frame_lengths = torch.full((b,), t, dtype=torch.long, device=x.device)
            padding_mask = None
        else:
            frame_lengths = self.frame_lengths(lengths.to(x.device))
            padding_mask = lengths_to_padding_mask(frame_lengths, t)
        if self.cfg.logmel_cmn:
            x = normalise_logmel(x, padding_mask, variance=self.cfg.logmel_cvn)
        x = self.feature_projection(x, padding_mask)
        x = self.dropout_input(x)
        if apply_mask:
            time_mask, channel_mask = self.sample_masks(b, t, padding_mask)
            if time_mask is not None:
                x = torch.where(time_mask[..., None].to(x.device), self.mask_embedding.to(x.dtype), x)
            if channel_mask is not None:
                x = x.masked_fill(channel_mask[:, None, :].to(x.device), 0.0)
        out = self.student(x, padding_mask)
        return out.residuals[-1], frame_lengths, padding_mask

    def forward(
        self,
        waveforms: Tensor,
        lengths: Tensor | None = None,
        *,
        apply_mask: bool | None = None,
        freeze_encoder: bool = False,
    ) -> CTCOutput:
        """Letter logits per frame.

        Args:
            waveforms: (B, L) standardised audio.
            lengths: (B,) valid samples per utterance, or None (no padding).
            apply_mask: time + channel masking; None = ``self.training``.
            freeze_encoder: run the encoder under no_grad (only ``head`` trains; fairseq
                ``freeze_finetune_updates``). Dropout and LayerDrop still follow the module's mode.
        """
        if apply_mask is None:
            apply_mask = self.training
        # nullcontext, not enable_grad: an outer no_grad (inference) must stay in force.
        with torch.no_grad() if freeze_encoder else contextlib.nullcontext():
            hidden, frame_lengths, padding_mask = self.encode(waveforms, lengths, apply_mask=apply_mask)
        logits = self.head(self.final_dropout(hidden))
        return CTCOutput(logits, frame_lengths, padding_mask)


def ctc_loss_sum(
    logits: Tensor,
    frame_lengths: Tensor,
    targets: Tensor | list[list[int]] | list[Tensor],
    target_lengths: Tensor | None = None,
    *,
    blank: int = 0,
) -> Tensor:
    """Sum over the batch of the per-sentence CTC loss (fairseq ``ctc`` criterion before ``sentence_avg``).

    log_softmax in fp32, ``reduction="sum"``, ``zero_infinity=True`` (an utterance too short for its target
    contributes 0). The trainer divides by the global number of sentences (fairseq ``sentence_avg: true``);
    torch's ``reduction="mean"`` would also divide each sentence by its target length, which fairseq does not.

    Args:
        logits: (B, T, V) scores (or log-probabilities: log_softmax is idempotent).
        frame_lengths: (B,) valid frames.
        targets: (B, U) padded label ids with ``target_lengths``, or a list of B label-id sequences.
        target_lengths: (B,) labels per sentence; required for a padded tensor, ignored for a list.
        blank: blank index (0 = fairseq's bos).

    Returns:
        fp32 scalar.
    """
    if isinstance(targets, Tensor):
        if target_lengths is None:
            raise ValueError("target_lengths is required with padded targets")
        target_lengths = target_lengths.long()
        # Flattened, padding removed: independent of the padding value.
        valid = torch.arange(targets.shape[1], device=targets.device)[None, :] < target_lengths[:, None].to(
            targets.device
        )
        flat = targets[valid].long()
    else:
        seqs = [torch.as_tensor(t, dtype=torch.long).flatten() for t in targets]
        target_lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        flat = torch.cat(seqs) if seqs else torch.zeros(0, dtype=torch.long)
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (T, B, V)
    with torch.backends.cudnn.flags(enabled=False):  # cuDNN's CTC needs int32 CPU targets; use the native one
        return F.ctc_loss(
            log_probs,
            flat.to(logits.device),
            frame_lengths.long(),
            target_lengths.to(logits.device),
            blank=blank,
            reduction="sum",
            zero_infinity=True,
        )
