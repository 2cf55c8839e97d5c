"""DinoSR model: encoder components, masking, codebooks, EMA teacher and the DinoSR module."""

from dinosr.model.codebook import Codebooks, CodebookStats
from dinosr.model.config import MaskingConfig, ModelConfig, tiny_model_config
from dinosr.model.dinosr import (
    DinoSR,
    DinoSROutput,
    EncoderOutput,
    dinosr_base,
    dinosr_tiny,
    instance_norm_frames,
)
from dinosr.model.masking import compute_span_mask
from dinosr.model.teacher import ema_decay, ema_update, is_frozen

__all__ = [
    "CodebookStats",
    "Codebooks",
    "DinoSR",
    "DinoSROutput",
    "EncoderOutput",
    "MaskingConfig",
    "ModelConfig",
    "compute_span_mask",
    "dinosr_base",
    "dinosr_tiny",
    "ema_decay",
    "ema_update",
    "instance_norm_frames",
    "is_frozen",
    "tiny_model_config",
]
