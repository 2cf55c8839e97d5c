"""Config-free building blocks of the DinoSR encoder (spec section 3).

Shapes: B = batch, L = samples, T = frames, C = CNN channels, D = model dim.
Padding masks are boolean (B, T) with True = padded frame (fairseq convention); ``None`` means no padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinosr.model.logmel import LogMelConv

# fairseq init_bert_params: every Linear of the encoder ~ N(0, 0.02), bias 0 (spec 3.7)
BERT_INIT_STD = 0.02


def lengths_to_padding_mask(lengths: Tensor, max_len: int) -> Tensor | None:
    """(B,) valid lengths -> (B, max_len) bool, True = padded; ``None`` when nothing is padded."""
    mask = torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]
    # A data-dependent check, but it lets the common (cropped, unpadded) batch take the mask-free fast path.
    return mask if bool(mask.any()) else None


def _zero_padded(x: Tensor, padding_mask: Tensor | None) -> Tensor:
    """Zero padded frames of x (B, T, D)."""
    if padding_mask is None:
        return x
    return x.masked_fill(padding_mask[..., None], 0.0)


class ConvBlock(nn.Module):
    """Conv1d (no bias, no padding) -> LayerNorm over channels (affine) -> exact GELU, channels-last.

    The convolution runs as one GEMM over the unfolded windows of a (B, T, C) input (bf16 on CPU: oneDNN's
    NHWC conv on the same memory): the LayerNorm over channels then needs no transposes and the GELU sees
    contiguous memory. On CPU this makes the 512-channel extractor's forward + backward about 1.5x faster
    than conv1d with (B, C, T) transposes (docs/performance.md).
    ``self.conv`` only holds the weight, so the state-dict keys are those of nn.Conv1d.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, bias=False)
        self.layer_norm = nn.LayerNorm(out_channels)
        nn.init.kaiming_normal_(self.conv.weight)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T_in, C_in) -> (B, T_out, C_out)."""
        if x.device.type == "cpu" and _computes_in_bf16(x):
            return F.gelu(self.layer_norm(self._conv_nhwc(x)))
        batch, _, in_channels = x.shape
        weight = self.conv.weight  # (C_out, C_in, k)
        kernel, stride = self.conv.kernel_size[0], self.conv.stride[0]
        # (B, T_out, C_in, k) windows flattened channel-major, the order of weight's last two dimensions.
        windows = x.unfold(1, kernel, stride).reshape(batch, -1, in_channels * kernel)
        x = windows @ weight.reshape(weight.shape[0], -1).t()
        return F.gelu(self.layer_norm(x))

    def _conv_nhwc(self, x: Tensor) -> Tensor:
        """The same convolution by oneDNN's bf16 NHWC kernel: (B, T, C) is already the memory layout of a
        channels-last (B, C, 1, T) image, so neither the input nor the output is copied. In bf16 on CPU it
        beats the unfolded GEMM (which pays a copy of the windows); in fp32 it does not
        (docs/performance.md)."""
        image = x.transpose(1, 2).unsqueeze(2)  # (B, C_in, 1, T), channels-last strides
        out = F.conv2d(image, self.conv.weight.unsqueeze(2), stride=(1, self.conv.stride[0]))
        return out.squeeze(2).transpose(1, 2)  # (B, T_out, C_out), contiguous


def _computes_in_bf16(x: Tensor) -> bool:
    """Whether a conv on ``x`` runs in bf16: a bf16 tensor, or CPU autocast to bf16."""
    if x.dtype == torch.bfloat16:
        return True
    device = x.device.type
    return torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16


class FeatureExtractor(nn.Module):
    """Waveform CNN in fairseq's ``layer_norm`` mode (spec 3.2): (B, L) -> (B, T, C)."""

    def __init__(self, conv_layers: Sequence[tuple[int, int, int]]) -> None:
        """Args: conv_layers: (out_channels, kernel, stride) per block."""
        super().__init__()
        self.kernels_strides = [(k, s) for _, k, s in conv_layers]
        blocks, in_channels = [], 1
        for out_channels, kernel, stride in conv_layers:
            blocks.append(ConvBlock(in_channels, out_channels, kernel, stride))
            in_channels = out_channels
        self.conv_layers = nn.ModuleList(blocks)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """(B,) sample counts -> (B,) frame counts: T <- floor((T - k) / s) + 1 per block, clamped at 0."""
        lengths = lengths.long()
        for kernel, stride in self.kernels_strides:
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        return lengths.clamp(min=0)

    def forward(self, waveforms: Tensor) -> Tensor:
        """(B, L) standardised waveforms -> (B, T, C) features."""
        x = waveforms[:, :, None]  # (B, L, 1): channels-last all the way through
        for block in self.conv_layers:
            x = block(x)
        return x


class FeatureProjection(nn.Module):
    """LayerNorm(C) -> Linear(C, D) with PyTorch default init (spec 3.3).

    ``logmel_conv`` > 0 (log-mel front end only): a trainable `LogMelConv` with that many channels runs
    first, and the LayerNorm and Linear take its output.
    """

    def __init__(self, in_dim: int, out_dim: int, *, logmel_conv: int = 0) -> None:
        super().__init__()
        self.conv = LogMelConv(in_dim, logmel_conv) if logmel_conv else None
        if self.conv is not None:
            in_dim = self.conv.out_dim
        self.layer_norm = nn.LayerNorm(in_dim)
        self.projection = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """(B, T, C) -> (B, T, D); ``padding_mask`` (B, T) matters only to the conv."""
        if self.conv is not None:
            x = self.conv(x, padding_mask)
        return self.projection(self.layer_norm(x))


class PositionalConv(nn.Module):
    """Stack of grouped convs, each -> non-affine LayerNorm -> GELU; returns x + stack(x) (spec 3.5).

    Padded frames are zeroed before the first conv and after every block, so a padded utterance sees the
    same zeros at its end as the conv's own zero padding does for an unpadded one (batch == singles).
    """

    def __init__(self, dim: int, kernel: int, groups: int, depth: int) -> None:
        """Args: kernel: per-layer kernel (fairseq: max(3, conv_pos // depth))."""
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups) for _ in range(depth)
        )
        # fairseq SamePad: an even kernel yields one extra frame, dropped at the end.
        self.trim = 1 if kernel % 2 == 0 else 0
        self.dim = dim

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """(B, T, D) -> (B, T, D)."""
        y = _zero_padded(x, padding_mask)
        for conv in self.convs:
            y = conv(y.transpose(1, 2))
            if self.trim:
                y = y[..., : -self.trim]
            y = F.gelu(F.layer_norm(y.transpose(1, 2), (self.dim,)))
            y = _zero_padded(y, padding_mask)
        return x + y


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused q/k/v projection and ``scaled_dot_product_attention``."""

    def __init__(self, dim: int, num_heads: int, *, dropout: float = 0.0, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)  # rows ordered q, k, v (spec 12.3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """(B, T, D) -> (B, T, D). attn_mask: (B, 1, 1, T) bool, True = key takes part."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        if p > 0 and q.dtype in (torch.bfloat16, torch.float16):
            out = half_attention_with_dropout(q, k, v, attn_mask, p)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


def half_attention_with_dropout(
    q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, p: float
) -> Tensor:
    """Softmax attention with dropout on the weights, for bf16/fp16 q, k, v (B, H, T, Dh) in training.

    What ``scaled_dot_product_attention`` computes, written out: with dropout, SDPA has no fused CPU kernel
    and its math path upcasts q, k, v to fp32; here the two products stay in the half type (fp32 only for
    the softmax), about 2x faster per layer on CPU (docs/performance.md).
    """
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    weights = F.dropout(torch.softmax(scores.float(), dim=-1).to(q.dtype), p, training=True)
    return weights @ v


class TransformerLayer(nn.Module):
    """Post-LN layer: h = LN(x + Drop(MHSA(x))); f = fc2(Drop(GELU(fc1(h)))); x' = LN(h + Drop(f))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        *,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        activation_dropout: float = 0.0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.attention = SelfAttention(dim, num_heads, dropout=attention_dropout, qkv_bias=qkv_bias)
        self.layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.activation_dropout = nn.Dropout(activation_dropout)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, T, D) -> (residual-stream output (B, T, D), FFN output f before dropout/residual (B, T, D))."""
        h = self.layer_norm(x + self.dropout(self.attention(x, attn_mask)))
        f = self.fc2(self.activation_dropout(F.gelu(self.fc1(h))))
        return self.final_layer_norm(h + self.dropout(f)), f


class TransformerOutput(NamedTuple):
    """Per-layer outputs of :class:`Transformer`.

    layer_input: (B, T, D) input of layer 1 (after pos-conv and the encoder LayerNorm, before dropout).
    residuals: one (B, T, D) per run layer: the residual stream after the layer's final LayerNorm.
    ffn: one (B, T, D) per run layer: fc2 output before dropout/residual (the target tensor, spec 5);
        ``None`` for a layer skipped by LayerDrop (only possible in training mode).
    """

    layer_input: Tensor
    residuals: list[Tensor]
    ffn: list[Tensor | None]


class Transformer(nn.Module):
    """Positional conv -> LayerNorm -> dropout -> post-LN layers with LayerDrop (spec 3.6)."""

    def __init__(
        self,
        dim: int,
        num_layers: int,
        num_heads: int,
        ffn_dim: int,
        *,
        pos_conv_kernel: int = 19,
        pos_conv_groups: int = 16,
        pos_conv_depth: int = 5,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        activation_dropout: float = 0.0,
        layerdrop: float = 0.0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.pos_conv = PositionalConv(dim, pos_conv_kernel, pos_conv_groups, pos_conv_depth)
        self.layer_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.layerdrop = layerdrop
        self.layers = nn.ModuleList(
            TransformerLayer(
                dim,
                num_heads,
                ffn_dim,
                dropout=dropout,
                attention_dropout=attention_dropout,
                activation_dropout=activation_dropout,
                qkv_bias=qkv_bias,
            )
            for _ in range(num_layers)
        )
        self.reset_linear_parameters()

    @torch.no_grad()
    def reset_linear_parameters(self) -> None:
        """BERT init of every Linear in the layers: N(0, 0.02) weights, zero biases (fairseq, spec 3.7)."""
        for module in self.layers.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, BERT_INIT_STD)
                if module.bias is not None:
                    module.bias.zero_()

    def forward(
        self, x: Tensor, padding_mask: Tensor | None = None, *, max_layer: int | None = None
    ) -> TransformerOutput:
        """Run the encoder.

        Args:
            x: (B, T, D) projected (and possibly masked) features.
            padding_mask: (B, T) bool, True = padded, or None.
            max_layer: stop after this many layers (default: all).
        """
        x = self.layer_norm(self.pos_conv(x, padding_mask))
        layer_input = x
        x = self.dropout(x)
        attn_mask = None if padding_mask is None else ~padding_mask[:, None, None, :]
        layers = self.layers if max_layer is None else self.layers[:max_layer]
        # One draw per forward for all layers; the teacher is always in eval mode, so never skips.
        skip = [False] * len(layers)
        if self.training and self.layerdrop > 0:
            skip = (torch.rand(len(layers)) < self.layerdrop).tolist()
        residuals: list[Tensor] = []
        ffn: list[Tensor | None] = []
        for layer, dropped in zip(layers, skip):
            f = None
            if not dropped:
                x, f = layer(x, attn_mask)
            residuals.append(x)
            ffn.append(f)
        return TransformerOutput(layer_input, residuals, ffn)
