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
import statistics
import sys
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
    times = []
    with OtherCpuShare() as share:
        for i in range(spec["warmup"] + spec["iters"]):
            start = time.perf_counter()
            infer()
            if i >= spec["warmup"]:
                times.append(time.perf_counter() - start)
    peak = peak_rss_mib()
    gflops = count_gflops(infer) if spec.get("count_flops") else None
    return {"times": times, "peak_mib": peak, "other_cpu_frac": share.frac, "gflops": gflops}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16")
    parser.add_argument("--iters", type=int, default=5, help="timed calls per run (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved ours/reference runs per row")
    parser.add_argument("--batch", type=int, default=4, help="utterances per call")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per utterance")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--count-flops", action="store_true", help="count our FLOPs (MFU)")
    parser.add_argument("--reference-venv", help="venv with spidr 0.2.0 + transformers (install.sh)")
    parser.add_argument("--reference-scripts", default=str(DEFAULT_REFERENCE_SCRIPTS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import json

        print(json.dumps(child(json.loads(args.child))))
        return
    reference = check_reference(args.reference_venv, args.reference_scripts)

    torch.set_num_threads(args.threads)
    peaks = {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}  cpu threads={args.threads} torch {torch.__version__}  "
        f"base, B={args.batch} x {args.seconds:g} s, all layers, median of {args.rounds} runs x {args.iters} "
        f"calls after {args.warmup} warm-up; matmul peak fp32 {peaks['fp32']:.0f} GFLOP/s, "
        f"bf16 {peaks['bf16']:.0f}"
    )
    header = f"{'prec':<5} {'ms/call':>8} {'audio s/s':>9} {'peak MiB':>8} {'GFLOP':>6} {'MFU':>5}"
    if reference:
        header += f" {'spidr ms':>8} {'MiB':>5} {'vs spidr':>8} {'HF ms':>8} {'MiB':>5} {'vs HF':>8}"
    print(header + "  other-process CPU (max)")
    common = ["-B", str(args.batch), "-L", str(args.seconds), "--threads", str(args.threads)]
    common += ["--warmup", str(args.warmup), "--iters", str(args.iters)]
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
        ms = 1000 * statistics.median(statistics.median(o["times"]) for o in ours)
        share = max(o["other_cpu_frac"] for o in ours)
        mfu = f"{100 * gflops / (ms / 1000) / peaks[precision]:>4.0f}%" if gflops else "    -"
        line = f"{precision:<5} {ms:>8.0f} {args.batch * args.seconds / (ms / 1000):>9.2f}"
        line += f" {max(o['peak_mib'] for o in ours):>8.0f} {gflops or 0:>6.0f} {mfu}"
        for runs in (spidr, hf) if reference else ():
            if not runs:
                line += f" {'-':>8} {'-':>5} {'-':>8}"
                continue
            rows = [r.get("inference", r) for r in runs]  # spidr nests its record, hf_ref.py does not
            ref_ms = statistics.median(r["median_ms"] for r in rows)
            share = max([share] + [r["other_cpu_frac"] for r in rows])
            line += f" {ref_ms:>8.0f} {max(r['peak_rss_mib'] for r in rows):>5.0f} {ref_ms / ms:>7.2f}x"
        print(f"{line}  {100 * share:.0f}%", flush=True)
        if share > 0.05:
            print("  " + cpu_share_note(share))


if __name__ == "__main__":
    main()
