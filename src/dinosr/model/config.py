"""Model and masking hyper-parameters. Defaults are the official DinoSR base model (spec section 3).

Field comments give the matching fairseq option where one exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from dinosr.configcheck import check

# (out_channels, kernel, stride) per conv block; fairseq: conv_feature_layers
BASE_CONV_LAYERS: tuple[tuple[int, int, int], ...] = (
    (512, 10, 5),
    (512, 3, 2),
    (512, 3, 2),
    (512, 3, 2),
    (512, 3, 2),
    (512, 2, 2),
    (512, 2, 2),
)

# frontend="logmel": 25 ms windows every 20 ms, the official CNN's receptive field and hop (model/logmel.py)
LOGMEL_WINDOW, LOGMEL_HOP = 400, 320


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and objective of DinoSR (official defaults)."""

    conv_layers: tuple[tuple[int, int, int], ...] = BASE_CONV_LAYERS  # fairseq: conv_feature_layers
    frontend: Literal["conv", "logmel"] = "conv"  # conv = official CNN; logmel = fixed log-mel (CPU option)
    n_mels: int = 80  # mel bands of frontend="logmel"
    logmel_cmn: bool = False  # logmel only: subtract each utterance's mean log-mel per band (channel)
    logmel_cvn: bool = False  # with logmel_cmn: also divide each band by its per-utterance std (CMVN)
    logmel_conv: int = 0  # logmel only: channels of a 2-layer conv over (frame, band) before the projection
    embed_dim: int = 768  # encoder_embed_dim
    num_layers: int = 12  # encoder_layers
    num_heads: int = 12  # encoder_attention_heads
    ffn_dim: int = 3072  # encoder_ffn_embed_dim
    qkv_bias: bool = True  # official: biased q/k/v; spidr default: False
    pos_conv_kernel: int = 95  # conv_pos (split over pos_conv_depth layers: 95 // 5 = 19)
    pos_conv_groups: int = 16  # conv_pos_groups
    pos_conv_depth: int = 5  # pos_conv_depth
    dropout: float = 0.1  # dropout
    attention_dropout: float = 0.1  # attention_dropout
    activation_dropout: float = 0.0  # activation_dropout
    dropout_input: float = 0.0  # dropout_input
    layerdrop: float = 0.05  # encoder_layerdrop
    # --- objective
    num_codebook_layers: int = 8  # average_top_k_layers: top-N teacher layers get a codebook each
    codebook_size: int = 256  # codebook_size
    codebook_decay: float = 0.9  # codebook_init_decay / codebook_end_decay
    head_placement: Literal["final", "intermediate"] = "final"  # final = DinoSR, intermediate = SpidR
    teacher_init: Literal["copy", "reinit"] = "copy"  # copy = official, reinit = spidr
    ema_decay: float = 0.999  # ema_decay
    ema_end_decay: float = 0.9999  # ema_end_decay
    ema_anneal_end_step: int = 30000  # ema_anneal_end_step
    freeze_teacher_step: int = 200001  # freeze_teacher_step (spidr: 200000)
    # --- small-batch remedies (dinosr.model.remedies, research/small_batch.md); defaults = official = off
    codebook_init: Literal["random", "kmeans"] = "random"  # kmeans: k-means++ on the first step's targets
    codebook_restart_steps: int = 0  # >0: move codewords unused for this many steps onto recent targets
    codebook_sample_frames: int = 1024  # targets per micro-batch and codebook kept for init / restarts
    anchor_units: int = 0  # >0: acoustic anchor head predicting this many log-mel k-means units (anchor.py)
    anchor_weight: float = 1.0  # per anchor frame, against DinoSR's per-masked-frame loss (see anchor.py)
    anchor_frames: Literal["masked", "all"] = "masked"  # frames the anchor head is trained on
    anchor_mels: int = 40  # mel bands of the anchor features
    anchor_context: int = 1  # frames stacked on each side of the anchor features
    anchor_fit_minutes: float = 10.0  # training speech the anchor k-means is fit on before the first step

    # Removed options (research/small_batch.md: no shipped recipe used them and the ablations did not keep
    # them). Configs of older runs still name them; they load when the value is the one that meant "off"
    # (None: any value, the option had no effect on its own); anything else is a clear ConfigError.
    REMOVED_OPTIONS: ClassVar[dict[str, tuple | None]] = {
        "target_assignment": ("nearest",),
        "sinkhorn_iters": None,
        "sinkhorn_temperature": None,
        "anchor_until_step": (0,),
    }

    def __post_init__(self) -> None:
        check(len(self.conv_layers) > 0, "conv_layers must not be empty")
        check(self.n_mels >= 1, "n_mels must be >= 1")
        check(not self.logmel_cmn or self.frontend == "logmel", "logmel_cmn needs frontend = 'logmel'")
        check(not self.logmel_cvn or self.logmel_cmn, "logmel_cvn needs logmel_cmn = true")
        check(self.logmel_conv >= 0, "logmel_conv must be >= 0")
        check(not self.logmel_conv or self.frontend == "logmel", "logmel_conv needs frontend = 'logmel'")
        check(not self.logmel_conv or self.n_mels >= 4, "logmel_conv needs n_mels >= 4 (two band poolings)")
        check(all(c > 0 and k > 0 and s > 0 for c, k, s in self.conv_layers), "conv_layers must be positive")
        check(self.embed_dim % self.num_heads == 0, "embed_dim must be divisible by num_heads")
        check(self.embed_dim % self.pos_conv_groups == 0, "embed_dim must be divisible by pos_conv_groups")
        check(self.pos_conv_depth >= 1, "pos_conv_depth must be >= 1")
        check(self.pos_conv_kernel >= self.pos_conv_depth, "pos_conv_kernel must be >= pos_conv_depth")
        check(
            1 <= self.num_codebook_layers <= self.num_layers, "need 1 <= num_codebook_layers <= num_layers"
        )
        check(self.codebook_size >= 2, "codebook_size must be >= 2")
        check(0.0 <= self.codebook_decay < 1.0, "codebook_decay must be in [0, 1)")
        for name in ("dropout", "attention_dropout", "activation_dropout", "dropout_input", "layerdrop"):
            check(0.0 <= getattr(self, name) < 1.0, f"{name} must be in [0, 1)")
        check(
            0.0 <= self.ema_decay <= self.ema_end_decay <= 1.0, "need 0 <= ema_decay <= ema_end_decay <= 1"
        )
        check(self.ema_anneal_end_step >= 0, "ema_anneal_end_step must be >= 0")
        check(self.freeze_teacher_step >= 0, "freeze_teacher_step must be >= 0")
        check(self.codebook_restart_steps >= 0, "codebook_restart_steps must be >= 0")
        check(self.codebook_sample_frames >= 1, "codebook_sample_frames must be >= 1")
        check(self.anchor_units >= 0, "anchor_units must be >= 0 (0 = off)")
        check(self.anchor_units != 1, "anchor_units must be 0 (off) or >= 2")
        check(self.anchor_weight >= 0, "anchor_weight must be >= 0")
        check(self.anchor_mels >= 1, "anchor_mels must be >= 1")
        check(self.anchor_context >= 0, "anchor_context must be >= 0")
        check(self.anchor_fit_minutes > 0, "anchor_fit_minutes must be > 0")
        # A head reading an intermediate layer has nothing to read when LayerDrop skips that layer.
        check(
            self.head_placement == "final" or self.layerdrop == 0.0,
            "head_placement='intermediate' (SpidR) requires layerdrop = 0",
        )

    @property
    def needs_codebook_samples(self) -> bool:
        """Whether a remedy needs raw teacher targets in the codebook statistics."""
        return self.codebook_init == "kmeans" or self.codebook_restart_steps > 0

    @property
    def pos_conv_layer_kernel(self) -> int:
        """Kernel of each positional conv layer: max(3, conv_pos // depth) (fairseq)."""
        return max(3, self.pos_conv_kernel // self.pos_conv_depth)

    @property
    def frontend_kernels_strides(self) -> tuple[tuple[int, int], ...]:
        """(kernel, stride) in samples of each front-end stage: the CNN blocks, or the log-mel window."""
        if self.frontend == "logmel":
            return ((LOGMEL_WINDOW, LOGMEL_HOP),)
        return tuple((k, s) for _, k, s in self.conv_layers)

    @property
    def hop_length(self) -> int:
        """Samples per frame (the product of the strides): 320 (20 ms at 16 kHz) for every shipped config."""
        return math.prod(s for _, s in self.frontend_kernels_strides)

    @property
    def receptive_field(self) -> int:
        """Samples one frame sees: 400 for the official CNN and the log-mel front end."""
        field = 1
        for kernel, stride in reversed(self.frontend_kernels_strides):
            field = (field - 1) * stride + kernel
        return field

    @property
    def extractor_dim(self) -> int:
        """Channels of the front end's output (CNN channels, or mel bands)."""
        return self.n_mels if self.frontend == "logmel" else self.conv_layers[-1][0]

    @property
    def codebook_layers(self) -> tuple[int, ...]:
        """1-based transformer layers that get a codebook (the top num_codebook_layers)."""
        return tuple(range(self.num_layers - self.num_codebook_layers + 1, self.num_layers + 1))


@dataclass(frozen=True)
class MaskingConfig:
    """Span masking of the student input (spec section 3.4)."""

    mask_prob: float = 0.8  # mask_prob
    mask_length: int = 10  # mask_length
    min_masks: int = 1  # official 1, spidr 2
    require_same_masks: bool = True  # require_same_masks

    def __post_init__(self) -> None:
        check(0.0 < self.mask_prob <= 1.0, "mask_prob must be in (0, 1]")
        check(self.mask_length >= 1, "mask_length must be >= 1")
        check(self.min_masks >= 0, "min_masks must be >= 0")


def tiny_model_config() -> ModelConfig:
    """The tiny recipe's architecture (sizes of configs/tiny.toml) with the official objective: for tests.

    Not the tiny *recipe*: that adds the log-mel front end, the acoustic anchor, the codebook remedies and a
    short EMA schedule (tests/test_config.py pins the difference), so a tiny-recipe checkpoint does not load
    into ``DinoSR(tiny_model_config())``. Load one with ``dinosr.load_model(path)``; build the recipe's model
    with ``DinoSR(load_preset("tiny").model)`` (``dinosr.configs``).
    """
    return ModelConfig(
        conv_layers=(
            (128, 10, 5),
            (128, 3, 2),
            (128, 3, 2),
            (128, 3, 2),
            (128, 3, 2),
            (128, 2, 2),
            (128, 2, 2),
        ),
        embed_dim=256,
        num_layers=4,
        num_heads=4,
        ffn_dim=1024,
        pos_conv_kernel=95,
        pos_conv_groups=16,
        pos_conv_depth=5,
        num_codebook_layers=3,
        codebook_size=64,  # the tiny recipe on a 40-phone, 46-min corpus (research/small_batch.md section 7)
    )
