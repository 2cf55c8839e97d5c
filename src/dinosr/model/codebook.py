"""Online codebooks (spec section 6): fp32 sum/count accumulators, nearest-codeword assignment, EMA update.

K = number of codebooks (one per target layer), V = codewords per codebook, D = dim, M = masked frames.
The forward pass only *reads* the codebooks; statistics travel in :class:`CodebookStats` and are applied
once per optimizer step by :meth:`Codebooks.update`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


def perplexity(counts: Tensor) -> Tensor:
    """exp(entropy) of each row's normalised distribution, in float64 (logged ``target_ppl``, ``pred_ppl``).

    Args:
        counts: (K, V) non-negative counts or summed probabilities.

    Returns:
        (K,) float32 perplexities in [1, V] (1 for an all-zero row).
    """
    counts = counts.double()
    p = counts / counts.sum(-1, keepdim=True).clamp_min(1e-12)
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)
    return entropy.exp().float()


def nearest_codeword(x: Tensor, codewords: Tensor) -> Tensor:
    """Index of the nearest codeword (squared L2) of each vector, in fp32 (autocast off): the one routine.

    Shapes: ``x`` (..., D) with ``codewords`` (V, D) -> (...) int64; or ``x`` (K, M, D) with ``codewords``
    (K, V, D) -> (K, M), codebook k for row k (the training targets of K codebooks at once).

    argmin_v ||x - e_v||^2 = argmin_v (||e_v||^2 - 2 x.e_v) (||x||^2 does not change the argmin): one
    matmul with the norms added by the BLAS call itself, so every caller gets bit-identical codes.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        e = codewords.float()
        z = x.float()
        if e.dim() == 3:
            return torch.baddbmm((e * e).sum(-1)[:, None, :], z, e.transpose(1, 2), alpha=-2.0).argmin(-1)
        flat = z.reshape(-1, z.shape[-1])
        scores = torch.addmm((e * e).sum(-1)[None, :], flat, e.t(), alpha=-2.0)
        return scores.argmin(-1).view(z.shape[:-1])


@dataclass
class CodebookStats:
    """Codebook statistics of one batch (or a sum of batches).

    sums: (K, V, D) fp32, sum of the targets assigned to each codeword.
    counts: (K, V) fp32, number of targets assigned to each codeword.
    pred_prob_sum: (K, V) fp32, summed softmax of the prediction heads (for prediction perplexity).
    samples: (K, S, D) fp32 random teacher targets for the small-batch remedies (k-means init, dead-codeword
        restarts; ``dinosr.model.remedies``), or None (official recipe). Concatenated, not summed.
    sample_valid: (S,) bool, False for the zero rows of a micro-batch without masked frames (the shape
        must not depend on the data for ``all_gather``), or None (all valid).
    """

    sums: Tensor
    counts: Tensor
    pred_prob_sum: Tensor
    samples: Tensor | None = None
    sample_valid: Tensor | None = None

    def _valid(self) -> Tensor | None:
        if self.samples is None:
            return None
        if self.sample_valid is None:
            return torch.ones(self.samples.shape[1], dtype=torch.bool, device=self.samples.device)
        return self.sample_valid

    def __add__(self, other: CodebookStats) -> CodebookStats:
        samples, valid = self.samples, self.sample_valid
        if samples is None:
            samples, valid = other.samples, other.sample_valid
        elif other.samples is not None:
            samples = torch.cat([samples, other.samples], dim=1)
            valid = None
            if self.sample_valid is not None or other.sample_valid is not None:
                valid = torch.cat([self._valid(), other._valid()])
        return CodebookStats(
            self.sums + other.sums,
            self.counts + other.counts,
            self.pred_prob_sum + other.pred_prob_sum,
            samples,
            valid,
        )

    def all_reduce(self) -> CodebookStats:
        """SUM over ranks, in place, as one collective; a no-op without an initialised process group."""
        if dist.is_available() and dist.is_initialized():
            flat = torch.cat([self.sums.flatten(), self.counts.flatten(), self.pred_prob_sum.flatten()])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            n_sums, n_counts = self.sums.numel(), self.counts.numel()
            self.sums.copy_(flat[:n_sums].view_as(self.sums))
            self.counts.copy_(flat[n_sums : n_sums + n_counts].view_as(self.counts))
            self.pred_prob_sum.copy_(flat[n_sums + n_counts :].view_as(self.pred_prob_sum))
            if self.samples is not None:  # same S on every rank (a fixed number per micro-batch)
                world = dist.get_world_size()
                gathered = [torch.empty_like(self.samples) for _ in range(world)]
                dist.all_gather(gathered, self.samples.contiguous())
                valid = self._valid().to(torch.uint8)  # every rank gathers it: some may have invalid rows
                flags = [torch.empty_like(valid) for _ in range(world)]
                dist.all_gather(flags, valid)
                self.samples = torch.cat(gathered, dim=1)
                self.sample_valid = torch.cat(flags).bool()
        return self

    def target_perplexity(self) -> Tensor:
        """(K,) perplexity of codeword usage (spec 7 ``target_ppl``, before averaging over layers)."""
        return perplexity(self.counts)

    def pred_perplexity(self) -> Tensor:
        """(K,) perplexity of the mean predicted distribution (spec 7 ``pred_ppl``)."""
        return perplexity(self.pred_prob_sum)

    def num_active(self) -> Tensor:
        """(K,) number of codewords assigned at least once."""
        return (self.counts > 0).sum(-1)


def init_codebook_sums(num_codebooks: int, size: int, dim: int) -> Tensor:
    """(K, V, D) initial sums: N(0,1), each dimension standardised across the V codewords (spec 6)."""
    g = torch.randn(num_codebooks, dim, size)
    mean = g.mean(-1, keepdim=True)
    var = g.var(-1, unbiased=False, keepdim=True)
    return ((g - mean) / torch.sqrt(var + 1e-5)).transpose(1, 2).contiguous()


class Codebooks(nn.Module):
    """K codebooks of V codewords in R^D kept as fp32 buffers ``sums`` (K, V, D) and ``counts`` (K, V).

    Codeword v of codebook k is ``sums[k, v] / counts[k, v]``. Never part of the optimizer; keep the model
    in fp32 and use autocast (``.half()`` / ``.bfloat16()`` on the model would cast these buffers too).
    """

    def __init__(self, num_codebooks: int, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("sums", init_codebook_sums(num_codebooks, size, dim))
        self.register_buffer("counts", torch.ones(num_codebooks, size))

    sums: Tensor
    counts: Tensor

    def centroids(self) -> Tensor:
        """(K, V, D) fp32 codewords."""
        return self.sums.float() / self.counts.float()[..., None]

    @torch.no_grad()
    def assign(self, targets: Tensor) -> Tensor:
        """Nearest codeword (squared L2) per target: (K, M, D) -> (K, M) int64 (:func:`nearest_codeword`)."""
        return nearest_codeword(targets, self.centroids())

    @torch.no_grad()
    def batch_stats(self, targets: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
        """Per-codeword sums (K, V, D) and counts (K, V) of targets (K, M, D) assigned to codes (K, M)."""
        k, v, d = self.sums.shape
        z = targets.float()
        sums = torch.zeros(k, v, d, device=z.device).scatter_add_(1, codes[..., None].expand(-1, -1, d), z)
        counts = torch.zeros(k, v, device=z.device).scatter_add_(
            1, codes, torch.ones_like(codes, dtype=z.dtype)
        )
        return sums, counts

    @torch.no_grad()
    def update(self, sums: Tensor, counts: Tensor, decay: float) -> None:
        """EMA of the accumulators toward batch statistics; codewords with no assignment are left untouched.

        For counts[k, v] > 0: S <- decay * S + (1 - decay) * sums, N <- decay * N + (1 - decay) * counts.
        """
        used = counts > 0
        self.sums.copy_(torch.where(used[..., None], self.sums.lerp(sums.float(), 1.0 - decay), self.sums))
        self.counts.copy_(torch.where(used, self.counts.lerp(counts.float(), 1.0 - decay), self.counts))
