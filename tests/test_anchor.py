"""The acoustic anchor option (model.anchor_units > 0): features, k-means, loss, and its place in training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dinosr.model import DinoSR
from dinosr.model.anchor import AcousticAnchor
from dinosr.model.logmel import LogMelFrontend
from dinosr.train.checkpoint import latest_checkpoint, load_checkpoint
from dinosr.train.trainer import Trainer
from model_utils import micro_model_config
from train_utils import micro_config, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"), num_files=12)


def _reference_features(wav: torch.Tensor, n_mels: int, context: int) -> torch.Tensor:
    """Plain loops: per-utterance standardised log-mel, frames t-c..t+c concatenated, edges repeated."""
    x = LogMelFrontend(n_mels)(wav[None])[0].double()
    x = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)
    t = x.shape[0]
    rows = []
    for i in range(t):
        rows.append(torch.cat([x[min(max(i + o, 0), t - 1)] for o in range(-context, context + 1)]))
    return torch.stack(rows).float()


@pytest.mark.parametrize("context", [0, 2])
def test_features_match_a_loop_reference_on_the_model_frame_grid(context):
    anchor = AcousticAnchor(8, 16, n_mels=10, context=context)
    wav = torch.randn(16000 + 123, generator=torch.Generator().manual_seed(0))
    got = anchor.features(wav[None])[0]
    expected = _reference_features(wav, 10, context)
    assert got.shape == (1 + (len(wav) - 400) // 320, 10 * (2 * context + 1))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_padding_does_not_change_the_features_of_valid_frames():
    anchor = AcousticAnchor(8, 16, n_mels=10, context=1)
    wav = torch.randn(12000, generator=torch.Generator().manual_seed(1))
    alone = anchor.features(wav[None])[0]
    padded = torch.cat([wav, torch.zeros(6400)])[None]
    t = alone.shape[0]
    total = 1 + (padded.shape[1] - 400) // 320
    padding_mask = torch.arange(total)[None] >= t
    got = anchor.features(padded, padding_mask)[0, : t - 1]  # the last valid frame sees padding as context
    torch.testing.assert_close(got, alone[: t - 1], atol=1e-4, rtol=1e-4)


def test_fit_and_assign_agree_with_brute_force():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 6, generator=g) * 10
    frames = (centres[:, None] + 0.1 * torch.randn(5, 40, 6, generator=g)).reshape(-1, 6)
    anchor = AcousticAnchor(5, 16, n_mels=6, context=0)
    anchor.fit(frames, generator=torch.Generator().manual_seed(0))
    assert bool(anchor.fitted)
    codes = anchor.assign(frames)
    brute = torch.tensor(
        [min(range(5), key=lambda j: float((f - anchor.centroids[j]).square().sum())) for f in frames]
    )
    assert torch.equal(codes, brute)
    # Five well-separated blobs: each becomes one unit.
    assert len(set(codes.view(5, 40).unique(dim=1).flatten().tolist())) == 5
    assert all(len(row.unique()) == 1 for row in codes.view(5, 40))


def test_fit_rejects_bad_frames():
    anchor = AcousticAnchor(4, 16, n_mels=3, context=0)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        anchor.fit(torch.randn(10, 5))
    with pytest.raises(ValueError, match="at least as many frames"):
        anchor.fit(torch.randn(3, 3))


def test_model_option_adds_a_loss_and_leaves_the_official_state_dict_alone():
    plain = DinoSR(micro_model_config())
    assert not any(k.startswith("anchor.") for k in plain.state_dict())
    assert plain.anchor_weight(0) == 0.0

    torch.manual_seed(0)
    model = DinoSR(micro_model_config(anchor_units=6, anchor_mels=8, anchor_weight=0.5))
    keys = {k for k in model.state_dict() if k.startswith("anchor.")}
    assert {"anchor.centroids", "anchor.fitted", "anchor.head.weight", "anchor.head.bias"} <= keys
    assert model.anchor_weight(0) == model.anchor_weight(10**6) == 0.5  # the whole run
    wav = torch.randn(2, 16000, generator=torch.Generator().manual_seed(3))
    with pytest.raises(RuntimeError, match="not fitted"):
        model(wav)
    frames = model.anchor.features(wav).reshape(-1, model.anchor.centroids.shape[1])
    model.anchor.fit(frames, generator=torch.Generator().manual_seed(0))

    mask = torch.zeros(2, 49, dtype=torch.bool)
    mask[:, 10:30] = True
    model.eval()  # no dropout: the reference below recomputes the student
    out = model(wav, mask=mask)
    assert out.anchor_losses.shape == (out.num_masked,)
    # Reference: the head on the student's final layer at the masked frames, CE to the nearest centroid.
    x, _ = model.features(wav)
    x = torch.where(mask[..., None], model.mask_embedding, x)
    hidden = model.student(x, None).residuals[-1][mask]
    feats = model.anchor.features(wav)[mask]
    codes = torch.cdist(feats, model.anchor.centroids).argmin(-1)
    expected = F.cross_entropy(model.anchor.head(hidden), codes, reduction="none")
    torch.testing.assert_close(out.anchor_losses, expected, atol=1e-5, rtol=1e-5)
    # The anchor head is trained with the main group.
    main = next(g for g in model.param_groups() if g["name"] == "main")["params"]
    assert any(p is model.anchor.head.weight for p in main)


def test_trainer_fits_the_anchor_then_trains_it_and_resumes_exactly(tmp_path, corpus):
    sections = {
        "model": {"anchor_units": 8, "anchor_mels": 10},
        "run": {"max_steps": 4},
    }
    straight = Trainer(micro_config(tmp_path / "a", corpus, **sections))
    assert not bool(straight.model.anchor.fitted)
    head_before = straight.model.anchor.head.weight.detach().clone()
    assert straight.fit(until_step=3) == 3
    assert bool(straight.model.anchor.fitted)
    centroids = straight.model.anchor.centroids.clone()
    assert centroids.abs().sum() > 0
    head_after = straight.model.anchor.head.weight.detach().clone()
    assert not torch.equal(head_before, head_after)  # the anchor loss reached the head
    straight.fit()
    lines = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    records = [line for line in lines if "anchor_loss" in line]
    assert records, "the anchor loss is logged"
    final = straight.model.state_dict()
    straight.close()

    # A fresh trainer on the same workdir resumes from the checkpoint instead of refitting.
    again = Trainer(micro_config(tmp_path / "a", corpus, **sections))
    assert again.fit() == 4
    torch.testing.assert_close(again.model.anchor.centroids, centroids, rtol=0, atol=0)
    again.close()
    state = load_checkpoint(latest_checkpoint(tmp_path / "a" / "checkpoints"))
    torch.testing.assert_close(state["model"]["anchor.centroids"], final["anchor.centroids"], rtol=0, atol=0)

    # Interrupted at step 2 and resumed: the same final weights as the straight run.
    first = Trainer(micro_config(tmp_path / "b", corpus, **sections))
    first.fit(until_step=2)
    first.close()
    second = Trainer(micro_config(tmp_path / "b", corpus, **sections))
    second.fit()
    for key, value in final.items():
        assert torch.equal(second.model.state_dict()[key], value), key
    second.close()


def test_anchor_fit_frames_skip_or_name_a_bad_file(tmp_path, corpus):
    from dataclasses import replace

    from dinosr.data.audio import AudioError
    from dinosr.data.config import DataConfig
    from dinosr.data.manifest import ManifestEntry, read_manifest
    from dinosr.train.anchor_fit import anchor_fit_frames

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wav")
    entries = [*read_manifest(corpus), ManifestEntry(name="bad", path=str(bad), num_samples=16000)]
    anchor = AcousticAnchor(4, 16, n_mels=8, context=0)
    cfg = DataConfig(skip_bad_files=True)
    frames = anchor_fit_frames(anchor, entries, cfg, minutes=100.0, seed=0)
    good = sum(1 + (e.num_samples - 400) // 320 for e in entries[:-1])
    assert frames.shape == (good, 8)  # every good file read once, the bad one skipped
    with pytest.raises(AudioError, match=r"bad\.wav"):
        anchor_fit_frames(anchor, entries, replace(cfg, skip_bad_files=False), minutes=100.0, seed=0)
