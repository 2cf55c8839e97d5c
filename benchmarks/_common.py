"""Helpers shared by the benchmarks: CPU-contention meter, peak RSS, matmul peak, FLOP count, reference runs,
the command-line options they have in common and their result tables.

The reference implementations (spidr's DinoSR, Hugging Face Data2VecAudio) run in their own venv through the
timing scripts of ``--reference-scripts`` (default ``../shared/bench/spidr`` beside the repository), one
subprocess per measurement; the project never imports them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REFERENCE_SCRIPTS = REPO.parent / "shared" / "bench" / "spidr"
_CLK = os.sysconf("SC_CLK_TCK")
BUSY = 0.05  # other-process CPU share above which absolute timings are flagged


# ----------------------------------------------------------------------------- machine state
def _machine_busy_s() -> float:
    """CPU-seconds all CPUs spent busy since boot (from /proc/stat; 0 where it is unreadable)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
        return (user + nice + system + irq + softirq) / _CLK
    except (OSError, ValueError, IndexError):
        return 0.0


class OtherCpuShare:
    """``with OtherCpuShare() as c: ...`` then ``c.frac``: share of the machine's CPUs used by others.

    A timing on a shared 2-core machine is only trustworthy when this is small (a warning above 5 %).
    """

    def __enter__(self) -> OtherCpuShare:
        self._busy, self._own, self._t = _machine_busy_s(), _own_cpu_s(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> bool:
        wall = max(time.perf_counter() - self._t, 1e-9)
        others = (_machine_busy_s() - self._busy) - (_own_cpu_s() - self._own)
        self.frac = min(1.0, max(0.0, others) / (wall * (os.cpu_count() or 1)))
        return False


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system  # this process (its threads included), not its children


def cpu_share_note(frac: float) -> str:
    warn = "  WARNING: machine busy with other processes, absolute timings not trustworthy"
    warn = warn if frac > BUSY else ""
    return f"other-process CPU {100 * frac:.0f}%{warn}"


def warn_if_busy(frac: float) -> None:
    """Print the other-process CPU share under a table row when it makes the row's timings doubtful."""
    if frac > BUSY:
        print("  " + cpu_share_note(frac))


def reset_peak_rss() -> None:
    """Reset VmHWM so that :func:`peak_rss_mib` reports the peak of what follows (Linux >= 4.0)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib() -> float:
    """Peak resident set of this process since the last reset (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ----------------------------------------------------------------------------- peak and FLOPs
def matmul_peak_gflops(dtype: torch.dtype, *, n: int = 2048, repeats: int = 5) -> float:
    """Best n x n x n matmul rate of this process's threads, GFLOP/s (the MFU denominator)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up (MKL/oneDNN kernel selection)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def matmul_peaks() -> dict[str, float]:
    """fp32 and bf16 matmul peaks of this process's threads, GFLOP/s (the MFU denominators)."""
    return {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}


def peaks_note(peaks: dict[str, float]) -> str:
    return f"matmul peak fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f}"


def mfu(gflops: float | None, ms: float, peak_gflops: float | None) -> float | None:
    """Model FLOP utilisation in % (None without a FLOP count or a peak)."""
    if not gflops or not peak_gflops:
        return None
    return 100 * gflops / (ms / 1000) / peak_gflops


def _flop_fixes() -> dict:
    """Corrections to torch.utils.flop_counter for the ops of a CPU DinoSR step.

    - convolution_backward: the stock formula ignores ``groups`` for the weight gradient (16x too many FLOPs
      for the grouped positional conv); each computed gradient costs one forward conv.
    - the CPU flash-attention ops (eval-mode attention: teacher, inference) are missing from the registry.
    """
    from torch.utils.flop_counter import conv_flop_count, sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    def conv_backward(grad_out_shape, x_shape, w_shape, *args, out_shape=None, **kwargs):
        transposed, output_mask = args[4], args[7]  # after bias_sizes, stride, padding, dilation
        fwd = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed)
        return fwd * (int(bool(output_mask[0])) + int(bool(output_mask[1])))

    fixes = {aten.convolution_backward: conv_backward}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        fixes[aten._scaled_dot_product_flash_attention_for_cpu] = (
            lambda q, k, v, *a, out_shape=None, **kw: sdpa_flop_count(q, k, v)
        )
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        fixes[aten._scaled_dot_product_flash_attention_for_cpu_backward] = (
            lambda g, q, k, v, *a, out_shape=None, **kw: sdpa_backward_flop_count(g, q, k, v)
        )
    return fixes


class _GlobalOnly:
    """FlopCounterMode's module tracker trips over the teacher's no_grad views; count globally only."""

    parents = frozenset({"Global"})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def count_gflops(fn) -> float:
    """GFLOP of the matmul/conv/attention ops of ``fn()`` (2 per multiply-add; elementwise ops uncounted)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_flop_fixes())
    counter.mod_tracker = _GlobalOnly()
    with counter:
        fn()
    return counter.get_total_flops() / 1e9


# ----------------------------------------------------------------------------- reference runs
def run_reference(venv: Path, scripts: Path, script: str, argv: list[str]) -> dict:
    """Run one reference timing script in its venv; returns its JSON record (raises with its stderr)."""
    python = Path(venv) / "bin" / "python"
    with tempfile.TemporaryDirectory() as tmp:
        out_json = Path(tmp) / "result.jsonl"
        proc = subprocess.run(
            [str(python), str(Path(scripts) / script), *argv, "--json", str(out_json)],
            capture_output=True,
            text=True,
            cwd=scripts,
            check=False,
        )
        if proc.returncode != 0 or not out_json.exists():
            raise RuntimeError(f"{script} {' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
        return json.loads(out_json.read_text().splitlines()[-1])


def run_child(script: str, spec: dict) -> dict:
    """Run ``script --child SPEC`` with this interpreter; returns the JSON of its last stdout line."""
    proc = subprocess.run(
        [sys.executable, script, "--child", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(script).name} {spec}: failed\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def reference_argv(args: argparse.Namespace, timed: int) -> list[str]:
    """The reference scripts' options for the same work: batch, seconds, threads, warm-up, ``timed`` calls."""
    argv = ["-B", str(args.batch), "-L", str(args.seconds), "--threads", str(args.threads)]
    return [*argv, "--warmup", str(args.warmup), "--iters", str(timed)]


def check_reference(venv: str | None, scripts: str) -> tuple[Path, Path] | None:
    """(venv, scripts) as paths, or None without --reference-venv; exits with one line if they are missing."""
    if not venv:
        return None
    v, s = Path(venv), Path(scripts)
    if not (v / "bin" / "python").exists():
        raise SystemExit(f"--reference-venv {v}: no bin/python (make it with {s}/install.sh {v})")
    if not (s / "spidr_step.py").exists():
        raise SystemExit(f"--reference-scripts {s}: no spidr_step.py there")
    return v, s


# ----------------------------------------------------------------------------- timing
def time_calls(
    fn: Callable[[], object], *, warmup: int, timed: int, sync: Callable[[], None] | None = None
) -> list[float]:
    """Seconds of each of ``timed`` calls of ``fn()`` made after ``warmup`` untimed ones.

    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before and after each call, so that asynchronous
    device work is inside the call's time. Results of ``fn`` are dropped at once: keeping large outputs
    would inflate the peak memory the benchmark reports.
    """
    times = []
    for i in range(warmup + timed):
        if sync is not None:
            sync()
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


@dataclass
class RunSummary:
    """One side of a table row over its runs: median ms, peak MiB and other-process CPU share (max)."""

    ms: float
    peak_mib: float
    share: float

    @classmethod
    def of_children(cls, runs: Sequence[dict]) -> RunSummary:
        """Records of `run_child`: each run's median, then the median over runs (as the reference scripts)."""
        return cls(
            1000 * statistics.median(statistics.median(r["times"]) for r in runs),
            max(r["peak_mib"] for r in runs),
            max(r["other_cpu_frac"] for r in runs),
        )

    @classmethod
    def of_references(cls, records: Sequence[dict]) -> RunSummary:
        """Records of the reference scripts (one median per run): the median over runs."""
        return cls(
            statistics.median(r["median_ms"] for r in records),
            max(r["peak_rss_mib"] for r in records),
            max(r["other_cpu_frac"] for r in records),
        )


def repeats_note(rounds: int, timed: int, unit: str, warmup: int) -> str:
    return f"median of {rounds} runs x {timed} {unit} after {warmup} warm-up"


def run_stamp(device: str, threads: int) -> str:
    """Date, device, threads and torch version: how every result table starts."""
    return f"{time.strftime('%Y-%m-%d %H:%M')}  device={device} threads={threads} torch {torch.__version__}"


# ----------------------------------------------------------------------------- command line
def add_threads_option(parser: argparse.ArgumentParser, *, default: int | None = None) -> None:
    """``--threads``: torch intra-op threads (default: torch's own choice)."""
    default = torch.get_num_threads() if default is None else default
    parser.add_argument("--threads", type=int, default=default, help="torch intra-op threads")


def add_batch_options(parser: argparse.ArgumentParser, *, per: str) -> None:
    """``--batch`` utterances of ``--seconds`` seconds of random audio per step or call."""
    parser.add_argument("--batch", type=int, default=4, help=f"utterances per {per}")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per utterance")


def add_timing_options(
    parser: argparse.ArgumentParser,
    *,
    option: str,
    unit: str,
    default: int,
    warmup: int,
    rounds: str = "interleaved ours/reference runs per row",
) -> None:
    """``option`` (timed ``unit`` per run), ``--warmup`` (untimed first), ``--rounds`` (help ``rounds``)."""
    parser.add_argument(option, type=int, default=default, help=f"timed {unit} per run (median)")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"untimed {unit} first")
    parser.add_argument("--rounds", type=int, default=2, help=rounds)


def add_reference_options(parser: argparse.ArgumentParser, *, venv_holds: str) -> None:
    """``--reference-venv`` / ``--reference-scripts`` (see `check_reference`) and the hidden ``--child``."""
    parser.add_argument("--reference-venv", help=f"venv with {venv_holds} (../shared/bench/spidr/install.sh)")
    parser.add_argument("--reference-scripts", default=str(DEFAULT_REFERENCE_SCRIPTS))
    parser.add_argument("--child", help=argparse.SUPPRESS)


def run_as_child(args: argparse.Namespace, child: Callable[[dict], dict]) -> bool:
    """With ``--child SPEC`` (from `run_child`): print ``child(SPEC)`` as JSON and return True."""
    if not args.child:
        return False
    print(json.dumps(child(json.loads(args.child))))
    return True


# ----------------------------------------------------------------------------- result tables
@dataclass(frozen=True)
class Col:
    """A table column: numbers as ``fmt`` + ``suffix``, None as "-"; right-aligned unless ``left``."""

    title: str
    width: int
    fmt: str = ".0f"
    suffix: str = ""
    left: bool = False

    def cell(self, value: object) -> str:
        if value is None:
            text = "-"
        elif isinstance(value, str):
            text = value
        else:
            text = f"{value:{self.fmt}}{self.suffix}"
        return f"{text:{'<' if self.left else '>'}{self.width}}"


class Table:
    """A fixed-width text table printed as it goes: the header and every row from one list of columns."""

    def __init__(self, columns: Sequence[Col], *, note: str = "") -> None:
        self.columns = list(columns)
        print(self._line([c.title for c in self.columns], note))

    def row(self, *values: object, note: str = "") -> None:
        """One row; ``values`` in column order (missing trailing values are "-"); ``note`` after the cells."""
        if len(values) > len(self.columns):
            raise ValueError(f"{len(values)} values for {len(self.columns)} columns")
        values = (*values, *[None] * (len(self.columns) - len(values)))
        print(self._line(values, note), flush=True)

    def _line(self, values: Sequence[object], note: str) -> str:
        line = " ".join(c.cell(v) for c, v in zip(self.columns, values))
        return f"{line}  {note}" if note else line
