"""Speed and memory of one full DinoSR training step (the trainer's ``train_step``).

A step is everything an optimizer update costs: student + teacher forward, codebook assignment,
loss, backward, gradient rescale/clip, AdamW, codebook EMA and teacher EMA (``post_step``).
Input: B utterances of S seconds of random audio, fixed across steps.

    python benchmarks/train_step.py                              # tiny + base, fp32 + bf16, 3 steps
    python benchmarks/train_step.py --presets tiny --steps 10 --threads 2
    python benchmarks/train_step.py --device cuda --steps 20     # on a GPU

Each configuration runs in its own subprocess so peak-memory numbers do not leak into each other.
CPU memory is the growth of the process's peak RSS (``getrusage`` maxrss) over its RSS after the
model was built, i.e. the step's working set; on CUDA it is ``torch.cuda.max_memory_allocated``.
The "reference" run swaps ``scaled_dot_product_attention`` for a naive softmax(QK^T)V
implementation (what an unfused attention costs); the ratio column is reference / ours.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch


def _naive_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
    """softmax(q k^T / sqrt(d) + mask) v, materialising the (B, H, T, T) scores."""
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    scores = (q @ k.transpose(-2, -1)) * scale
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    if dropout_p > 0:
        probs = torch.nn.functional.dropout(probs, dropout_p)
    return probs @ v


class _NoLoader:
    """The benchmark feeds batches itself; the trainer only needs the loader's interface."""

    epoch = 0

    def set_epoch(self, epoch, start_batch=0):
        self.epoch = epoch

    def state_dict(self):
        return {"epoch": 0, "start_batch": 0}

    def load_state_dict(self, state):
        pass

    def __len__(self):
        return 1

    def __iter__(self):
        return iter(())


def _rss_mib() -> float:
    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(spec: dict) -> dict:
    """Time ``spec["steps"]`` training steps of one configuration in this process."""
    from dinosr.config import Config, from_plain
    from dinosr.data.dataset import Batch
    from dinosr.model.config import ModelConfig, tiny_model_config
    from dinosr.train.trainer import Trainer

    torch.set_num_threads(spec["threads"])
    if spec["impl"] == "reference":
        torch.nn.functional.scaled_dot_product_attention = _naive_attention
    model = tiny_model_config() if spec["preset"] == "tiny" else ModelConfig()
    samples = int(spec["seconds"] * 16000)
    device = torch.device(spec["device"])
    with tempfile.TemporaryDirectory() as workdir:
        cfg = from_plain(
            Config,
            {
                "data": {"max_tokens": spec["batch"] * samples},
                "run": {
                    "precision": spec["precision"],
                    "device": spec["device"],
                    "workdir": workdir,
                    "progress": False,
                    "max_steps": 400_000,
                },
            },
            source="benchmark",
        )
        cfg = Config(model=model, masking=cfg.masking, data=cfg.data, optim=cfg.optim, run=cfg.run)
        trainer = Trainer(cfg, loader=_NoLoader(), device=device)
        trainer.model.train()
        g = torch.Generator().manual_seed(0)
        batch = Batch(
            torch.randn(spec["batch"], samples, generator=g),
            torch.full((spec["batch"],), samples),
            ["x"] * spec["batch"],
        )
        rss_before = _rss_mib()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for i in range(spec["warmup"] + spec["steps"]):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            result = trainer.train_step([batch])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= spec["warmup"]:
                times.append(time.perf_counter() - start)
        trainer.close()
    ms = 1000 * statistics.median(times)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = _rss_mib() - rss_before
    return {
        **spec,
        "ms": ms,
        "audio_s_per_s": spec["batch"] * spec["seconds"] / (ms / 1000),
        "peak_mib": peak,
        "loss": result["loss_sum"] / max(1, result["num_masked"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,base", help="comma list of tiny, base")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16, fp16")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=4, help="utterances per step")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per utterance")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-reference", action="store_true", help="skip the naive-attention reference runs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return

    impls = ["ours"] if args.no_reference else ["ours", "reference"]
    print(
        f"device={args.device} threads={args.threads} B={args.batch} x {args.seconds:g} s, "
        f"median of {args.steps} steps after {args.warmup} warm-up"
    )
    header = f"{'preset':<6} {'prec':<5} {'ms/step':>10} {'audio s/s':>10} {'peak MiB':>9}"
    if not args.no_reference:
        header += f" {'ref ms/step':>12} {'ref MiB':>8} {'ref/ours':>9}"
    print(header)
    for preset in args.presets.split(","):
        for precision in args.precisions.split(","):
            rows = {}
            for impl in impls:
                spec = {
                    "preset": preset,
                    "precision": precision,
                    "impl": impl,
                    "steps": args.steps,
                    "warmup": args.warmup,
                    "batch": args.batch,
                    "seconds": args.seconds,
                    "threads": args.threads,
                    "device": args.device,
                }
                out = subprocess.run(
                    [sys.executable, __file__, "--child", json.dumps(spec)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode != 0:
                    print(f"{preset} {precision} {impl}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                    break
                rows[impl] = json.loads(out.stdout.strip().splitlines()[-1])
            if "ours" not in rows:
                continue
            r = rows["ours"]
            line = f"{preset:<6} {precision:<5} {r['ms']:>10.1f} {r['audio_s_per_s']:>10.2f}"
            line += f" {r['peak_mib']:>9.0f}"
            if "reference" in rows:
                ref = rows["reference"]
                line += f" {ref['ms']:>12.1f} {ref['peak_mib']:>8.0f} {ref['ms'] / r['ms']:>9.2f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
