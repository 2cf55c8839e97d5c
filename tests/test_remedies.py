"""Small-batch remedies (dinosr.model.remedies, docs/small_batch.md): mechanics, and off by default."""

import pytest
import torch

from dinosr.model import DinoSR, ModelConfig
from dinosr.model.codebook import Codebooks, CodebookStats
from dinosr.model.remedies import CodebookUpkeep, kmeans_pp, sample_frames, sinkhorn_assign
from model_utils import micro_model_config


def _cfg(**overrides) -> ModelConfig:
    return micro_model_config(**{"layerdrop": 0.0, **overrides})


def _model(**overrides) -> DinoSR:
    torch.manual_seed(0)
    return DinoSR(_cfg(**overrides))


def _wave(b: int = 2, seconds: float = 1.0) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(b, int(16000 * seconds))


def test_official_defaults_are_off():
    cfg = ModelConfig()
    assert (cfg.codebook_init, cfg.codebook_restart_steps) == ("random", 0)
    assert cfg.target_assignment == "nearest"
    model = _model()
    assert model.codebook_upkeep is None
    assert not any(k.startswith("codebook_upkeep") for k in model.state_dict())
    assert model(_wave()).stats.samples is None


def test_sample_frames_fixed_shape_with_replacement():
    targets = torch.randn(2, 5, 3)
    s = sample_frames(targets, 8)
    assert s.shape == (2, 8, 3)
    for k in range(2):  # every sample is one of that codebook's targets
        d = torch.cdist(s[k], targets[k]).min(-1).values
        assert torch.all(d < 1e-6)
    assert sample_frames(torch.randn(2, 0, 3), 8).shape == (2, 0, 3)


def test_stats_add_concatenates_samples():
    a = CodebookStats(torch.ones(1, 2, 3), torch.ones(1, 2), torch.ones(1, 2), torch.zeros(1, 4, 3))
    b = CodebookStats(torch.ones(1, 2, 3), torch.ones(1, 2), torch.ones(1, 2), torch.ones(1, 5, 3))
    c = a + b
    assert c.samples.shape == (1, 9, 3)
    assert torch.equal(c.counts, 2 * torch.ones(1, 2))
    none = CodebookStats(torch.ones(1, 2, 3), torch.ones(1, 2), torch.ones(1, 2))
    assert (none + none).samples is None


def test_kmeans_pp_finds_separated_clusters():
    torch.manual_seed(0)
    centres = torch.tensor([[10.0, 0.0], [-10.0, 0.0], [0.0, 10.0], [0.0, -10.0]])
    x = (centres[:, None] + 0.1 * torch.randn(4, 50, 2)).reshape(-1, 2)
    found = kmeans_pp(x, 4, generator=torch.Generator().manual_seed(0))
    assert torch.cdist(centres, found).min(-1).values.max() < 0.2


def test_sinkhorn_balances_what_nearest_collapses():
    torch.manual_seed(0)
    centroids = torch.randn(1, 8, 4)
    centroids[0, 0] = 0.0  # the codeword at the data mean wins every nearest assignment
    targets = 0.1 * torch.randn(1, 64, 4)
    cb = Codebooks(1, 8, 4)
    cb.sums.copy_(centroids)
    assert cb.assign(targets).unique().numel() == 1
    codes = sinkhorn_assign(targets, centroids, iters=20, temperature=0.05)
    counts = torch.bincount(codes[0], minlength=8)
    assert (counts > 0).sum() >= 6
    assert counts.max() <= 16


def test_sinkhorn_only_in_training():
    model = _model(target_assignment="sinkhorn")
    with torch.no_grad():  # codeword 0 at the mean of the (instance-normalised) targets wins every frame
        model.codebooks.sums[:, 0] = 0.0
        model.codebooks.sums[:, 1:] *= 3.0
    model.eval()  # evaluation: nearest codeword
    assert model(_wave()).codes.unique().numel() == 1
    model.train()  # training: balanced targets
    for k in range(2):
        assert model(_wave()).codes[k].unique().numel() >= 8


def test_kmeans_init_replaces_random_codebook_once():
    model = _model(codebook_init="kmeans", codebook_sample_frames=64)
    random_sums = model.codebooks.sums.clone()
    out = model(_wave())
    assert out.stats.samples.shape == (2, 64, 32)
    model.post_step(1, out.stats)
    assert bool(model.codebook_upkeep.initialized)
    assert torch.all(model.codebooks.counts == 1.0)
    # Every codeword is now (a mean of) sampled targets: near the data, unlike the random ones.
    for k in range(2):
        d_new = torch.cdist(model.codebooks.centroids()[k], out.stats.samples[k]).min(-1).values
        d_old = torch.cdist(random_sums[k], out.stats.samples[k]).min(-1).values
        assert d_new.mean() < d_old.mean()
    init = model.codebooks.sums.clone()
    out2 = model(_wave())
    model.post_step(2, out2.stats)  # later steps are ordinary EMA updates, not a new init
    used = out2.stats.counts > 0
    assert torch.allclose(model.codebooks.sums[~used], init[~used])


def test_dead_codewords_restart_on_recent_targets():
    cb = Codebooks(1, 4, 2)
    upkeep = CodebookUpkeep(1, 4, kmeans_init=False, restart_steps=3)
    samples = torch.full((1, 5, 2), 7.0)
    counts = torch.tensor([[5.0, 0.0, 0.0, 0.0]])
    stats = CodebookStats(torch.zeros(1, 4, 2), counts, torch.zeros(1, 4), samples)
    for step in (1, 2):
        upkeep.apply(cb, stats, step, 0.9)
        assert not torch.any(cb.centroids() == 7.0)
    upkeep.apply(cb, stats, 3, 0.9)  # codewords 1-3 unused for 3 steps
    assert torch.all(cb.centroids()[0, 1:] == 7.0)
    assert torch.all(upkeep.last_used[0, 1:] == 3)
    assert not torch.all(cb.centroids()[0, 0] == 7.0)


def test_remedies_train_end_to_end():
    model = _model(
        codebook_init="kmeans",
        codebook_restart_steps=2,
        target_assignment="sinkhorn",
        codebook_sample_frames=32,
    )
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    for step in range(1, 5):
        out = model(_wave())
        out.losses.mean().backward()
        opt.step()
        opt.zero_grad()
        model.post_step(step, out.stats)
    assert torch.isfinite(model.codebooks.centroids()).all()
    assert set(model.state_dict()) >= {"codebook_upkeep.initialized", "codebook_upkeep.last_used"}


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="codebook_restart_steps"):
        _cfg(codebook_restart_steps=-1)
    with pytest.raises(ValueError, match="sinkhorn_temperature"):
        _cfg(sinkhorn_temperature=0.0)


def test_collapse_warnings_name_the_remedies():
    from dinosr.train.metrics_log import collapse_warnings

    healthy = {"active_codewords": [200, 180], "target_ppl": [120.0, 90.0], "loss": 3.0}
    assert collapse_warnings(healthy, codebook_size=256, min_active=0.1, min_loss=0.05) == []
    collapsed = {"active_codewords": [200, 12], "target_ppl": [120.0, 4.5], "loss": 0.01}
    warnings = collapse_warnings(collapsed, codebook_size=256, min_active=0.1, min_loss=0.05)
    assert len(warnings) == 3  # active codewords, perplexity, loss
    assert any("perplexity" in w and "1:4.5" in w for w in warnings)
    for w in warnings:
        assert "codebook_init" in w
        assert "codebook_restart_steps" in w
