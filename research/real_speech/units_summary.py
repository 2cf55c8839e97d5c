"""The units ablation table from the evaluations of units_table.sh (``RUN.eval_{a,b,c}/metrics.json``).

    python research/real_speech/units_summary.py /work/exp/units [--markdown]

One row per run and dev set: the best codebook layer's units and best feature layer (as ``dinosr evaluate``
picks them) against MFCC k-means / MFCC features of the same evaluation, and the PNMI ratio.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SETS = {"a": "(a) AN4 dev", "b": "(b) MBROLA us1/us2", "c": "(c) FSDD"}


def rows(out: Path):
    for metrics in sorted(out.glob("*.eval_[abc]/metrics.json")):
        run, dev = metrics.parent.name.rsplit(".eval_", 1)
        m = json.loads(metrics.read_text())
        s = m["summary"]
        units, feats, base = s["model_units"], s["model_features"], m["baselines"]
        km, mfcc = base["mfcc_kmeans"], base["mfcc"]
        yield [
            run,
            SETS[dev],
            f"{units['pnmi']:.3f} / {km['pnmi']:.3f}",
            f"{units['pnmi'] / km['pnmi']:.2f}x",
            f"{units['abx_within']:.1f} / {km['abx_within']:.1f}",
            f"{units['abx_across']:.1f} / {km['abx_across']:.1f}",
            f"{feats['abx_within']:.1f} / {mfcc['abx_within']:.1f}",
            f"{feats['abx_across']:.1f} / {mfcc['abx_across']:.1f}",
            f"{feats['probe_accuracy']:.1f} / {mfcc['probe_accuracy']:.1f}",
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    header = [
        "run", "dev set", "units PNMI (ours / MFCC k-means)", "PNMI ratio", "units ABX within %",
        "units ABX across %", "features ABX within % (ours / MFCC)", "features ABX across %", "probe acc %",
    ]  # fmt: skip
    table = [header, *rows(args.out)]
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in table[1:]:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))


if __name__ == "__main__":
    main()
