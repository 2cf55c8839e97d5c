"""CTC fine-tuning model (dinosr.model.ctc): weight copy, masking, freezing, front end, CTC loss reduction."""

import math

import pytest
import torch
import torch.nn.functional as F

from dinosr.model import DinoSR
from dinosr.model.ctc import CTCConfig, DinoSRForCTC, ctc_loss_sum
from model_utils import micro_model_config

V = 7  # vocabulary: blank + 6 symbols


def _wav(b: int = 2, n: int = 6400, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, n, generator=torch.Generator().manual_seed(seed))


def _dinosr(**overrides) -> DinoSR:
    torch.manual_seed(0)
    return DinoSR(micro_model_config(**overrides))


def _ctc(ctc_cfg: CTCConfig | None = None, **overrides) -> DinoSRForCTC:
    torch.manual_seed(0)
    return DinoSRForCTC(micro_model_config(**overrides), V, ctc_cfg)


# ----------------------------------------------------------------------------- weight copy
@pytest.mark.parametrize(
    ("frontend", "cmn", "conv"),
    [("conv", False, 0), ("logmel", False, 0), ("logmel", True, 0), ("logmel", True, 3)],
)
def test_from_dinosr_copies_the_student_and_matches_its_encoder(frontend, cmn, conv):
    dinosr = _dinosr(frontend=frontend, n_mels=16, logmel_cmn=cmn, logmel_conv=conv)
    ctc = DinoSRForCTC.from_dinosr(dinosr, V)
    keys = set(ctc.state_dict())
    assert not any(k.startswith(("teacher.", "heads.", "codebooks.", "anchor.")) for k in keys)
    source = dinosr.state_dict()
    for key, value in ctc.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(value, source[key]), key
    wav, lengths = _wav(), torch.tensor([6400, 4321])
    dinosr.eval()
    ctc.eval()
    with torch.no_grad():
        expected = dinosr.encode(wav, lengths)
        hidden, frame_lengths, padding_mask = ctc.encode(wav, lengths)
        out = ctc(wav, lengths)
    assert torch.equal(hidden, expected.residuals[-1])
    assert torch.equal(padding_mask, expected.padding_mask)
    assert torch.equal(frame_lengths, dinosr.frame_lengths(lengths))
    assert out.logits.shape == (2, hidden.shape[1], V)
    assert torch.allclose(out.logits, ctc.head(hidden))


def test_from_dinosr_drops_the_anchor_and_refuses_unknown_student_weights():
    dinosr = _dinosr(anchor_units=4, anchor_mels=8)
    ctc = DinoSRForCTC.from_dinosr(dinosr, V)
    assert not any(k.startswith("anchor") for k in ctc.state_dict())
    dinosr.student.register_buffer("unexpected", torch.zeros(1))
    with pytest.raises(ValueError, match=r"student\.unexpected"):
        DinoSRForCTC.from_dinosr(dinosr, V)


def test_fine_tuning_dropouts_replace_the_pretraining_ones():
    cfg = CTCConfig(dropout=0.2, attention_dropout=0.3, activation_dropout=0.4, layerdrop=0.25)
    ctc = _ctc(cfg, dropout=0.1, layerdrop=0.05)
    assert (ctc.cfg.dropout, ctc.cfg.attention_dropout, ctc.cfg.activation_dropout) == (0.2, 0.3, 0.4)
    assert ctc.student.layerdrop == 0.25
    layer = ctc.student.layers[0]
    assert layer.dropout.p == 0.2
    assert layer.attention.dropout == 0.3
    assert layer.activation_dropout.p == 0.4
    default = CTCConfig()  # fairseq Wav2Vec2AsrConfig + base_100h.yaml
    assert (default.mask_prob, default.mask_length, default.mask_channel_prob) == (0.65, 10, 0.5)
    assert (default.mask_channel_length, default.layerdrop, default.activation_dropout) == (64, 0.1, 0.1)
    assert (default.dropout, default.attention_dropout, default.final_dropout) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("field", "value"), [("mask_prob", 1.5), ("layerdrop", 1.0), ("final_dropout", -0.1), ("mask_length", 0)]
)
def test_ctc_config_validates(field, value):
    with pytest.raises(ValueError, match=field):
        CTCConfig(**{field: value})


def test_vocab_size_is_validated():
    with pytest.raises(ValueError, match="vocab_size"):
        DinoSRForCTC(micro_model_config(), 1)


# ----------------------------------------------------------------------------- masking
def test_time_mask_rate_and_structure():
    ctc = _ctc(CTCConfig(mask_prob=0.65, mask_length=10))
    torch.manual_seed(3)
    padding = torch.zeros(4, 1000, dtype=torch.bool)
    padding[1, 900:] = True
    fractions = []
    for _ in range(10):
        time_mask, _ = ctc.sample_masks(4, 1000, padding)
        assert time_mask.shape == (4, 1000)
        assert not (time_mask & padding).any()
        counts = time_mask.sum(1)
        assert (counts == counts[0]).all()  # require_same_masks
        fractions.append(counts[0].item() / 1000)
    # 65 spans of 10 over 1000 frames cover 1 - (1 - 10/990)^65 = 48 % (fewer after equalising the rows).
    assert 0.40 < sum(fractions) / len(fractions) < 0.50


def test_channel_mask_rate_and_structure():
    ctc = _ctc(CTCConfig(mask_channel_prob=0.5, mask_channel_length=64), embed_dim=256, num_heads=2)
    torch.manual_seed(4)
    for _ in range(10):
        _, channel_mask = ctc.sample_masks(3, 50)
        assert channel_mask.shape == (3, 256)
        counts = channel_mask.sum(1)
        assert (counts == counts[0]).all()
        # floor(0.5 * 256 / 64 + u) = 2 spans of 64 channels, possibly overlapping
        assert 64 <= counts[0] <= 128


def test_masks_are_applied_to_the_transformer_input():
    ctc = _ctc(CTCConfig(dropout_input=0.0)).train()
    wav = _wav()
    captured = []
    ctc.student.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach().clone()))
    with torch.no_grad():
        features = ctc.feature_projection(ctc.feature_extractor(wav))
    b, t, d = features.shape
    time_mask = torch.zeros(b, t, dtype=torch.bool)
    time_mask[0, 2:5] = True
    time_mask[1, 7:9] = True
    channel_mask = torch.zeros(b, d, dtype=torch.bool)
    channel_mask[0, :4] = True
    channel_mask[1, 10:12] = True
    ctc.sample_masks = lambda *args: (time_mask, channel_mask)
    ctc(wav)
    x = captured[-1]
    expected = torch.where(time_mask[..., None], ctc.mask_embedding.detach(), features)
    expected = expected.masked_fill(channel_mask[:, None, :], 0.0)  # zero over all time steps
    assert torch.allclose(x, expected)
    assert (x[0, :, :4] == 0).all()
    assert (x[1, :, 10:12] == 0).all()


def test_masking_only_in_training_unless_asked():
    ctc = _ctc()
    calls = []
    sample = ctc.sample_masks
    ctc.sample_masks = lambda *args: calls.append(1) or sample(*args)
    wav = _wav()
    ctc.train()(wav)
    assert len(calls) == 1
    ctc(wav, apply_mask=False)
    ctc.eval()(wav)
    assert len(calls) == 1
    ctc(wav, apply_mask=True)
    assert len(calls) == 2


# ----------------------------------------------------------------------------- gradients
def _loss(ctc: DinoSRForCTC, **kwargs) -> torch.Tensor:
    out = ctc(_wav(), torch.tensor([6400, 5000]), **kwargs)
    return ctc_loss_sum(out.logits, out.frame_lengths, [[1, 2, 3], [4, 5]])


def test_front_end_never_gets_gradient():
    ctc = _ctc(layerdrop=0.0).train()
    assert not any(p.requires_grad for p in ctc.feature_extractor.parameters())
    ctc.feature_extractor.requires_grad_(True)  # even when asked to: it runs under no_grad
    _loss(ctc).backward()
    assert all(p.grad is None for p in ctc.feature_extractor.parameters())
    for name, p in ctc.named_parameters():
        if not name.startswith("feature_extractor."):
            assert p.grad is not None, name
            assert p.grad.abs().sum() > 0, name


def test_freeze_encoder_trains_only_the_head():
    ctc = _ctc(CTCConfig(layerdrop=0.0)).train()
    _loss(ctc, freeze_encoder=True).backward()
    for name, p in ctc.named_parameters():
        if name.startswith("head."):
            assert p.grad is not None
            assert p.grad.abs().sum() > 0
        else:
            assert p.grad is None, name


def test_an_outer_no_grad_stays_in_force():
    ctc = _ctc().eval()
    with torch.no_grad():
        out = ctc(_wav())
    assert not out.logits.requires_grad


@pytest.mark.parametrize("overrides", [{}, {"frontend": "logmel", "n_mels": 16, "logmel_conv": 3}])
def test_param_groups_cover_every_trainable_parameter_once(overrides):
    ctc = _ctc(**overrides)
    groups = ctc.param_groups()
    assert [g["name"] for g in groups] == ["encoder", "head"]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    trainable = {id(p) for n, p in ctc.named_parameters() if not n.startswith("feature_extractor.")}
    assert set(ids) == trainable
    assert {id(p) for p in groups[1]["params"]} == {id(ctc.head.weight), id(ctc.head.bias)}


def test_layerdrop_only_in_training():
    ctc = _ctc(CTCConfig(layerdrop=0.9, mask_prob=0.0, mask_channel_prob=0.0, activation_dropout=0.0))
    wav = _wav()
    ctc.eval()
    with torch.no_grad():
        ref = ctc(wav).logits
        assert torch.equal(ctc(wav).logits, ref)
        torch.manual_seed(0)
        ctc.train()
        differs = [not torch.allclose(ctc(wav).logits, ref) for _ in range(5)]
    assert any(differs)  # layers skipped (no dropout left to explain a difference)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"frontend": "logmel", "n_mels": 16, "logmel_cmn": True},
        {"frontend": "logmel", "n_mels": 16, "logmel_cmn": True, "logmel_cvn": True},
        {"frontend": "logmel", "n_mels": 16, "logmel_cmn": True, "logmel_conv": 3},
    ],
)
def test_padded_batch_equals_single_utterances(overrides):
    ctc = _ctc(**overrides).eval()
    wav = _wav()
    lengths = torch.tensor([6400, 4000])
    with torch.no_grad():
        out = ctc(wav, lengths)
        single = ctc(wav[1:, :4000])
    n = int(out.frame_lengths[1])
    assert n == single.logits.shape[1]
    assert out.padding_mask[1, n:].all()
    assert not out.padding_mask[1, :n].any()
    assert torch.allclose(out.logits[1, :n], single.logits[0], atol=1e-4)


# ----------------------------------------------------------------------------- CTC loss
def test_ctc_loss_sum_on_a_hand_example():
    # Uniform scores over {blank, a}: every frame has p = 1/2.
    # "a" in 2 frames: paths (a,a), (blank,a), (a,blank) -> P = 3/4.
    # "a a" in 3 frames: only (a,blank,a) -> P = 1/8.
    logits = torch.zeros(2, 3, 2)
    loss = ctc_loss_sum(logits, torch.tensor([2, 3]), [[1], [1, 1]])
    assert loss.item() == pytest.approx(-math.log(3 / 4) + math.log(8), rel=1e-6)


def test_ctc_loss_sum_against_torch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 20, V, generator=g, requires_grad=True)
    frame_lengths = torch.tensor([20, 17, 12])
    seqs = [[1, 2, 2, 3], [4, 5, 6, 1, 1, 2], [3]]
    target_lengths = torch.tensor([len(s) for s in seqs])
    padded = torch.full((3, 6), -100)
    for i, s in enumerate(seqs):
        padded[i, : len(s)] = torch.tensor(s)
    log_probs = F.log_softmax(logits, -1).transpose(0, 1)
    flat = torch.cat([torch.tensor(s) for s in seqs])
    none = F.ctc_loss(log_probs, flat, frame_lengths, target_lengths, reduction="none", zero_infinity=True)
    mean = F.ctc_loss(log_probs, flat, frame_lengths, target_lengths, reduction="mean", zero_infinity=True)

    total = ctc_loss_sum(logits, frame_lengths, seqs)
    assert torch.allclose(total, none.sum())
    assert torch.allclose(ctc_loss_sum(logits, frame_lengths, padded, target_lengths), total)
    # torch's "mean" divides each sentence by its target length before averaging; fairseq does not.
    per_sentence = torch.stack(
        [ctc_loss_sum(logits[i : i + 1], frame_lengths[i : i + 1], [seqs[i]]) for i in range(3)]
    )
    assert torch.allclose(per_sentence.sum(), total)
    assert torch.allclose((per_sentence / target_lengths).mean(), mean)
    total.backward()
    assert torch.isfinite(logits.grad).all()


def test_ctc_loss_sum_zero_infinity_and_fp32():
    logits = torch.randn(2, 4, V, dtype=torch.bfloat16, requires_grad=True)
    # 5 labels cannot fit in 4 frames: that sentence contributes 0 instead of inf.
    loss = ctc_loss_sum(logits, torch.tensor([4, 4]), [[1, 2, 3, 4, 5], [1]])
    assert loss.dtype == torch.float32
    alone = ctc_loss_sum(logits[1:], torch.tensor([4]), [[1]])
    assert torch.isfinite(loss)
    assert torch.allclose(loss, alone)
    loss.backward()
    assert torch.isfinite(logits.grad.float()).all()


def test_ctc_loss_sum_needs_lengths_for_padded_targets():
    with pytest.raises(ValueError, match="target_lengths"):
        ctc_loss_sum(torch.zeros(1, 3, V), torch.tensor([3]), torch.tensor([[1, 2]]))
