"""A model configuration small enough for unit tests, shared by the model tests."""

from dataclasses import replace

from dinosr.model import ModelConfig, tiny_model_config
from dinosr.model.config import BASE_CONV_LAYERS


def micro_model_config(**overrides) -> ModelConfig:
    """Base conv strides (20 ms frames, so frame arithmetic is the real one) with tiny widths."""
    base = replace(
        tiny_model_config(),
        conv_layers=tuple((16, k, s) for _, k, s in BASE_CONV_LAYERS),
        embed_dim=32,
        num_layers=3,
        num_heads=2,
        ffn_dim=64,
        pos_conv_groups=4,
        pos_conv_kernel=15,  # 3 per layer: padding crosses the utterance end at every one of the 5 layers
        num_codebook_layers=2,
        codebook_size=16,
    )
    return replace(base, **overrides)
