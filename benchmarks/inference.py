"""Speed and memory of inference (all layer outputs), side by side with spidr's DinoSR and HF Data2VecAudio.

Work: the base model's student on B utterances of S seconds of random audio, ``model.eval()`` and
``torch.inference_mode()``, every transformer layer's output returned (ours: ``model.encode``; spidr:
``get_intermediate_outputs``; HF: ``output_hidden_states=True``), optionally under bf16 autocast.

    python benchmarks/inference.py --reference-venv /tmp/spidr-venv
    python benchmarks/inference.py --precisions bf16 --rounds 3

With ``--reference-venv`` (``../shared/bench/spidr/install.sh VENV``) each round runs ours, spidr 0.2.0
(``spidr_step.py --phase infer``) and, in fp32, transformers' Data2VecAudioModel (``hf_ref.py``; it has no
bf16 option) in fresh subprocesses, A B C A B C ..., so all see the same machine load. Ratios are the
reference's median time over ours. Peak memory: the process's peak RSS during the calls (VmHWM, model
included), the same measure as the reference scripts.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
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


def child(spec: dict) -> dict:
    """Time ``spec["iters"]`` inference calls of the base model in this process."""
    from dinosr.model.config import ModelConfig
    from dinosr.model.dinosr import DinoSR

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    model = DinoSR(ModelConfig()).eval()
    g = torch.Generator().manual_seed(0)
    samples = int(spec["seconds"] * 16000)
    wav = torch.nn.functional.layer_norm(torch.randn(spec["batch"], samples, generator=g), (samples,))
    bf16 = spec["precision"] == "bf16"

    def infer():
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            return model.encode(wav).residuals

    assert len(infer()) == model.cfg.num_layers
    reset_peak_rss()
    with OtherCpuShare() as share:
        times = time_calls(infer, warmup=spec["warmup"], timed=spec["iters"])
    peak = peak_rss_mib()
    gflops = count_gflops(infer) if spec.get("count_flops") else None
    return {"times": times, "peak_mib": peak, "other_cpu_frac": share.frac, "gflops": gflops}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16")
    add_timing_options(parser, option="--iters", unit="calls", default=5, warmup=2)
    add_batch_options(parser, per="call")
    add_threads_option(parser)
    parser.add_argument("--count-flops", action="store_true", help="count our FLOPs (MFU)")
    add_reference_options(parser, venv_holds="spidr 0.2.0 + transformers")
    args = parser.parse_args()
    if run_as_child(args, child):
        return
    reference = check_reference(args.reference_venv, args.reference_scripts)

    torch.set_num_threads(args.threads)
    peaks = matmul_peaks()
    print(
        f"{run_stamp('cpu', args.threads)}  base, B={args.batch} x {args.seconds:g} s, all layers, "
        f"{repeats_note(args.rounds, args.iters, 'calls', args.warmup)}; {peaks_note(peaks)}"
    )
    columns = [Col("prec", 5, left=True), Col("ms/call", 8), Col("audio s/s", 9, ".2f"), Col("peak MiB", 8)]
    columns += [Col("GFLOP", 6), Col("MFU", 5, suffix="%")]
    if reference:
        for name in ("spidr", "HF"):
            columns += [Col(f"{name} ms", 8), Col("MiB", 5), Col(f"vs {name}", 8, ".2f", suffix="x")]
    table = Table(columns, note="other-process CPU (max)")
    common = reference_argv(args, args.iters)
    for precision in args.precisions.split(","):
        spec = {
            "precision": precision,
            "iters": args.iters,
            "warmup": args.warmup,
            "batch": args.batch,
            "seconds": args.seconds,
            "threads": args.threads,
        }
        ours, spidr, hf, gflops = [], [], [], None
        try:
            for r in range(args.rounds):
                ours.append(run_child(__file__, {**spec, "count_flops": args.count_flops and r == 0}))
                gflops = gflops or ours[-1]["gflops"]
                if reference:
                    bf16 = ["--bf16"] if precision == "bf16" else []
                    argv = ["--phase", "infer", *common, *bf16]
                    spidr.append(run_reference(*reference, "spidr_step.py", argv))
                    if precision == "fp32":
                        hf.append(run_reference(*reference, "hf_ref.py", ["--arch", "data2vec", *common]))
        except RuntimeError as e:
            print(f"{precision}: {e}", file=sys.stderr)
            continue
        us = RunSummary.of_children(ours)
        cells = [precision, us.ms, args.batch * args.seconds / (us.ms / 1000), us.peak_mib, gflops or 0]
        cells.append(mfu(gflops, us.ms, peaks[precision]))
        share = us.share
        for runs in (spidr, hf) if reference else ():
            if not runs:  # no HF run in bf16: "-" cells
                cells += [None, None, None]
                continue
            ref = RunSummary.of_references([r.get("inference", r) for r in runs])  # spidr nests its record
            cells += [ref.ms, ref.peak_mib, ref.ms / us.ms]
            share = max(share, ref.share)
        table.row(*cells, note=f"{100 * share:.0f}%")
        warn_if_busy(share)


if __name__ == "__main__":
    main()
