"""Speed and memory of one full DinoSR training step, side by side with spidr's DinoSR on the same work.

A step is everything an optimizer update costs: student + teacher forward, codebook assignment, loss,
backward, gradient rescale/clip, AdamW, codebook EMA and teacher EMA (the trainer's ``train_step``).
Input: B utterances of S seconds of random audio, fixed across steps.

    python benchmarks/train_step.py --presets base --reference-venv /tmp/spidr-venv     # ours vs spidr
    python benchmarks/train_step.py --presets recipe --batch 8 --seconds 2 --steps 10    # configs/tiny.toml
    python benchmarks/train_step.py --device cuda --steps 20                   # on a GPU (ours only)

With ``--reference-venv`` (made by ``../shared/bench/spidr/install.sh VENV``) each round runs our step and
then spidr 0.2.0's (``spidr_step.py --phase train``: forward, loss.sum()/frames, backward, clip, AdamW, EMA)
in fresh subprocesses, A B A B ..., so both see the same machine load; the speed ratio is spidr's median
time over ours. Only the ratio is trustworthy when the "other-process CPU" share is high (a shared machine).
MFU = counted matmul/conv/attention FLOPs of our step / time / the fp32 or bf16 matmul peak measured at the
start of the same invocation. Peak memory: the process's peak RSS during the steps (VmHWM, model included),
measured the same way in both; on CUDA ``max_memory_allocated``. spidr runs for the base preset only (it
has no log-mel front end). The old "naive attention" reference row is gone: attention is about 1 % of a
base CPU step (docs/performance.md), so it told nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # benchmarks/ is not a package
    DEFAULT_REFERENCE_SCRIPTS,
    OtherCpuShare,
    check_reference,
    count_gflops,
    cpu_share_note,
    matmul_peak_gflops,
    peak_rss_mib,
    reset_peak_rss,
    run_child,
    run_reference,
)


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


def child(spec: dict) -> dict:
    """Time ``spec["steps"]`` training steps of one configuration in this process."""
    from dinosr.config import Config, from_plain
    from dinosr.data.dataset import Batch
    from dinosr.model.config import ModelConfig, tiny_model_config
    from dinosr.train.trainer import Trainer

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    masking = None
    if spec["preset"] == "recipe":  # configs/tiny.toml's model and masking (log-mel, anchor, remedies)
        from dinosr.configs import load_preset

        recipe = load_preset("tiny")
        model, masking = recipe.model, recipe.masking
    else:
        model = tiny_model_config() if spec["preset"] == "tiny" else ModelConfig()
    samples = int(spec["seconds"] * 16000)
    device = torch.device(spec["device"])
    with tempfile.TemporaryDirectory() as workdir:
        run = {
            "precision": spec["precision"],
            "device": spec["device"],
            "workdir": workdir,
            "progress": False,
            "max_steps": 400_000,
        }
        if spec.get("compile"):
            run["compile"] = True
        cfg = from_plain(
            Config, {"data": {"max_tokens": spec["batch"] * samples}, "run": run}, source="benchmark"
        )
        cfg = Config(model=model, masking=masking or cfg.masking, data=cfg.data, optim=cfg.optim, run=cfg.run)
        trainer = Trainer(cfg, loader=_NoLoader(), device=device)
        if trainer.model.anchor is not None:
            trainer.model.anchor.fitted.fill_(True)  # no speech to fit on; unit values do not matter here
        trainer.model.train()
        g = torch.Generator().manual_seed(0)
        batch = Batch(
            torch.randn(spec["batch"], samples, generator=g),
            torch.full((spec["batch"],), samples),
            ["x"] * spec["batch"],
        )
        reset_peak_rss()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        with OtherCpuShare() as share:
            for i in range(spec["warmup"] + spec["steps"]):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                result = trainer.train_step([batch])
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if i >= spec["warmup"]:
                    times.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mib()
        gflops = None
        if spec.get("count_flops"):
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(spec["precision"])

            def fwd_bwd():
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    loss, _ = trainer.task.forward(trainer.model, batch.to(device), step=trainer.step)
                loss.backward()
                trainer.model.zero_grad(set_to_none=True)

            gflops = count_gflops(fwd_bwd)
        trainer.close()
    return {
        "times": times,
        "peak_mib": peak,
        "other_cpu_frac": share.frac,
        "loss": result["loss_sum"] / max(1, result["num_masked"]),
        "gflops": gflops,
    }


def spidr_argv(args, precision: str) -> list[str]:
    argv = ["--phase", "train", "-B", str(args.batch), "-L", str(args.seconds)]
    argv += ["--threads", str(args.threads)]
    argv += ["--warmup", str(args.warmup), "--iters", str(args.steps)]
    return argv + (["--bf16"] if precision == "bf16" else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,base", help="comma list of tiny, recipe (tiny.toml), base")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16, fp16")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved ours/reference runs per row")
    parser.add_argument("--batch", type=int, default=4, help="utterances per step")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per utterance")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="our step with run.compile = true")
    parser.add_argument("--count-flops", action="store_true", help="count our FLOPs (MFU; one more step)")
    parser.add_argument("--reference-venv", help="venv with spidr 0.2.0 (../shared/bench/spidr/install.sh)")
    parser.add_argument("--reference-scripts", default=str(DEFAULT_REFERENCE_SCRIPTS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import json

        print(json.dumps(child(json.loads(args.child))))
        return
    reference = check_reference(args.reference_venv, args.reference_scripts)
    if reference and args.device != "cpu":
        raise SystemExit("--reference-venv: spidr_step.py times the CPU only")

    torch.set_num_threads(args.threads)
    peaks = {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}  device={args.device} threads={args.threads} "
        f"torch {torch.__version__}  B={args.batch} x {args.seconds:g} s, median of {args.rounds} runs x "
        f"{args.steps} steps after {args.warmup} warm-up; matmul peak fp32 {peaks['fp32']:.0f} GFLOP/s, "
        f"bf16 {peaks['bf16']:.0f}"
    )
    header = f"{'preset':<6} {'prec':<5} {'ms/step':>9} {'audio s/s':>9} {'peak MiB':>8}"
    header += f" {'GFLOP':>6} {'MFU':>5}"
    if reference:
        header += f" {'spidr ms':>9} {'spidr MiB':>9} {'ours vs spidr':>13}"
    print(header + "  other-process CPU (ours / spidr)")
    for preset in args.presets.split(","):
        for precision in args.precisions.split(","):
            spec = {
                "preset": preset,
                "precision": precision,
                "steps": args.steps,
                "warmup": args.warmup,
                "batch": args.batch,
                "seconds": args.seconds,
                "threads": args.threads,
                "device": args.device,
                "compile": args.compile,
            }
            ours, theirs, gflops = [], [], None
            try:
                for r in range(args.rounds):
                    count = args.count_flops and r == 0
                    ours.append(run_child(__file__, {**spec, "count_flops": count}))
                    gflops = gflops or ours[-1]["gflops"]
                    if reference and preset == "base":
                        theirs.append(run_reference(*reference, "spidr_step.py", spidr_argv(args, precision)))
            except RuntimeError as e:
                print(f"{preset} {precision}: {e}", file=sys.stderr)
                continue
            # Each run's median, then the median over runs (the same statistic as spidr_step.py's rows).
            ms = 1000 * statistics.median(statistics.median(o["times"]) for o in ours)
            peak = max(o["peak_mib"] for o in ours)
            share = max(o["other_cpu_frac"] for o in ours)
            mfu = "    -"
            if gflops and precision in peaks:
                mfu = f"{100 * gflops / (ms / 1000) / peaks[precision]:>4.0f}%"
            line = f"{preset:<6} {precision:<5} {ms:>9.0f} {args.batch * args.seconds / (ms / 1000):>9.2f}"
            line += f" {peak:>8.0f} {gflops or 0:>6.0f} {mfu}"
            notes = f"{100 * share:.0f}%"
            if theirs:
                # spidr_step.py reports a median per run; the row's figure is the median of those.
                ref_ms = statistics.median(t["train_step"]["median_ms"] for t in theirs)
                ref_peak = max(t["train_step"]["peak_rss_mib"] for t in theirs)
                ref_share = max(t["train_step"]["other_cpu_frac"] for t in theirs)
                share = max(share, ref_share)
                line += f" {ref_ms:>9.0f} {ref_peak:>9.0f} {ref_ms / ms:>12.2f}x"
                notes += f" / {100 * ref_share:.0f}%"
            print(f"{line}  {notes}", flush=True)
            if share > 0.05:
                print("  " + cpu_share_note(share))


if __name__ == "__main__":
    main()
