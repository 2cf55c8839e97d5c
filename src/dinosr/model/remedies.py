"""Small-batch remedies for online-codebook collapse (issue 6, research/small_batch.md).

The official DinoSR recipe updates each codebook from ~3800 s of audio per optimizer step; at CPU scale
(~16 s per step) the first EMA update already collapses the codebooks: the few codewords that were
assigned move from their random initialisation onto the data (and towards its mean), so they are now
nearer to *every* target than the never-assigned random codewords, win the next step's assignments too,
and within two steps ~15 of 256 codewords take all frames. The options here attack that mechanism; all
are off by default (``ModelConfig``), so the official recipe is unchanged; the tiny recipe uses both:

* ``codebook_init="kmeans"``: the codebooks are replaced, at the first update, by k-means++ (+ a few Lloyd
  iterations) on that step's teacher targets, so every codeword starts on the data.
* ``codebook_restart_steps``: a codeword not assigned for that many steps is moved onto a random recent
  teacher target (the classic dead-code restart of VQ training).
Tried and removed (research/small_batch.md): a codebook decay defined per frame of audio instead of per step
(the codebook then barely moves and the teacher collapses completely), Sinkhorn-Knopp balanced training
targets (``target_assignment="sinkhorn"``; with the queue of recent targets variant: stale targets let
the batch collapse again), superseded by the k-means init + restarts and the acoustic anchor.

Frames for the k-means init and the restarts travel in ``CodebookStats.samples`` (a fixed number per
micro-batch, drawn with replacement, all-gathered over ranks), so every rank applies the same update. A
micro-batch without masked frames sends the same number of zero rows marked invalid in
``CodebookStats.sample_valid``: ``all_gather`` needs equal shapes on every rank.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dinosr.model.codebook import Codebooks, CodebookStats, nearest_codeword


def sample_frames(targets: Tensor, num: int) -> Tensor:
    """(K, M, D) -> (K, num, D) fp32: ``num`` frames per codebook drawn uniformly with replacement.

    Global torch RNG.

    Drawing a fixed number (even from fewer frames) keeps the shape equal on every rank for all_gather;
    without frames (M = 0) the rows are zeros and draw nothing (mark them invalid, see the module doc).
    """
    k, m, d = targets.shape
    if m == 0:
        return targets.new_zeros(k, num, d, dtype=torch.float32)
    idx = torch.randint(m, (k, num), device=targets.device)
    return torch.gather(targets.float(), 1, idx[..., None].expand(-1, -1, d))


def kmeans_pp(x: Tensor, k: int, *, iters: int = 10, generator: torch.Generator | None = None) -> Tensor:
    """k-means++ seeding then ``iters`` Lloyd iterations: (N, D) -> (k, D) fp32 centres.

    With fewer distinct points than ``k`` the extra centres are copies of random points (they split off
    later through the EMA updates or a restart). An empty cluster keeps its previous centre.
    """
    x = x.float()
    n = x.shape[0]
    centres = torch.empty(k, x.shape[1], dtype=x.dtype, device=x.device)
    first = torch.randint(n, (1,), generator=generator, device="cpu").item()
    centres[0] = x[first]
    closest = (x - centres[0]).square().sum(-1)
    for i in range(1, k):
        total = closest.sum()
        if total <= 0:  # every point is already a centre
            j = torch.randint(n, (1,), generator=generator, device="cpu").item()
        else:
            j = torch.multinomial((closest / total).cpu(), 1, generator=generator).item()
        centres[i] = x[j]
        closest = torch.minimum(closest, (x - centres[i]).square().sum(-1))
    for _ in range(iters):
        assign = nearest_codeword(x, centres)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.zeros(k, dtype=x.dtype, device=x.device).index_add_(
            0, assign, torch.ones_like(x[:, 0])
        )
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
    return centres


class CodebookUpkeep(nn.Module):
    """State and logic of the data-driven codebook init and dead-codeword restarts.

    Buffers: ``initialized`` (scalar bool; k-means init done) and ``last_used`` (K, V) int64, the last
    step at which each codeword was assigned. Only models with one of these options enabled own this
    module, so official checkpoints keep their exact state-dict keys.
    """

    def __init__(self, num_codebooks: int, size: int, *, kmeans_init: bool, restart_steps: int) -> None:
        super().__init__()
        self.kmeans_init = kmeans_init
        self.restart_steps = restart_steps
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.register_buffer("last_used", torch.zeros(num_codebooks, size, dtype=torch.long))

    initialized: Tensor
    last_used: Tensor

    @torch.no_grad()
    def apply(self, codebooks: Codebooks, stats: CodebookStats, step: int, decay: float) -> None:
        """One optimizer step's codebook update: k-means init (first step only), EMA, restarts.

        The generator is seeded by ``step`` so every rank draws the same frames.
        """
        gen = torch.Generator().manual_seed(1_000_003 * step + 17)
        samples = stats.samples
        if samples is not None and stats.sample_valid is not None:
            samples = samples[:, stats.sample_valid]  # drop the rows of micro-batches without masked frames
        if not bool(self.initialized):
            if samples is None or samples.shape[1] == 0:
                return
            v = codebooks.sums.shape[1]
            for k in range(codebooks.sums.shape[0]):
                # Assignments of this step were made against the random codebook: do not apply them.
                codebooks.sums[k] = kmeans_pp(samples[k], v, generator=gen).to(codebooks.sums)
            codebooks.counts.fill_(1.0)
            self.initialized.fill_(True)
            self.last_used.fill_(step)
            return
        codebooks.update(stats.sums, stats.counts, decay)
        self.last_used[stats.counts > 0] = step
        if self.restart_steps <= 0 or samples is None or samples.shape[1] == 0:
            return
        dead = (step - self.last_used) >= self.restart_steps
        for k in range(dead.shape[0]):
            idx = dead[k].nonzero().squeeze(-1)
            if idx.numel() == 0:
                continue
            pick = torch.randint(samples.shape[1], (idx.numel(),), generator=gen)
            codebooks.sums[k, idx] = samples[k, pick].to(codebooks.sums)
            codebooks.counts[k, idx] = 1.0
            self.last_used[k, idx] = step
