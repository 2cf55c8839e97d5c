"""Export the student encoder as a Hugging Face ``Data2VecAudioModel`` directory, without transformers.

DinoSR's student has exactly data2vec-audio's architecture (layer-norm CNN without bias, LN + linear
projection, stacked positional convs with non-affine LayerNorm, post-LN transformer), so
``Data2VecAudioModel.from_pretrained(DIR)`` (and ``Data2VecAudioForCTC``) load the export. What HF has no
slot for (prediction heads, codebooks, EMA teacher) goes to ``dinosr_extra.safetensors`` with our key
names and our config in its metadata.

Known difference: HF zeroes padded frames only before the first positional conv, we re-zero after every
positional conv layer (so a padded row equals the unpadded utterance). Unpadded inputs and the longest
row of a batch match to float precision; valid frames near the end of shorter padded rows can differ
slightly in HF.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import Tensor

from dinosr.fileio import atomic_write_bytes, atomic_write_text
from dinosr.model.dinosr import DinoSR

__all__ = ["EXTRA_NAME", "export_hf", "hf_config", "hf_preprocessor_config", "hf_state_dict"]

EXTRA_NAME = "dinosr_extra.safetensors"

_LAYER_RENAMES = {
    "attention.proj": "attention.out_proj",
    "layer_norm": "layer_norm",
    "fc1": "feed_forward.intermediate_dense",
    "fc2": "feed_forward.output_dense",
    "final_layer_norm": "final_layer_norm",
}


def hf_config(model: DinoSR) -> dict[str, Any]:
    """The ``config.json`` of a ``Data2VecAudioConfig`` describing the student encoder.

    Also used for ``DinoSRForCTC`` (interop/hf_ctc.py), whose encoder has the student's module names.
    """
    c = model.cfg
    if c.frontend != "conv":
        # Data2VecAudio has only the waveform CNN; a log-mel model has no equivalent HF class.
        raise ValueError(
            f"only the official conv front end exports to Hugging Face, not frontend={c.frontend!r}"
        )
    return {
        "architectures": ["Data2VecAudioModel"],
        "model_type": "data2vec-audio",
        "hidden_size": c.embed_dim,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "intermediate_size": c.ffn_dim,
        "hidden_act": "gelu",  # exact (erf) GELU, as ours
        "feat_extract_activation": "gelu",
        "feat_extract_norm": "layer",
        "conv_bias": False,
        "conv_dim": [ch for ch, _, _ in c.conv_layers],
        "conv_kernel": [k for _, k, _ in c.conv_layers],
        "conv_stride": [s for _, _, s in c.conv_layers],
        "num_feat_extract_layers": len(c.conv_layers),
        # data2vec-audio: num_conv_pos_embeddings = number of positional conv layers,
        # conv_pos_kernel_size = kernel of each (fairseq max(3, conv_pos // depth)).
        "num_conv_pos_embeddings": c.pos_conv_depth,
        "conv_pos_kernel_size": c.pos_conv_layer_kernel,
        "num_conv_pos_embedding_groups": c.pos_conv_groups,
        "layer_norm_eps": 1e-5,
        "hidden_dropout": c.dropout,
        "attention_dropout": c.attention_dropout,
        "activation_dropout": c.activation_dropout,
        "feat_proj_dropout": c.dropout_input,
        "layerdrop": c.layerdrop,
        "initializer_range": 0.02,
        # fine-tuning SpecAugment defaults of HF; masked_spec_embed gets our mask embedding
        "mask_time_prob": 0.05,
        "mask_time_length": 10,
        "do_stable_layer_norm": False,
        "torch_dtype": "float32",
    }


def hf_state_dict(model: DinoSR) -> dict[str, Tensor]:
    """Student weights under ``Data2VecAudioModel`` names (q/k/v split; zero biases when we have none).

    Reads only the student's keys (``feature_extractor.``, ``feature_projection.``, ``mask_embedding``,
    ``student.``), so a ``DinoSRForCTC`` maps the same way.
    """
    state = model.state_dict()
    out: dict[str, Tensor] = {"masked_spec_embed": state["mask_embedding"]}
    for key, value in state.items():
        if key.startswith(("feature_extractor.", "feature_projection.")):
            out[key] = value  # same names in HF
    d = model.cfg.embed_dim
    for i in range(model.cfg.pos_conv_depth):
        for kind in ("weight", "bias"):
            out[f"encoder.pos_conv_embed.layers.{i}.conv.{kind}"] = state[
                f"student.pos_conv.convs.{i}.{kind}"
            ]
    for kind in ("weight", "bias"):
        out[f"encoder.layer_norm.{kind}"] = state[f"student.layer_norm.{kind}"]
    for i in range(model.cfg.num_layers):
        src, dst = f"student.layers.{i}.", f"encoder.layers.{i}."
        qkv_w = state[f"{src}attention.qkv.weight"]
        qkv_b = state.get(f"{src}attention.qkv.bias", qkv_w.new_zeros(3 * d))  # HF q/k/v always have a bias
        for j, name in enumerate("qkv"):
            out[f"{dst}attention.{name}_proj.weight"] = qkv_w[j * d : (j + 1) * d]
            out[f"{dst}attention.{name}_proj.bias"] = qkv_b[j * d : (j + 1) * d]
        for ours, theirs in _LAYER_RENAMES.items():
            for kind in ("weight", "bias"):
                out[f"{dst}{theirs}.{kind}"] = state[f"{src}{ours}.{kind}"]
    return {k: v.detach().cpu().float().contiguous().clone() for k, v in out.items()}


def hf_preprocessor_config() -> dict[str, Any]:
    """``preprocessor_config.json`` of the ``Wav2Vec2FeatureExtractor`` that feeds the model as we do.

    ``do_normalize`` standardises each utterance like our loaders (HF divides by ``sqrt(var + 1e-7)``,
    we by ``sqrt(var + 1e-5)``: the same for any audio that is not near-silent).
    """
    return {
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "feature_size": 1,
        "sampling_rate": 16000,
        "padding_value": 0.0,
        "padding_side": "right",
        "do_normalize": True,  # per-utterance standardisation, as in pretraining
        "return_attention_mask": True,
    }


def export_hf(model: DinoSR, directory: str | os.PathLike) -> Path:
    """Write ``config.json``, ``model.safetensors``, ``preprocessor_config.json`` and the side file.

    ``Data2VecAudioModel.from_pretrained(directory)`` then gives hidden states equal to ours
    (``kind="hidden"``, layers 0..L) on standardised input (``Wav2Vec2FeatureExtractor(do_normalize=True)``).
    """
    from safetensors.torch import save

    from dinosr.interop.pretrained import _configs_to_dict

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Each file atomically: re-exporting over an earlier export never leaves a half-written file there.
    atomic_write_bytes(directory / "model.safetensors", save(hf_state_dict(model), metadata={"format": "pt"}))
    atomic_write_text(directory / "config.json", json.dumps(hf_config(model), indent=2) + "\n")
    preprocessor = json.dumps(hf_preprocessor_config(), indent=2) + "\n"
    atomic_write_text(directory / "preprocessor_config.json", preprocessor)
    extra = {
        k: v.detach().cpu().contiguous().clone()
        for k, v in model.state_dict().items()
        if k.startswith(("heads.", "codebooks.", "teacher.", "codebook_upkeep."))
    }
    meta = {"format": "pt", "dinosr_config": json.dumps(_configs_to_dict(model.cfg, model.masking_cfg))}
    atomic_write_bytes(directory / EXTRA_NAME, save(extra, metadata=meta))
    return directory
