"""Online codebooks (spec 6) against naive references."""

import pytest
import torch
import torch.distributed as dist

from dinosr.model.codebook import Codebooks, CodebookStats, nearest_codeword, perplexity
from dinosr.model.config import ModelConfig, tiny_model_config


@pytest.fixture
def books() -> Codebooks:
    torch.manual_seed(0)
    cb = Codebooks(3, 16, 8)
    # Non-trivial counts so that centroids differ from sums.
    cb.counts.uniform_(0.5, 3.0)
    return cb


def test_init_is_standardised_per_dimension():
    torch.manual_seed(0)
    cb = Codebooks(2, 256, 32)
    assert cb.sums.shape == (2, 256, 32)
    assert cb.sums.dtype == torch.float32
    assert torch.equal(cb.counts, torch.ones(2, 256))
    # Each feature dimension is zero-mean / unit-variance across the codewords.
    assert torch.allclose(cb.sums.mean(1), torch.zeros(2, 32), atol=1e-5)
    assert torch.allclose(cb.sums.var(1, unbiased=False), torch.ones(2, 32), atol=1e-3)
    assert {name for name, _ in cb.named_buffers()} == {"sums", "counts"}
    assert list(cb.parameters()) == []


def test_assign_is_bruteforce_argmin(books):
    z = torch.randn(3, 200, 8) * 2
    codes = books.assign(z)
    e = books.centroids().double()
    dist2 = ((z.double()[:, :, None, :] - e[:, None, :, :]) ** 2).sum(-1)  # (K, M, V)
    brute = dist2.argmin(-1)
    # Indices agree except possibly at fp32 near-ties, where the chosen distance must still be minimal.
    chosen = dist2.gather(-1, codes[..., None]).squeeze(-1)
    assert torch.allclose(chosen, dist2.min(-1).values, rtol=1e-5, atol=1e-5)
    assert (codes == brute).float().mean() > 0.99


def test_assign_under_autocast_is_fp32(books):
    z = torch.randn(3, 50, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        codes = books.assign(z.bfloat16())
    assert torch.equal(codes, books.assign(z.bfloat16().float()))


def test_batch_stats_equals_loop(books):
    z = torch.randn(3, 40, 8)
    codes = torch.randint(0, 16, (3, 40))
    sums, counts = books.batch_stats(z, codes)
    ref_sums, ref_counts = torch.zeros(3, 16, 8), torch.zeros(3, 16)
    for k in range(3):
        for m in range(40):
            ref_sums[k, codes[k, m]] += z[k, m]
            ref_counts[k, codes[k, m]] += 1
    assert torch.allclose(sums, ref_sums, atol=1e-6)
    assert torch.equal(counts, ref_counts)


def test_update_equals_naive_loop(books):
    decay = 0.9
    z = torch.randn(3, 10, 8)
    codes = torch.randint(0, 16, (3, 10))  # 10 draws of 16 codewords: some codewords stay unused
    sums, counts = books.batch_stats(z, codes)
    ref_s, ref_n = books.sums.clone(), books.counts.clone()
    for k in range(3):
        for v in range(16):
            if counts[k, v] > 0:
                ref_s[k, v] = decay * ref_s[k, v] + (1 - decay) * sums[k, v]
                ref_n[k, v] = decay * ref_n[k, v] + (1 - decay) * counts[k, v]
    before = books.sums.clone()
    books.update(sums, counts, decay)
    assert torch.allclose(books.sums, ref_s, atol=1e-6)
    assert torch.allclose(books.counts, ref_n, atol=1e-6)
    unused = counts == 0
    assert unused.any()
    assert torch.equal(books.sums[unused], before[unused])  # dead codewords are never touched


def _stats(seed: int) -> CodebookStats:
    g = torch.Generator().manual_seed(seed)
    return CodebookStats(
        torch.randn(2, 4, 3, generator=g), torch.rand(2, 4, generator=g), torch.rand(2, 4, generator=g)
    )


def test_stats_add_and_perplexity():
    a, b = _stats(0), _stats(1)
    s = a + b
    assert torch.equal(s.sums, a.sums + b.sums)
    assert torch.equal(s.counts, a.counts + b.counts)
    assert torch.equal(s.pred_prob_sum, a.pred_prob_sum + b.pred_prob_sum)
    uniform = CodebookStats(torch.zeros(1, 8, 2), torch.full((1, 8), 5.0), torch.tensor([[7.0] + [0.0] * 7]))
    assert torch.allclose(uniform.target_perplexity(), torch.tensor([8.0]))
    assert torch.allclose(uniform.pred_perplexity(), torch.tensor([1.0]))
    assert uniform.num_active().tolist() == [8]


def test_all_reduce_noop_and_single_rank_group(tmp_path):
    a = _stats(0)
    ref = CodebookStats(a.sums.clone(), a.counts.clone(), a.pred_prob_sum.clone())
    assert not dist.is_initialized()
    assert a.all_reduce() is a
    assert torch.equal(a.sums, ref.sums)
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        a.all_reduce()  # world size 1: SUM is the identity; exercises the pack/unpack
    finally:
        dist.destroy_process_group()
    for x, y in [(a.sums, ref.sums), (a.counts, ref.counts), (a.pred_prob_sum, ref.pred_prob_sum)]:
        assert torch.equal(x, y)


def test_nearest_codeword_is_bruteforce_argmin_for_any_leading_shape():
    torch.manual_seed(0)
    e = torch.randn(16, 8)
    x = torch.randn(2, 5, 8)
    ref = torch.tensor([[min(range(16), key=lambda v: float(((x[b, t] - e[v]) ** 2).sum())) for t in range(5)]
                        for b in range(2)])
    assert torch.equal(nearest_codeword(x, e), ref)
    assert torch.equal(nearest_codeword(x[0, 0], e), ref[0, 0])  # a single vector
    assert nearest_codeword(torch.zeros(0, 8), e).shape == (0,)
    # batched: codebook k for row k
    books = torch.randn(3, 16, 8)
    xs = torch.randn(3, 7, 8)
    got = nearest_codeword(xs, books)
    assert torch.equal(got, torch.stack([nearest_codeword(xs[k], books[k]) for k in range(3)]))


def test_perplexity_reference():
    counts = torch.tensor([[1.0, 1.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    p = torch.tensor([0.25, 0.25, 0.5])
    assert perplexity(counts)[0].item() == pytest.approx(float(torch.exp(-(p * p.log()).sum())))
    assert perplexity(counts)[1].item() == 1.0  # an all-zero row


@pytest.mark.parametrize("frontend", ["conv", "logmel"])
def test_hop_length_and_receptive_field(frontend):
    """320 / 400 samples for the official CNN and the log-mel option, and equal to the real front end."""
    from dinosr.model import DinoSR

    for cfg in (ModelConfig(frontend=frontend), tiny_model_config()):
        assert (cfg.hop_length, cfg.receptive_field) == (320, 400)
    cfg = ModelConfig(frontend=frontend, conv_layers=((8, 4, 3), (8, 3, 2)), embed_dim=32, num_heads=4,
                      ffn_dim=64, num_layers=1, num_codebook_layers=1, pos_conv_groups=4)
    model = DinoSR(cfg)
    n = torch.arange(cfg.receptive_field, cfg.receptive_field + 5 * cfg.hop_length)
    frames = model.frame_lengths(n)
    assert frames[0] == 1  # one receptive field = one frame
    assert torch.equal(frames, 1 + (n - cfg.receptive_field) // cfg.hop_length)
    # conv: hop 3 x 2; field: 3 samples of the last block's input = (3 - 1) * 3 + 4 = 10 samples
    expected = (6, 10) if frontend == "conv" else (320, 400)
    assert (cfg.hop_length, cfg.receptive_field) == expected
