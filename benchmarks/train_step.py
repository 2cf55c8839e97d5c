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
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # benchmarks/ is not a package
    Col,
    OtherCpuShare,
    RunSummary,
    Table,
    add_batch_options,
    add_reference_options,
    add_threads_option,
    add_timing_options,
    check_reference,
    count_gflops,
    matmul_peaks,
    mfu,
    peak_rss_mib,
    peaks_note,
    reference_argv,
    repeats_note,
    reset_peak_rss,
    run_as_child,
    run_child,
    run_reference,
    run_stamp,
    time_calls,
    warn_if_busy,
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
        last = {}

        def step():
            last.update(trainer.train_step([batch]))

        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
        with OtherCpuShare() as share:
            times = time_calls(step, warmup=spec["warmup"], timed=spec["steps"], sync=sync)
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
        "loss": last["loss_sum"] / max(1, last["num_masked"]),
        "gflops": gflops,
    }


def spidr_argv(args, precision: str) -> list[str]:
    argv = ["--phase", "train", *reference_argv(args, args.steps)]
    return argv + (["--bf16"] if precision == "bf16" else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,base", help="comma list of tiny, recipe (tiny.toml), base")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16, fp16")
    add_timing_options(parser, option="--steps", unit="steps", default=3, warmup=1)
    add_batch_options(parser, per="step")
    add_threads_option(parser)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="our step with run.compile = true")
    parser.add_argument("--count-flops", action="store_true", help="count our FLOPs (MFU; one more step)")
    add_reference_options(parser, venv_holds="spidr 0.2.0")
    args = parser.parse_args()
    if run_as_child(args, child):
        return
    reference = check_reference(args.reference_venv, args.reference_scripts)
    if reference and args.device != "cpu":
        raise SystemExit("--reference-venv: spidr_step.py times the CPU only")

    torch.set_num_threads(args.threads)
    peaks = matmul_peaks()
    print(
        f"{run_stamp(args.device, args.threads)}  B={args.batch} x {args.seconds:g} s, "
        f"{repeats_note(args.rounds, args.steps, 'steps', args.warmup)}; {peaks_note(peaks)}"
    )
    columns = [Col("preset", 6, left=True), Col("prec", 5, left=True), Col("ms/step", 9)]
    columns += [Col("audio s/s", 9, ".2f"), Col("peak MiB", 8), Col("GFLOP", 6), Col("MFU", 5, suffix="%")]
    if reference:
        columns += [Col("spidr ms", 9), Col("spidr MiB", 9), Col("ours vs spidr", 13, ".2f", suffix="x")]
    table = Table(columns, note="other-process CPU (ours / spidr)")
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
            us = RunSummary.of_children(ours)
            cells = [preset, precision, us.ms, args.batch * args.seconds / (us.ms / 1000), us.peak_mib]
            cells += [gflops or 0, mfu(gflops, us.ms, peaks.get(precision))]
            notes, share = f"{100 * us.share:.0f}%", us.share
            if theirs:
                spidr = RunSummary.of_references([t["train_step"] for t in theirs])
                cells += [spidr.ms, spidr.peak_mib, spidr.ms / us.ms]
                notes += f" / {100 * spidr.share:.0f}%"
                share = max(share, spidr.share)
            table.row(*cells, note=notes)
            warn_if_busy(share)


if __name__ == "__main__":
    main()
