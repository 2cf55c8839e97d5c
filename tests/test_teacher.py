"""EMA teacher (spec 4): decay schedule, closed-form EMA, copy vs reinit, eval mode, no grad."""

from dataclasses import replace

import pytest
import torch

from dinosr.model import DinoSR, ema_decay, ema_update, is_frozen, tiny_model_config
from dinosr.model.encoder import Transformer
from dinosr.model.teacher import make_teacher


def _transformer() -> Transformer:
    return Transformer(16, 2, 2, 32, pos_conv_kernel=3, pos_conv_groups=4, pos_conv_depth=2)


def _small_model(**overrides) -> DinoSR:
    cfg = replace(
        tiny_model_config(),
        conv_layers=((16, 10, 5), (16, 8, 4), (16, 4, 4)),
        embed_dim=16,
        num_layers=2,
        num_heads=2,
        ffn_dim=32,
        pos_conv_groups=4,
        pos_conv_kernel=6,
        pos_conv_depth=2,
        num_codebook_layers=2,
        codebook_size=8,
        **overrides,
    )
    return DinoSR(cfg)


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.999),
        (15000, 0.99945),
        (29999, 0.9999 - 0.0009 / 30000),
        (30000, 0.9999),
        (100000, 0.9999),
        (200000, 0.9999),
        (200001, 1.0),
        (400000, 1.0),
    ],
)
def test_decay_schedule_table(step, expected):
    assert ema_decay(step) == pytest.approx(expected, abs=1e-12)


def test_decay_schedule_edges():
    assert ema_decay(5, anneal_end_step=0) == 0.9999
    assert ema_decay(10, freeze_step=10) == 1.0
    assert is_frozen(200001, 200001)
    assert not is_frozen(200000, 200001)
    model = _small_model(freeze_teacher_step=200000)  # spidr's step
    assert model.ema_decay(200000) == 1.0
    assert model.is_frozen(200000)


def test_ema_update_is_closed_form_lerp():
    torch.manual_seed(0)
    student = _transformer()
    teacher = make_teacher(student, reinit=True)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, 0.9)
    s = student.state_dict()
    for name, value in teacher.state_dict().items():
        if name.startswith("pos_conv."):
            assert torch.equal(value, s[name])  # copied, never averaged
        else:
            assert torch.allclose(value, 0.9 * before[name] + 0.1 * s[name], atol=1e-7), name


def test_repeated_ema_converges_geometrically():
    torch.manual_seed(0)
    student = _transformer()
    teacher = make_teacher(student, reinit=True)
    t0 = teacher.layers[0].fc1.weight.clone()
    s = student.layers[0].fc1.weight.detach()
    for _ in range(5):
        ema_update(teacher, student, 0.8)
    assert torch.allclose(teacher.layers[0].fc1.weight, s + (t0 - s) * 0.8**5, atol=1e-6)


def test_make_teacher_copy_and_reinit():
    torch.manual_seed(0)
    student = _transformer()
    copy = make_teacher(student)
    reinit = make_teacher(student, reinit=True)
    s = student.state_dict()
    for name, value in copy.state_dict().items():
        assert torch.equal(value, s[name])
    for name, value in reinit.state_dict().items():
        is_linear = any(part in name for part in (".qkv.", ".proj.", ".fc1.", ".fc2."))
        if is_linear and name.endswith("weight"):
            assert not torch.equal(value, s[name]), name
        elif not is_linear:
            assert torch.equal(value, s[name]), name  # LayerNorms and pos-conv are kept
    for t in (copy, reinit):
        assert not t.training
        assert all(not p.requires_grad for p in t.parameters())
        assert all(p.dtype == torch.float32 for p in t.parameters())


@pytest.mark.parametrize("teacher_init", ["copy", "reinit"])
def test_model_teacher_init(teacher_init):
    torch.manual_seed(0)
    model = _small_model(teacher_init=teacher_init)
    same = torch.equal(model.teacher.layers[0].fc1.weight, model.student.layers[0].fc1.weight)
    assert same == (teacher_init == "copy")


def test_teacher_stays_eval_and_gradient_free():
    model = _small_model()
    model.train()
    assert model.training
    assert model.student.training
    assert not model.teacher.training
    model.eval()
    model.train(True)
    assert not model.teacher.training
    wav = torch.randn(2, 2000)
    out = model(wav)
    out.losses.sum().backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    enc = model.encode(wav, teacher=True)
    assert not enc.residuals[-1].requires_grad
    with pytest.raises(ValueError, match="unmasked"):
        model.encode(wav, teacher=True, mask=torch.zeros(2, 3, dtype=torch.bool))
