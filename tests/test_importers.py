"""Importers of the official fairseq dinosr.ckpt and spidr .pt layouts (spec 12); the restricted unpickler.

The foreign state dicts are built here, from a random model of ours, with the key names of spec 12
written out independently of the library's mapping code.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import pickle
import subprocess
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

import dinosr
from dinosr.interop import ConversionError, UnsafeCheckpointError, load_model, safe_torch_load
from dinosr.interop.convert import fairseq_to_dinosr, infer_model_config, spidr_to_dinosr
from dinosr.interop.safe_pickle import PickleStub
from dinosr.interop.safe_pickle import load as safe_pickle_load
from dinosr.model import DinoSR, ModelConfig, dinosr_base, dinosr_tiny

_FS_LAYER = {"attention.proj": "self_attn.out_proj", "layer_norm": "self_attn_layer_norm", "fc1": "fc1",
             "fc2": "fc2", "final_layer_norm": "final_layer_norm"}  # fmt: skip
_SP_LAYER = {"attention.qkv": "attention.qkv", "attention.proj": "attention.proj", "layer_norm": "layer_norm",
             "fc1": "feed_forward.intermediate_dense", "fc2": "feed_forward.output_dense",
             "final_layer_norm": "final_layer_norm"}  # fmt: skip


class FakeDictConfig:
    """Stands in for omegaconf.DictConfig: a class our unpickler cannot (and must not) import."""

    def __init__(self, content: dict) -> None:
        self._content = content
        self._metadata = {"object_type": "DinosrAudioConfig"}


def _transformer_fairseq(sd: dict, src: str, dst: str, n_layers: int, depth: int, d: int) -> dict:
    out = {}
    for i in range(depth):
        for kind in ("weight", "bias"):
            out[f"{dst}pos_conv.{i}.0.{kind}"] = sd[f"{src}pos_conv.convs.{i}.{kind}"]
    for kind in ("weight", "bias"):
        out[f"{dst}layer_norm.{kind}"] = sd[f"{src}layer_norm.{kind}"]
    for i in range(n_layers):
        p, q = f"{src}layers.{i}.", f"{dst}layers.{i}."
        for kind in ("weight", "bias"):
            if f"{p}attention.qkv.{kind}" in sd:
                qkv = sd[f"{p}attention.qkv.{kind}"]
                for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
                    out[f"{q}self_attn.{name}.{kind}"] = qkv[j * d : (j + 1) * d]
            for ours, theirs in _FS_LAYER.items():
                out[f"{q}{theirs}.{kind}"] = sd[f"{p}{ours}.{kind}"]
    return out


def to_fairseq(model: DinoSR, *, fp16: bool) -> OrderedDict:
    """Our model -> official ``checkpoint["model"]`` (spec 12.1)."""
    sd, c = model.state_dict(), model.cfg
    out = OrderedDict(mask_emb=sd["mask_embedding"])
    for i in range(len(c.conv_layers)):
        out[f"feature_extractor.conv_layers.{i}.0.weight"] = sd[
            f"feature_extractor.conv_layers.{i}.conv.weight"
        ]
        for kind in ("weight", "bias"):
            out[f"feature_extractor.conv_layers.{i}.2.1.{kind}"] = sd[
                f"feature_extractor.conv_layers.{i}.layer_norm.{kind}"
            ]
    for kind in ("weight", "bias"):
        out[f"layer_norm.{kind}"] = sd[f"feature_projection.layer_norm.{kind}"]
        out[f"post_extract_proj.{kind}"] = sd[f"feature_projection.projection.{kind}"]
    out.update(_transformer_fairseq(sd, "student.", "encoder.", c.num_layers, c.pos_conv_depth, c.embed_dim))
    for k in range(c.num_codebook_layers):
        for kind in ("weight", "bias"):
            out[f"heads.{k}.{kind}"] = sd[f"heads.{k}.{kind}"]
    if fp16:  # fp16 training stores the student in half precision; codebooks and EMA stay fp32
        out = OrderedDict((k, v.half()) for k, v in out.items())
    for k in range(c.num_codebook_layers):
        out[f"_codebook{k}"] = sd["codebooks.sums"][k].clone()
        out[f"_codebook_cnts{k}"] = sd["codebooks.counts"][k].clone()
    out["_ema"] = _transformer_fairseq(sd, "teacher.", "", c.num_layers, c.pos_conv_depth, c.embed_dim)
    return out


def to_spidr(model: DinoSR) -> OrderedDict:
    """Our model -> spidr ``DinoSR.state_dict()`` (spec 12.2)."""
    sd, c = model.state_dict(), model.cfg
    out = OrderedDict(mask_embedding=sd["mask_embedding"], current_step=torch.tensor([1234]))
    for key, v in sd.items():
        if key.startswith(("feature_extractor.", "feature_projection.")):
            out[key] = v
    for part in ("student", "teacher"):
        for i in range(c.pos_conv_depth):
            for kind in ("weight", "bias"):
                out[f"{part}.pos_conv_embed.convs.{i}.{kind}"] = sd[f"{part}.pos_conv.convs.{i}.{kind}"]
        for kind in ("weight", "bias"):
            out[f"{part}.layer_norm.{kind}"] = sd[f"{part}.layer_norm.{kind}"]
        for i in range(c.num_layers):
            for ours, theirs in _SP_LAYER.items():
                for kind in ("weight", "bias"):
                    if f"{part}.layers.{i}.{ours}.{kind}" in sd:
                        out[f"{part}.layers.{i}.{theirs}.{kind}"] = sd[f"{part}.layers.{i}.{ours}.{kind}"]
    for k in range(c.num_codebook_layers):
        for kind in ("weight", "bias"):
            out[f"heads.{k}.0.{kind}"] = sd[f"heads.{k}.{kind}"]
        out[f"codebooks.{k}.codebook"] = sd["codebooks.sums"][k].clone()
        out[f"codebooks.{k}.counts"] = sd["codebooks.counts"][k].clone()
    return out


def _tiny(**kw) -> DinoSR:
    torch.manual_seed(0)
    m = dinosr_tiny(num_layers=2, num_codebook_layers=2, **kw).eval()
    with torch.no_grad():  # a teacher different from the student, non-trivial counts
        for p in m.teacher.parameters():
            p.add_(0.01 * torch.randn_like(p))
        m.codebooks.counts.uniform_(0.5, 2.0)
    return m


def _outputs(model: DinoSR) -> list[torch.Tensor]:
    wav = torch.randn(12000, generator=torch.Generator().manual_seed(5))
    feats, _ = dinosr.extract_features(model, wav, kind="hidden")
    ffn, _ = dinosr.extract_features(model, wav, kind="ffn", teacher=True)
    units = [
        dinosr.units(model, wav, layer=lay, source=s).units[0]
        for lay in model.cfg.codebook_layers
        for s in ("codebook", "head")
    ]
    return [*feats.values(), *ffn.values(), *units]


def _assert_same(a: DinoSR, b: DinoSR) -> None:
    for name, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[name]), name
    for x, y in zip(_outputs(a), _outputs(b)):
        assert torch.equal(x, y)


@pytest.mark.parametrize("fp16", [False, True])
def test_official_fairseq_checkpoint_imports(tmp_path, fp16):
    model = _tiny(num_heads=2)  # 2 heads: only readable from the checkpoint's cfg (256 // 64 = 4)
    if fp16:  # the reference sees the same half-precision rounding of the student
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not name.startswith("teacher."):
                    p.copy_(p.half().float())
    cfg = {
        "_name": None,
        "common": {"fp16": fp16},
        "model": FakeDictConfig({"_name": "dinosr", "encoder_attention_heads": 2, "mask_prob": 0.8}),
    }
    checkpoint = {
        "args": None,
        "cfg": cfg,
        "model": to_fairseq(model, fp16=fp16),
        "criterion": None,
        "optimizer_history": [{"num_updates": 10, "namespace": argparse.Namespace(lr=[5e-4])}],
        "extra_state": {"best": np.float64(1.5)},
        "last_optimizer_state": {"state": {0: {"step": 10}}},
    }
    torch.save(checkpoint, tmp_path / "dinosr.ckpt")
    with pytest.raises(pickle.UnpicklingError):  # torch's own safe loader refuses the cfg objects
        torch.load(tmp_path / "dinosr.ckpt", weights_only=True)
    raw = safe_torch_load(tmp_path / "dinosr.ckpt")
    assert isinstance(raw["cfg"]["model"], PickleStub)
    assert raw["model"]["mask_emb"].dtype == (torch.float16 if fp16 else torch.float32)
    imported = load_model(tmp_path / "dinosr.ckpt")
    assert imported.cfg.num_heads == 2
    assert imported.cfg.qkv_bias
    assert imported.cfg.conv_layers == model.cfg.conv_layers
    _assert_same(model, imported)


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_spidr_checkpoint_imports(tmp_path, qkv_bias):
    model = _tiny(qkv_bias=qkv_bias)
    torch.save({"model": to_spidr(model)}, tmp_path / "dinosr_base_reproduced.pt")
    imported = load_model(tmp_path / "dinosr_base_reproduced.pt")
    assert imported.cfg.qkv_bias == qkv_bias
    assert imported.cfg.teacher_init == "reinit"
    _assert_same(model, imported)
    # a DDP-wrapped training checkpoint ("module." prefix) maps the same way
    prefixed = {f"module.{k}": v for k, v in to_spidr(model).items()}
    assert spidr_to_dinosr(prefixed).keys() == model.state_dict().keys()


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_base_size_key_mapping_on_meta(qkv_bias):
    with torch.device("meta"):
        model = dinosr_base(qkv_bias=qkv_bias)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    for mapped in (
        spidr_to_dinosr(to_spidr(model)),
        fairseq_to_dinosr(to_fairseq(model, fp16=True)) if qkv_bias else None,
    ):
        if mapped is None:
            continue
        assert {k: v.shape for k, v in mapped.items()} == expected
        cfg = infer_model_config(mapped)
        ref = ModelConfig(qkv_bias=qkv_bias)
        for field in ("conv_layers", "embed_dim", "num_layers", "num_heads", "ffn_dim", "qkv_bias",
                      "pos_conv_layer_kernel", "pos_conv_groups", "pos_conv_depth", "num_codebook_layers",
                      "codebook_size"):  # fmt: skip
            assert getattr(cfg, field) == getattr(ref, field), field
    fs = to_fairseq(model, fp16=False)
    assert fs["encoder.pos_conv.0.0.weight"].shape == (768, 48, 19)
    assert "_codebook_cnts7" in fs
    assert to_spidr(model)["student.layers.11.attention.qkv.weight"].shape == (2304, 768)


def test_unknown_and_missing_keys_are_listed():
    model = _tiny()
    sd = to_spidr(model)
    sd["student.layers.0.attention.rotary.weight"] = torch.zeros(1)
    with pytest.raises(ConversionError, match=r"rotary"):
        spidr_to_dinosr(sd)
    fs = to_fairseq(model, fp16=False)
    fs["encoder.layers.0.self_attn.extra_proj.bias"] = torch.zeros(1)
    with pytest.raises(ConversionError, match=r"extra_proj"):
        fairseq_to_dinosr(fs)
    fs = to_fairseq(model, fp16=False)
    del fs["_ema"]["layers.1.fc2.bias"]
    from dinosr.interop.pretrained import state_to_model

    with pytest.raises(ConversionError, match=r"teacher\.layers\.1\.fc2\.bias"):
        state_to_model(fairseq_to_dinosr(fs), model.cfg)


class _RunsShell:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


class _RunsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


class _RunsSubprocess:
    def __reduce__(self):
        return (subprocess.check_output, (["true"],))


@pytest.mark.parametrize("evil", [_RunsShell, _RunsEval, _RunsSubprocess])
def test_restricted_unpickler_refuses_code(tmp_path, monkeypatch, evil):
    monkeypatch.chdir(tmp_path)
    torch.save({"model": {"w": torch.zeros(2)}, "cfg": evil()}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match="refusing to load global"):
        safe_torch_load(tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError):
        load_model(tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError):  # plain pickles too
        safe_pickle_load(io.BytesIO(pickle.dumps(evil())))
    assert not (tmp_path / "pwned.txt").exists()


# ----------------------------------------------------------------------------- spec-pinned key sets
FIXTURES = Path(__file__).parent / "fixtures"


def _fake(shapes: dict, real: set[str] = frozenset()) -> OrderedDict:
    """Meta tensors of the fixture's shapes (base size, no memory); ``real`` keys get distinct values."""
    out = OrderedDict()
    for i, (key, shape) in enumerate(shapes.items()):
        if key in real:
            out[key] = torch.arange(math.prod(shape), dtype=torch.float32).reshape(shape) + 1000 * i
        else:
            out[key] = torch.empty(shape, device="meta", dtype=torch.long if key == "current_step" else None)
    return out


def _expected_base_state() -> dict:
    with torch.device("meta"):
        model = dinosr_base()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_official_checkpoint_keys_of_the_spec_map_exactly():
    """The official key names/shapes of spec 12.1 (a committed fixture, not our exporter) import fully."""
    spec = json.loads((FIXTURES / "official_dinosr_keys.json").read_text())
    real = {f"encoder.layers.0.self_attn.{p}_proj.{k}" for p in "qkv" for k in ("weight", "bias")}
    real |= {"mask_emb", "heads.2.bias", "encoder.pos_conv.4.0.bias"}
    real |= {k for k in spec["model"] if k.startswith("_codebook")}  # stacked: all on one device
    model_state = _fake(spec["model"], real)
    ema_real = {"layers.11.fc2.weight", "layer_norm.bias"}
    model_state["_ema"] = _fake(spec["_ema"], ema_real)
    mapped = fairseq_to_dinosr(model_state)  # raises on any key it does not consume
    assert {k: tuple(v.shape) for k, v in mapped.items()} == _expected_base_state()
    # values land where spec 12.3 says
    q, k, v = (model_state[f"encoder.layers.0.self_attn.{p}_proj.weight"] for p in "qkv")
    assert torch.equal(mapped["student.layers.0.attention.qkv.weight"], torch.cat([q, k, v]))
    assert torch.equal(mapped["mask_embedding"], model_state["mask_emb"])
    assert torch.equal(mapped["codebooks.sums"][3], model_state["_codebook3"])
    assert torch.equal(mapped["codebooks.counts"][3], model_state["_codebook_cnts3"])
    assert torch.equal(mapped["heads.2.bias"], model_state["heads.2.bias"])
    assert torch.equal(mapped["student.pos_conv.convs.4.bias"], model_state["encoder.pos_conv.4.0.bias"])
    assert torch.equal(mapped["teacher.layers.11.fc2.weight"], model_state["_ema"]["layers.11.fc2.weight"])
    assert torch.equal(mapped["teacher.layer_norm.bias"], model_state["_ema"]["layer_norm.bias"])
    # the key set in the fixture is complete: dropping any one key is reported
    del model_state["_ema"]["layers.3.fc1.bias"]
    from dinosr.interop.pretrained import state_to_model

    with pytest.raises(ConversionError, match=r"teacher\.layers\.3\.fc1\.bias"):
        state_to_model(fairseq_to_dinosr(model_state), ModelConfig())


def test_spidr_checkpoint_keys_of_the_spec_map_exactly():
    spec = json.loads((FIXTURES / "spidr_dinosr_keys.json").read_text())
    real = {"student.layers.5.attention.qkv.bias", "heads.0.0.weight"}
    real |= {k for k in spec["model"] if k.startswith("codebooks.")}
    state = _fake(spec["model"], real)
    mapped = spidr_to_dinosr(state)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == _expected_base_state()
    key = "student.layers.5.attention.qkv.bias"
    assert torch.equal(mapped[key], state[key])
    assert torch.equal(mapped["codebooks.sums"][7], state["codebooks.7.codebook"])
    assert torch.equal(mapped["heads.0.weight"], state["heads.0.0.weight"])
