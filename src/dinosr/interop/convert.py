"""Checkpoint key mapping: official fairseq ``dinosr.ckpt`` and spidr ``.pt`` -> our ``DinoSR.state_dict()``.

Key layouts are those of spec section 12. The architecture is inferred from tensor shapes
(:func:`infer_model_config`), so no config object of the foreign project is needed. Every source key must
be consumed and every key of our model produced, otherwise :class:`ConversionError` lists the offenders.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from dinosr.errors import CheckpointError
from dinosr.model.config import BASE_CONV_LAYERS, ModelConfig

__all__ = [
    "ConversionError",
    "detect_layout",
    "fairseq_to_dinosr",
    "infer_model_config",
    "spidr_to_dinosr",
]

# fairseq's per-layer suffixes -> ours (q/k/v handled separately: they are fused)
_FAIRSEQ_LAYER = {
    "self_attn.out_proj": "attention.proj",
    "self_attn_layer_norm": "layer_norm",
    "fc1": "fc1",
    "fc2": "fc2",
    "final_layer_norm": "final_layer_norm",
}
_SPIDR_LAYER = {
    "attention.qkv": "attention.qkv",
    "attention.proj": "attention.proj",
    "layer_norm": "layer_norm",
    "feed_forward.intermediate_dense": "fc1",
    "feed_forward.output_dense": "fc2",
    "final_layer_norm": "final_layer_norm",
}


class ConversionError(CheckpointError):
    """A foreign state dict has keys we cannot map, or lacks keys the model needs."""


def detect_layout(state: Mapping[str, Any]) -> str:
    """'dinosr' (ours), 'fairseq' (official) or 'spidr' from characteristic keys."""
    if "codebooks.sums" in state:
        return "dinosr"
    if "mask_emb" in state or "_ema" in state or any(k.startswith("_codebook") for k in state):
        return "fairseq"
    if any(k.startswith("codebooks.") and k.endswith(".codebook") for k in state) or "current_step" in state:
        return "spidr"
    raise ConversionError(f"unrecognised state dict layout (first keys: {list(state)[:8]})")


def _fuse_qkv(src: dict[str, Tensor], prefix: str, used: set[str], out: dict[str, Tensor], dst: str) -> None:
    """fairseq q_proj/k_proj/v_proj -> one qkv, rows in the order q, k, v (spec 12.3)."""
    for kind in ("weight", "bias"):
        names = [f"{prefix}self_attn.{p}_proj.{kind}" for p in "qkv"]
        present = [n in src for n in names]
        if not any(present):
            continue
        if not all(present):
            missing = [n for n, p in zip(names, present) if not p]
            raise ConversionError(f"incomplete q/k/v projection: missing {missing}")
        out[f"{dst}attention.qkv.{kind}"] = torch.cat([src[n] for n in names])
        used.update(names)


def _map_transformer(
    src: dict[str, Tensor], src_prefix: str, dst_prefix: str, layout: str, used: set[str]
) -> dict[str, Tensor]:
    """Positional conv, encoder LayerNorm and layers of one transformer (student or teacher)."""
    out: dict[str, Tensor] = {}
    pos_pattern = r"pos_conv\.(\d+)\.0\." if layout == "fairseq" else r"pos_conv_embed\.convs\.(\d+)\."
    pos = re.compile(re.escape(src_prefix) + pos_pattern + r"(weight|bias)$")
    layer = re.compile(re.escape(src_prefix) + r"layers\.(\d+)\.(.+)\.(weight|bias)$")
    table = _FAIRSEQ_LAYER if layout == "fairseq" else _SPIDR_LAYER
    for key, value in src.items():
        if m := pos.match(key):
            out[f"{dst_prefix}pos_conv.convs.{m[1]}.{m[2]}"] = value
            used.add(key)
        elif key in (f"{src_prefix}layer_norm.weight", f"{src_prefix}layer_norm.bias"):
            out[f"{dst_prefix}layer_norm.{key.rsplit('.', 1)[1]}"] = value
            used.add(key)
        elif (m := layer.match(key)) and m[2] in table:
            out[f"{dst_prefix}layers.{m[1]}.{table[m[2]]}.{m[3]}"] = value
            used.add(key)
    if layout == "fairseq":
        indices = {int(m[1]) for k in src if (m := layer.match(k))}
        for i in sorted(indices):
            _fuse_qkv(src, f"{src_prefix}layers.{i}.", used, out, f"{dst_prefix}layers.{i}.")
    return out


def _map_frontend(src: dict[str, Tensor], layout: str, used: set[str]) -> dict[str, Tensor]:
    """CNN feature extractor, feature projection and mask embedding."""
    out: dict[str, Tensor] = {}
    if layout == "fairseq":
        renames = {
            "mask_emb": "mask_embedding",
            "layer_norm.weight": "feature_projection.layer_norm.weight",
            "layer_norm.bias": "feature_projection.layer_norm.bias",
            "post_extract_proj.weight": "feature_projection.projection.weight",
            "post_extract_proj.bias": "feature_projection.projection.bias",
        }
        conv = re.compile(r"feature_extractor\.conv_layers\.(\d+)\.(0\.weight|2\.1\.weight|2\.1\.bias)$")
        conv_names = {
            "0.weight": "conv.weight",
            "2.1.weight": "layer_norm.weight",
            "2.1.bias": "layer_norm.bias",
        }
    else:
        renames = {"mask_embedding": "mask_embedding"}
        for part in ("layer_norm", "projection"):
            for kind in ("weight", "bias"):
                renames[f"feature_projection.{part}.{kind}"] = f"feature_projection.{part}.{kind}"
        conv = re.compile(
            r"feature_extractor\.conv_layers\.(\d+)\.(conv\.weight|layer_norm\.weight|layer_norm\.bias)$"
        )
        conv_names = {n: n for n in ("conv.weight", "layer_norm.weight", "layer_norm.bias")}
    for key, value in src.items():
        if key in renames:
            out[renames[key]] = value
            used.add(key)
        elif m := conv.match(key):
            out[f"feature_extractor.conv_layers.{m[1]}.{conv_names[m[2]]}"] = value
            used.add(key)
    return out


def _map_objective(src: dict[str, Tensor], layout: str, used: set[str]) -> dict[str, Tensor]:
    """Prediction heads and codebooks (sum accumulators S and counts N, stacked to (K, V, D) / (K, V))."""
    out: dict[str, Tensor] = {}
    head = re.compile(
        r"heads\.(\d+)\.(weight|bias)$" if layout == "fairseq" else r"heads\.(\d+)\.0\.(weight|bias)$"
    )
    if layout == "fairseq":
        cb, cnt = re.compile(r"_codebook(\d+)$"), re.compile(r"_codebook_cnts(\d+)$")
    else:
        cb, cnt = re.compile(r"codebooks\.(\d+)\.codebook$"), re.compile(r"codebooks\.(\d+)\.counts$")
    sums, counts = {}, {}
    for key, value in src.items():
        if m := head.match(key):
            out[f"heads.{m[1]}.{m[2]}"] = value
            used.add(key)
        elif m := cb.match(key):
            sums[int(m[1])] = value
            used.add(key)
        elif m := cnt.match(key):
            counts[int(m[1])] = value
            used.add(key)
    if sums or counts:
        if sorted(sums) != list(range(len(sums))) or sorted(counts) != sorted(sums):
            raise ConversionError(
                f"codebook indices do not match: sums {sorted(sums)}, counts {sorted(counts)}"
            )
        out["codebooks.sums"] = torch.stack([sums[i].float() for i in range(len(sums))])
        out["codebooks.counts"] = torch.stack([counts[i].float() for i in range(len(counts))])
    return out


def _finish(
    src: dict[str, Tensor], out: dict[str, Tensor], used: set[str], ignore: set[str]
) -> dict[str, Tensor]:
    unknown = sorted(set(src) - used - ignore)
    if unknown:
        raise ConversionError(f"{len(unknown)} unmapped key(s): {unknown}")
    # fp16-trained students are stored in half precision: the model (and its codebooks) is fp32.
    return {k: v.float() if v.is_floating_point() else v for k, v in out.items()}


def fairseq_to_dinosr(model_state: Mapping[str, Any]) -> dict[str, Tensor]:
    """Official ``checkpoint["model"]`` (student keys + ``_ema`` dict + ``_codebook*``) -> our state dict.

    Raises:
        ConversionError: unmapped keys (listed). A missing ``_ema`` means a fine-tuning checkpoint: the
            teacher is then absent and :func:`check_complete` reports it.
    """
    src = {k: v for k, v in model_state.items() if k != "_ema"}
    used: set[str] = set()
    out = _map_frontend(src, "fairseq", used)
    out.update(_map_transformer(src, "encoder.", "student.", "fairseq", used))
    out.update(_map_objective(src, "fairseq", used))
    out = _finish(src, out, used, set())
    ema = model_state.get("_ema")
    if ema is not None:
        ema = dict(ema)
        ema_used: set[str] = set()
        teacher = _map_transformer(ema, "", "teacher.", "fairseq", ema_used)
        out.update(
            _finish({f"_ema.{k}": v for k, v in ema.items()}, teacher, {f"_ema.{k}" for k in ema_used}, set())
        )
    return out


def spidr_to_dinosr(model_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """spidr ``checkpoint["model"]`` (DinoSR or SpidR, fused qkv, optional ``module.`` prefix) -> ours.

    ``current_step`` (the training step, a buffer in spidr) is dropped: we keep the step in the trainer.
    """
    src = {k.removeprefix("module."): v for k, v in model_state.items()}
    used: set[str] = set()
    out = _map_frontend(src, "spidr", used)
    out.update(_map_transformer(src, "student.", "student.", "spidr", used))
    out.update(_map_transformer(src, "teacher.", "teacher.", "spidr", used))
    out.update(_map_objective(src, "spidr", used))
    return _finish(src, out, used, {"current_step"})


def _count(state: Mapping[str, Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m[1]) for k in state if (m := rx.match(k))}
    if found != set(range(len(found))):
        raise ConversionError(f"non-contiguous indices for {pattern}: {sorted(found)}")
    return len(found)


def infer_model_config(
    state: Mapping[str, Tensor], *, base: ModelConfig | None = None, num_heads: int | None = None
) -> ModelConfig:
    """Architecture of a state dict in *our* layout, from tensor shapes.

    Conv strides and the number of attention heads are not visible in shapes: strides follow the
    wav2vec 2.0 convention (kernel 10 -> 5, otherwise 2; exact for the official CNN), heads default to
    ``embed_dim // 64`` (12 for 768) unless ``num_heads`` (or ``base``) says otherwise. Training-only fields
    (EMA schedule, decay, dropout) come from ``base`` (default: the official ``ModelConfig()``).
    """
    base = base if base is not None else ModelConfig()
    try:
        n_conv = _count(state, r"feature_extractor\.conv_layers\.(\d+)\.conv\.weight$")
        conv = []
        for i in range(n_conv):
            out_c, _, kernel = state[f"feature_extractor.conv_layers.{i}.conv.weight"].shape
            conv.append((int(out_c), int(kernel)))
        base_kernels = [k for _, k, _ in BASE_CONV_LAYERS]
        if [k for _, k in conv] == base_kernels:
            strides = [s for _, _, s in BASE_CONV_LAYERS]
        elif len(conv) == len(base.conv_layers) and [k for _, k in conv] == [
            k for _, k, _ in base.conv_layers
        ]:
            strides = [s for _, _, s in base.conv_layers]
        else:
            strides = [5 if k == 10 else 2 for _, k in conv]
        embed_dim = int(state["mask_embedding"].shape[0])
        num_layers = _count(state, r"student\.layers\.(\d+)\.fc1\.weight$")
        depth = _count(state, r"student\.pos_conv\.convs\.(\d+)\.weight$")
        pos_w = state["student.pos_conv.convs.0.weight"]
        kernel, groups = int(pos_w.shape[2]), embed_dim // int(pos_w.shape[1])
        k_heads = _count(state, r"heads\.(\d+)\.weight$")
    except KeyError as err:
        raise ConversionError(f"cannot infer the architecture: missing {err}") from None
    if num_heads is None:
        num_heads = base.num_heads if base.embed_dim == embed_dim else max(1, embed_dim // 64)
    return replace(
        base,
        conv_layers=tuple((c, k, s) for (c, k), s in zip(conv, strides)),
        embed_dim=embed_dim,
        num_layers=num_layers,
        num_heads=num_heads,
        ffn_dim=int(state["student.layers.0.fc1.weight"].shape[0]),
        qkv_bias="student.layers.0.attention.qkv.bias" in state,
        # per-layer kernel k = max(3, pos_conv_kernel // depth): k * depth reproduces it (95 for 19 x 5)
        pos_conv_kernel=kernel * depth,
        pos_conv_groups=groups,
        pos_conv_depth=depth,
        num_codebook_layers=k_heads,
        codebook_size=int(state["heads.0.weight"].shape[0]),
    )
