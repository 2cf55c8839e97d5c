"""DinoSR module contract (docs/DESIGN.md): pure forward, gradients, post_step, freezing, accumulation."""

import copy
import math

import pytest
import torch

from dinosr.model import DinoSR, MaskingConfig, ModelConfig, instance_norm_frames
from model_utils import micro_model_config


def _cfg(**overrides) -> ModelConfig:
    # no LayerDrop: a deterministic set of layers for the gradient checks
    return micro_model_config(**{"layerdrop": 0.0, "freeze_teacher_step": 5, **overrides})


def _model(**overrides) -> DinoSR:
    torch.manual_seed(0)
    return DinoSR(_cfg(**overrides))


def _snapshot(model: DinoSR) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def _wav(b: int = 2, n: int = 6400, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, n, generator=torch.Generator().manual_seed(seed))


def test_forward_shapes_and_loss_scale():
    model = _model()
    out = model(_wav())
    k, v = 2, 16
    m = out.num_masked
    assert out.losses.shape == (m, k)
    assert out.losses.dtype == torch.float32
    assert m == int(out.mask.sum()) > 0
    assert out.codes.shape == (k, m)
    assert out.stats.sums.shape == (k, v, 32)
    assert torch.equal(out.stats.counts.sum(1), torch.full((k,), float(m)))
    assert torch.allclose(out.stats.pred_prob_sum.sum(1), torch.full((k,), float(m)), atol=1e-3)
    # Untrained heads predict ~uniformly: CE ~ ln V.
    assert abs(out.losses.mean().item() - math.log(v)) < 1.0
    counts = out.mask.sum(1)
    assert (counts == counts[0]).all()  # require_same_masks


def test_forward_mutates_nothing():
    model = _model().train()
    before = _snapshot(model)
    out = model(_wav(), torch.tensor([6400, 5000]))
    out.losses.mean(1).sum().backward()
    assert _changed(before, _snapshot(model)) == set()


def test_gradients_reach_student_but_not_teacher_or_codebooks():
    model = _model().train()
    model(_wav()).losses.mean(1).sum().backward()
    groups = {
        "cnn": model.feature_extractor,
        "projection": model.feature_projection,
        "transformer": model.student,
        "heads": model.heads,
    }
    for name, module in groups.items():
        for pname, p in module.named_parameters():
            assert p.grad is not None, f"{name}.{pname}"
    assert model.mask_embedding.grad is not None
    assert model.mask_embedding.grad.abs().sum() > 0
    assert model.feature_extractor.conv_layers[0].conv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())
    assert not any(b.requires_grad for b in model.codebooks.buffers())
    assert list(model.codebooks.parameters()) == []


def test_param_groups_cover_the_trainable_student():
    model = _model()
    groups = model.param_groups()
    assert [g["name"] for g in groups] == ["extractor", "main"]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(ids) == trainable
    assert not {id(p) for p in model.teacher.parameters()} & set(ids)


def _train_step(model: DinoSR, step: int, wav: torch.Tensor):
    opt = torch.optim.SGD([p for g in model.param_groups() for p in g["params"]], lr=0.1)
    out = model(wav)
    out.losses.mean(1).sum().backward()
    opt.step()
    opt.zero_grad()
    before = _snapshot(model)
    model.post_step(step, out.stats)
    return before, _snapshot(model)


def test_post_step_changes_exactly_teacher_and_codebooks():
    model = _model().train()
    before, after = _train_step(model, 1, _wav())
    changed = _changed(before, after)
    assert changed
    assert all(k.startswith(("teacher.", "codebooks.")) for k in changed)
    assert {"codebooks.sums", "codebooks.counts", "teacher.layers.0.fc1.weight"} <= changed
    # pos-conv is copied from the student, the rest averaged with decay 0.999 (step 1 of the anneal)
    s, t = after["student.pos_conv.convs.0.weight"], after["teacher.pos_conv.convs.0.weight"]
    assert torch.equal(s, t)
    decay = model.ema_decay(1)
    expected = (
        decay * before["teacher.layers.0.fc1.weight"] + (1 - decay) * after["student.layers.0.fc1.weight"]
    )
    assert torch.allclose(after["teacher.layers.0.fc1.weight"], expected, atol=1e-7)
    assert not model.is_frozen(1)
    assert all(p.requires_grad for p in model.feature_extractor.parameters())


def test_freeze_at_freeze_step():
    model = _model().train()
    freeze = model.cfg.freeze_teacher_step
    before, after = _train_step(model, freeze, _wav())
    changed = _changed(before, after)
    assert changed == {"codebooks.sums", "codebooks.counts"}  # teacher stopped, codebooks keep going
    assert model.is_frozen(freeze)
    assert not any(p.requires_grad for p in model.feature_extractor.parameters())
    assert not any(p.requires_grad for p in model.feature_projection.parameters())
    model.zero_grad(set_to_none=True)
    model(_wav()).losses.sum().backward()
    assert all(p.grad is None for p in model.feature_extractor.parameters())
    assert model.student.layers[0].fc1.weight.grad is not None
    assert model.mask_embedding.grad is not None
    # apply_freeze is the restore path: it follows the schedule both ways.
    assert model.apply_freeze(freeze - 1) is False
    assert all(p.requires_grad for p in model.feature_projection.parameters())


def test_padded_batch_equals_single_utterances():
    model = _model().eval()
    lengths = torch.tensor([6400, 4321])
    wav = _wav()
    frames = model.frame_lengths(lengths).tolist()
    mask = torch.zeros(2, frames[0], dtype=torch.bool)
    mask[:, 3:9] = True
    mask[0, 15:19] = True
    batch = model(wav, lengths, mask=mask)
    singles = [
        model(wav[b : b + 1, :n], mask=mask[b : b + 1, :t]) for b, (n, t) in enumerate(zip(lengths, frames))
    ]
    assert batch.num_masked == sum(s.num_masked for s in singles)
    assert torch.allclose(batch.losses, torch.cat([s.losses for s in singles]), atol=1e-5)
    assert torch.equal(batch.codes, torch.cat([s.codes for s in singles], dim=1))
    total = singles[0].stats + singles[1].stats
    assert torch.allclose(batch.stats.sums, total.sums, atol=1e-4)
    assert torch.equal(batch.stats.counts, total.counts)


def test_gradient_accumulation_semantics():
    """Stats of two micro-batches summed then one post_step == one post_step on the concatenated batch.

    This is the documented choice (docs/DESIGN.md): one codebook EMA update per optimizer step from the
    statistics of the whole effective batch, not one per micro-batch as in fairseq/spidr.
    """
    model = _model().eval()
    wav = _wav(4, 4800)
    mask = model.sample_mask(4, model.frame_lengths(torch.tensor([4800])).item())
    whole = model(wav, mask=mask)
    parts = [model(wav[:2], mask=mask[:2]), model(wav[2:], mask=mask[2:])]
    summed = parts[0].stats + parts[1].stats
    assert torch.allclose(summed.sums, whole.stats.sums, atol=1e-4)
    assert torch.equal(summed.counts, whole.stats.counts)
    a, b, c = copy.deepcopy(model), copy.deepcopy(model), copy.deepcopy(model)
    a.post_step(1, summed)
    b.post_step(1, whole.stats)
    assert torch.allclose(a.codebooks.sums, b.codebooks.sums, atol=1e-5)
    assert torch.allclose(a.codebooks.counts, b.codebooks.counts)
    # Per-micro-batch updates (fairseq/spidr with update_freq > 1) give a different result.
    c.codebooks.update(parts[0].stats.sums, parts[0].stats.counts, c.cfg.codebook_decay)
    c.codebooks.update(parts[1].stats.sums, parts[1].stats.counts, c.cfg.codebook_decay)
    assert not torch.allclose(c.codebooks.sums, a.codebooks.sums, atol=1e-5)


def test_autocast_bf16():
    model = _model().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(_wav())
    assert out.losses.dtype == torch.float32
    assert torch.isfinite(out.losses).all()
    assert out.stats.sums.dtype == torch.float32
    assert out.stats.pred_prob_sum.dtype == torch.float32
    out.losses.mean(1).sum().backward()
    assert model.codebooks.sums.dtype == torch.float32


def test_intermediate_heads_read_their_own_layer():
    model = _model(head_placement="intermediate", num_codebook_layers=2)
    out = model(_wav())
    out.losses[:, 0].sum().backward()  # head 0 reads layer 2 of 3: layer 3 gets no gradient
    assert model.student.layers[1].fc2.weight.grad is not None
    assert model.student.layers[1].fc2.weight.grad.abs().sum() > 0
    for p in (model.student.layers[2].fc1.weight, model.heads[1].weight):
        assert p.grad is None or not p.grad.any()
    with pytest.raises(ValueError, match="layerdrop"):
        _cfg(head_placement="intermediate", layerdrop=0.05)


def test_sampled_mask_and_explicit_mask():
    torch.manual_seed(0)
    model = DinoSR(_cfg(), MaskingConfig(mask_prob=0.5, mask_length=2, min_masks=2))
    out = model(_wav(3))
    assert out.mask.shape == (3, model.frame_lengths(torch.tensor([6400])).item())
    with pytest.raises(ValueError, match="mask shape"):
        model(_wav(), mask=torch.zeros(2, 3, dtype=torch.bool))
    # Explicit masks at padded frames are dropped.
    mask = torch.ones(2, out.mask.shape[1], dtype=torch.bool)
    padded = model(_wav(), torch.tensor([6400, 3200]), mask=mask)
    assert padded.num_masked == int((~padded.padding_mask).sum())


def test_student_encode_uses_mask_embedding():
    model = _model().eval()
    wav = _wav(1)
    t = model.frame_lengths(torch.tensor([6400])).item()
    mask = torch.zeros(1, t, dtype=torch.bool)
    mask[0, 4] = True
    with torch.no_grad():
        plain = model.encode(wav)
        masked = model.encode(wav, mask=mask)
        teacher = model.encode(wav, teacher=True)
    assert len(plain.residuals) == len(plain.ffn) == 3
    assert not torch.allclose(plain.residuals[-1], masked.residuals[-1])
    # Teacher is an exact copy at step 0 (official init).
    assert torch.allclose(plain.residuals[-1], teacher.residuals[-1], atol=1e-6)


def test_instance_norm_matches_per_utterance_reference():
    x = torch.randn(2, 7, 4) * 3 + 1
    padding = torch.tensor([[False] * 7, [False] * 5 + [True] * 2])
    out = instance_norm_frames(x, padding)
    for b, t in enumerate([7, 5]):
        ref = torch.nn.functional.instance_norm(x[b : b + 1, :t].transpose(1, 2), eps=1e-5).transpose(1, 2)
        assert torch.allclose(out[b, :t], ref[0], atol=1e-5)
    assert torch.allclose(
        instance_norm_frames(x),
        torch.nn.functional.instance_norm(x.transpose(1, 2)).transpose(1, 2),
        atol=1e-5,
    )


def test_targets_and_losses_match_manual_computation():
    model = _model().eval()
    wav = _wav()
    out = model(wav)
    with torch.no_grad():
        teacher = model.encode(wav, teacher=True)
        student = model.encode(wav, mask=out.mask)
    for k, layer in enumerate(model.cfg.codebook_layers):  # 1-based layers 2, 3
        z = instance_norm_frames(teacher.ffn[layer - 1])[out.mask]
        dist2 = torch.cdist(z, model.codebooks.centroids()[k]) ** 2
        assert torch.equal(out.codes[k], dist2.argmin(-1))
        logp = model.heads[k](student.residuals[-1][out.mask]).log_softmax(-1)
        ref = -logp.gather(1, out.codes[k][:, None]).squeeze(1)
        assert torch.allclose(out.losses[:, k], ref, atol=1e-5)
