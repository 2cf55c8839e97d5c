"""Small-batch remedies (dinosr.model.remedies, research/small_batch.md): mechanics, and off by default."""

import multiprocessing as mp
import os

import pytest
import torch
import torch.distributed as dist

from dinosr.model import DinoSR, ModelConfig
from dinosr.model.codebook import Codebooks, CodebookStats
from dinosr.model.remedies import CodebookUpkeep, kmeans_pp, sample_frames
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
    # no frames: the same shape (all_gather needs it on every rank), zero rows
    assert torch.equal(sample_frames(torch.randn(2, 0, 3), 8), torch.zeros(2, 8, 3))


def test_micro_batch_without_masked_frames_keeps_the_sample_shape_and_is_ignored():
    model = _model(codebook_init="kmeans", codebook_restart_steps=1, codebook_sample_frames=16)
    wav = _wave()
    empty = model(wav, mask=torch.zeros(2, 49, dtype=torch.bool))
    assert empty.num_masked == 0
    assert empty.stats.samples.shape == (2, 16, 32)
    assert not empty.stats.sample_valid.any()
    full = model(wav)
    both = empty.stats + full.stats
    assert both.samples.shape == (2, 32, 32)
    assert both.sample_valid.tolist() == [False] * 16 + [True] * 16
    # the k-means init sees only the real targets: same codebook as from the full micro-batch alone
    a = _model(codebook_init="kmeans", codebook_restart_steps=1, codebook_sample_frames=16)
    b = _model(codebook_init="kmeans", codebook_restart_steps=1, codebook_sample_frames=16)
    a.post_step(1, both)
    b.post_step(1, full.stats)
    assert torch.equal(a.codebooks.sums, b.codebooks.sums)
    # a step of only empty micro-batches does nothing (no init from zero rows)
    c = _model(codebook_init="kmeans", codebook_sample_frames=16)
    sums = c.codebooks.sums.clone()
    c.post_step(1, empty.stats)
    assert torch.equal(c.codebooks.sums, sums)
    assert not bool(c.codebook_upkeep.initialized)


def _gather_worker(rank: int, path: str, queue) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    dist.init_process_group("gloo", store=dist.FileStore(path, 2), rank=rank, world_size=2)
    try:
        num = 0 if rank == 0 else 3  # rank 0's micro-batch had no masked frames
        targets = torch.full((1, num, 2), float(rank + 1))
        valid = torch.full((4,), num > 0)
        zeros = torch.zeros(1, 2)
        stats = CodebookStats(torch.zeros(1, 2, 2), zeros, zeros.clone(), sample_frames(targets, 4), valid)
        stats.all_reduce()
        queue.put((rank, stats.samples.shape, stats.sample_valid.tolist()))
    finally:
        dist.destroy_process_group()


def test_all_gather_over_ranks_when_one_rank_has_no_masked_frames(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_gather_worker, args=(r, str(tmp_path / "store"), queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for _, shape, valid in results:
        assert tuple(shape) == (1, 8, 2)
        assert valid == [False] * 4 + [True] * 4


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
    with pytest.raises(ValueError, match="codebook_sample_frames"):
        _cfg(codebook_sample_frames=0)


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
        assert "sinkhorn" not in w  # a removed option is never recommended
        assert "codebook_restart_steps" in w
