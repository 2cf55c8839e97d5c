"""Encoder components (spec 3): lengths, padding invariance, attention reference, LayerDrop, sizes, init."""

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from dinosr.model import DinoSR, ModelConfig, dinosr_base
from dinosr.model.config import BASE_CONV_LAYERS
from dinosr.model.encoder import FeatureExtractor, PositionalConv, SelfAttention, Transformer
from model_utils import micro_model_config


def _small_cfg(**overrides) -> ModelConfig:
    return micro_model_config(**overrides)


def test_output_lengths_match_conv_shapes():
    fe = FeatureExtractor(((8, 10, 5), (8, 3, 2), (8, 2, 2)))
    for n in [30, 31, 44, 45, 400, 1234]:
        t = fe(torch.randn(1, n)).shape[1]
        assert fe.output_lengths(torch.tensor([n])).item() == t
    base = FeatureExtractor(BASE_CONV_LAYERS)
    lengths = base.output_lengths(torch.tensor([0, 399, 400, 720, 16000, 320000]))
    assert lengths.tolist() == [0, 0, 1, 2, 49, 999]  # 25 ms window, 20 ms hop


def test_positional_conv_even_kernel_keeps_length():
    pc = PositionalConv(8, 4, 2, 2)
    assert pc(torch.randn(2, 7, 8)).shape == (2, 7, 8)


def test_attention_matches_naive_reference():
    torch.manual_seed(0)
    attn = SelfAttention(16, 4).eval()
    x = torch.randn(2, 6, 16)
    padding = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    out = attn(x, ~padding[:, None, None, :])
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    heads = [t.view(2, 6, 4, 4).transpose(1, 2) for t in (q, k, v)]
    scores = heads[0] @ heads[1].transpose(-1, -2) / math.sqrt(4)
    scores = scores.masked_fill(padding[:, None, None, :], float("-inf"))
    ref = attn.proj((scores.softmax(-1) @ heads[2]).transpose(1, 2).reshape(2, 6, 16))
    assert torch.allclose(out, ref, atol=1e-6)


def test_post_ln_layer_order():
    torch.manual_seed(0)
    t = Transformer(16, 1, 2, 32, pos_conv_kernel=3, pos_conv_groups=4, pos_conv_depth=1).eval()
    layer = t.layers[0]
    x = torch.randn(1, 5, 16)
    y, f = layer(x)
    h = F.layer_norm(x + layer.attention(x), (16,), layer.layer_norm.weight, layer.layer_norm.bias)
    assert torch.allclose(f, layer.fc2(F.gelu(layer.fc1(h))), atol=1e-6)
    assert torch.allclose(y, layer.final_layer_norm(h + f), atol=1e-6)


@pytest.mark.parametrize("teacher", [False, True])
def test_padded_batch_equals_single_utterances(teacher):
    torch.manual_seed(0)
    model = DinoSR(_small_cfg()).eval()
    lengths = torch.tensor([4000, 3100, 2345])
    wav = torch.randn(3, 4000)
    frames = model.frame_lengths(lengths)
    mask = None
    if not teacher:
        mask = torch.zeros(3, frames.max(), dtype=torch.bool)
        mask[:, 2:5] = True
    with torch.no_grad():
        batch = model.encode(wav, lengths, mask=mask, teacher=teacher)
        assert batch.padding_mask is not None
        assert (~batch.padding_mask).sum(1).tolist() == frames.tolist()
        for b, (n, t) in enumerate(zip(lengths.tolist(), frames.tolist())):
            single_mask = None if mask is None else mask[b : b + 1, :t]
            single = model.encode(wav[b : b + 1, :n], mask=single_mask, teacher=teacher)
            assert single.padding_mask is None
            pairs = [(batch.layer_input, single.layer_input)]
            pairs += list(zip(batch.residuals, single.residuals)) + list(zip(batch.ffn, single.ffn))
            for x, y in pairs:
                assert torch.allclose(x[b, :t], y[0], atol=1e-5)


def test_layerdrop_only_in_training():
    torch.manual_seed(0)
    t = Transformer(16, 4, 2, 32, pos_conv_kernel=3, pos_conv_groups=4, pos_conv_depth=1, layerdrop=0.99)
    x = torch.randn(1, 5, 16)
    out = t.train()(x)
    assert out.ffn == [None] * 4  # skipped layers: no FFN output, residual stream passes through
    assert all(r is out.residuals[0] for r in out.residuals)
    out = t.eval()(x)
    assert all(f is not None for f in out.ffn)
    assert len(t(x, max_layer=2).residuals) == 2


def _count(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


@pytest.mark.parametrize(("qkv_bias", "expected"), [(True, 93_164_288), (False, 93_136_640)])
def test_base_parameter_count(qkv_bias, expected):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = dinosr_base(qkv_bias=qkv_bias)
    backbone = _count(model.feature_extractor, model.feature_projection, model.student)
    assert backbone + model.mask_embedding.numel() == expected
    if qkv_bias:  # the spec 3.8 breakdown
        assert _count(model.feature_extractor) == 4_206_592
        assert _count(model.feature_projection) == 395_008
        assert _count(model.student.pos_conv) == 3_505_920
        assert _count(model.student.layers[0]) == 7_087_872
        assert _count(model.heads) == 1_574_912
        assert _count(model.teacher) == 88_561_920
        assert model.codebooks.sums.shape == (8, 256, 768)
        assert model.codebooks.counts.shape == (8, 256)


def test_initialisation():
    torch.manual_seed(0)
    model = DinoSR(replace(_small_cfg(), embed_dim=64, ffn_dim=256))
    fc1 = model.student.layers[0].fc1
    assert abs(fc1.weight.std().item() - 0.02) < 0.002
    assert torch.all(fc1.bias == 0)
    qkv = model.student.layers[0].attention.qkv
    assert abs(qkv.weight.std().item() - 0.02) < 0.002
    assert torch.all(qkv.bias == 0)
    emb = model.mask_embedding
    assert emb.min() >= 0
    assert emb.max() < 1
    assert emb.std() > 0.1
    conv = model.feature_extractor.conv_layers[1].conv.weight  # kaiming normal: std sqrt(2 / fan_in)
    assert abs(conv.std().item() - math.sqrt(2 / (16 * 3))) < 0.03
    assert not hasattr(model.student.pos_conv, "weight_g")  # no weight norm
    assert model.student.pos_conv.convs[0].kernel_size == (3,)


def test_half_attention_with_dropout_matches_sdpa():
    """The bf16 training attention path: without dropout it equals SDPA (bf16 tolerance, padded keys
    masked); with dropout its mean over many draws tends to the dropout-free output (inverted dropout)."""
    import torch.nn.functional as F

    from dinosr.model.encoder import half_attention_with_dropout

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 20, 8, generator=g) for _ in range(3))
    mask = torch.ones(2, 1, 1, 20, dtype=torch.bool)
    mask[1, ..., 15:] = False  # padded keys of the second utterance
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    half = [x.to(torch.bfloat16) for x in (q, k, v)]
    got = half_attention_with_dropout(*half, mask, 0.0)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, atol=3e-2, rtol=3e-2)
    torch.manual_seed(0)
    draws = torch.stack([half_attention_with_dropout(*half, mask, 0.3).float() for _ in range(400)])
    assert not torch.allclose(draws[0], expected, atol=3e-2)
    torch.testing.assert_close(draws.mean(0), expected, atol=0.12, rtol=0.0)
    # A padded key gets no weight, dropout or not: changing its value changes nothing.
    v2 = half[2].clone()
    v2[1, :, 15:] = 100.0
    torch.manual_seed(1)
    a = half_attention_with_dropout(half[0], half[1], half[2], mask, 0.3)
    torch.manual_seed(1)
    b = half_attention_with_dropout(half[0], half[1], v2, mask, 0.3)
    assert torch.equal(a, b)


def test_bf16_training_uses_the_half_path_and_fp32_uses_sdpa(monkeypatch):
    from dinosr.model import encoder

    calls = []
    real = encoder.half_attention_with_dropout
    monkeypatch.setattr(encoder, "half_attention_with_dropout", lambda *a: calls.append(1) or real(*a))
    attention = encoder.SelfAttention(16, 2, dropout=0.1).train()
    x = torch.randn(2, 5, 16)
    attention(x)
    assert calls == []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        attention(x)
        attention.eval()(x)  # no dropout in eval: SDPA's fused kernel
    assert calls == [1]


@pytest.mark.parametrize("bf16", [False, True])
def test_conv_block_equals_conv1d_reference(bf16):
    """Both ConvBlock paths (fp32: unfolded GEMM; CPU bf16 autocast: NHWC conv2d) against conv1d on (B, C, T)
    with the LayerNorm over channels, forward and gradients."""
    import torch.nn.functional as F

    from dinosr.model.encoder import ConvBlock

    torch.manual_seed(0)
    block = ConvBlock(8, 16, kernel=3, stride=2)
    x = torch.randn(2, 41, 8, requires_grad=True)

    def reference(inp):
        y = F.conv1d(inp.transpose(1, 2), block.conv.weight, stride=2).transpose(1, 2)
        return F.gelu(block.layer_norm(y))

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        got, expected = block(x), reference(x)
    assert got.shape == (2, 20, 16)
    assert got.is_contiguous()
    tol = {"atol": 3e-2, "rtol": 3e-2} if bf16 else {"atol": 1e-5, "rtol": 1e-5}
    torch.testing.assert_close(got.float(), expected.float(), **tol)
    (g_got,) = torch.autograd.grad(got.float().square().sum(), block.conv.weight)
    (g_ref,) = torch.autograd.grad(expected.float().square().sum(), block.conv.weight)
    scale = float(g_ref.abs().max())
    torch.testing.assert_close(g_got / scale, g_ref / scale, atol=tol["atol"] * 2, rtol=0.0)


def test_conv_block_takes_the_nhwc_path_only_in_bf16(monkeypatch):
    from dinosr.model.encoder import ConvBlock

    block = ConvBlock(4, 4, kernel=2, stride=2)
    calls = []
    real = block._conv_nhwc
    monkeypatch.setattr(block, "_conv_nhwc", lambda x: calls.append(1) or real(x))
    block(torch.randn(1, 10, 4))
    assert calls == []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        block(torch.randn(1, 10, 4))
    assert calls == [1]
