"""ABX speed: vectorised `abx` against the plain-Python `abx_bruteforce` on the same synthetic data.

Synthetic corpus: 40 phones with a Zipf-like frequency (so contexts repeat as in real speech),
20-180 ms phones, 12 s utterances spread over speakers, Gaussian frame features at 50 Hz.

    python benchmarks/abx_speed.py                      # ratio on 2 min, throughput on 1 h, D=768
    python benchmarks/abx_speed.py --ref-minutes 1 --hours 3 --threads 2

Prints, per mode: both times on the small set, their ratio and whether the errors agree exactly,
then the vectorised time on the large set and the implied hours of speech per minute.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_threads_option  # benchmarks/ is not a package

from dinosr.evaluate.abx import abx, abx_bruteforce, items_from_alignments


def synthetic_corpus(seconds: float, dim: int, *, speakers: int = 40, seed: int = 0):
    """(items, features) for about `seconds` of speech."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, 41)
    weights /= weights.sum()
    phones = [f"p{i}" for i in range(40)]
    align, feats = {}, {}
    for u in range(max(1, int(seconds / 12.0))):
        utt = f"s{u % speakers}-{u}"
        t, segs = 0.0, []
        while t < 12.0:
            d = 0.02 * int(rng.integers(1, 10))
            segs.append((t, t + d, phones[rng.choice(40, p=weights)]))
            t += d
        align[utt] = segs
        feats[utt] = rng.normal(size=(int(t / 0.02) + 1, dim)).astype(np.float32)
    return items_from_alignments(align), feats


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--ref-minutes", type=float, default=2.0, help="speech for the brute-force comparison"
    )
    parser.add_argument("--hours", type=float, default=1.0, help="speech for the throughput run (0: skip)")
    parser.add_argument("--dim", type=int, default=768)
    add_threads_option(parser, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    items, feats = synthetic_corpus(args.ref_minutes * 60, args.dim, speakers=4)
    print(
        f"reference set: {args.ref_minutes:g} min, {len(items)} items, D={args.dim}, {args.threads} threads"
    )
    for mode in ("within", "across"):
        fast, t_fast = timed(abx, feats, items, mode=mode)
        slow, t_slow = timed(abx_bruteforce, feats, items, mode=mode)
        print(
            f"  {mode:6s}: vectorised {t_fast:7.2f} s | brute force {t_slow:8.2f} s | "
            f"speed-up x{t_slow / t_fast:6.1f} | {fast.num_cells} cells | "
            f"error {100 * fast.error:.3f}% vs {100 * slow.error:.3f}% (equal: {fast.error == slow.error})"
        )
    if args.hours > 0:
        items, feats = synthetic_corpus(args.hours * 3600, args.dim)
        print(f"throughput set: {args.hours:g} h, {len(items)} items, D={args.dim}")
        for mode in ("within", "across"):
            res, t = timed(abx, feats, items, mode=mode)
            print(
                f"  {mode:6s}: {t:7.1f} s, {res.num_cells} cells -> "
                f"{args.hours / (t / 60):.2f} h of speech per minute"
            )


if __name__ == "__main__":
    main()
