"""The evaluation report: PNG figures drawn with matplotlib and one HTML page that shows them.

``write_report(out_dir, metrics, counts, train_log=...)`` writes ``out_dir/report.html`` and
``out_dir/figures/*.png``. The page uses relative links only, so the directory can be copied or
opened from anywhere (``file://``). Figures:

* ``units_L{l}.png`` (and ``units_mfcc_kmeans.png``, ``units_kmeans_L{l}.png``): the phone x unit
  co-occurrence matrix, P(phone | unit), rows = phones grouped by class, columns = used units sorted
  by their most likely phone (the unit-analysis figure of the DinoSR paper), with each unit's share
  of frames above it;
* ``codebook_usage.png``: frames per unit (sorted) for every codebook layer and the k-means baselines;
* ``layers.png``: PNMI / purity of the units and ABX error of features and units against the layer;
* ``probe.png``: linear-probe frame accuracy and PER against the layer;
* ``baselines.png``: the model next to the baselines, metric by metric;
* ``training.png``: loss, target perplexity and active codewords from the run's ``metrics.jsonl``.

matplotlib is imported inside the functions (``Agg`` backend, no display needed).
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["PHONE_CLASSES", "phone_order", "read_train_log", "sort_units", "write_report"]

# Phone classes of the 39 ARPAbet phones + silence, in the row order of the co-occurrence figure.
PHONE_CLASSES: list[tuple[str, list[str]]] = [
    ("vowels", ["IY", "IH", "EH", "AE", "AA", "AH", "AO", "UH", "UW", "ER"]),
    ("diphthongs", ["EY", "AY", "OY", "AW", "OW"]),
    ("approximants", ["L", "R", "W", "Y"]),
    ("nasals", ["M", "N", "NG"]),
    ("fricatives", ["F", "V", "TH", "DH", "S", "Z", "SH", "ZH", "HH"]),
    ("affricates", ["CH", "JH"]),
    ("stops", ["P", "B", "T", "D", "K", "G"]),
    ("silence", ["sil"]),
]

# One colour per series, readable on white and for common colour-vision deficiencies (Okabe-Ito).
COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]


def phone_order(phones: Sequence[str]) -> tuple[list[int], list[tuple[str, int, int]]]:
    """Row order grouping ``phones`` by class, and the classes' (name, first row, end row).

    Phones outside the known classes go last, alphabetically, as "other".
    """
    index = {p: i for i, p in enumerate(phones)}
    order: list[int] = []
    spans = []
    for name, members in PHONE_CLASSES:
        rows = [index[p] for p in members if p in index]
        if rows:
            spans.append((name, len(order), len(order) + len(rows)))
            order += rows
    rest = sorted(p for p in phones if index[p] not in set(order))
    if rest:
        spans.append(("other", len(order), len(order) + len(rest)))
        order += [index[p] for p in rest]
    return order, spans


def sort_units(counts: np.ndarray, row_order: Sequence[int]) -> list[int]:
    """Used units (columns with frames) sorted by their most likely phone's row, then by its probability."""
    counts = np.asarray(counts, dtype=np.float64)[list(row_order)]
    totals = counts.sum(0)
    used = np.flatnonzero(totals > 0)
    if len(used) == 0:
        return []
    cond = counts[:, used] / totals[used]
    top = cond.argmax(0)
    key = sorted(range(len(used)), key=lambda j: (top[j], -cond[top[j], j]))
    return [int(used[j]) for j in key]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.size": 11,
            "axes.titlesize": 12,
            "axes.labelsize": 11,
            "legend.fontsize": 9,
            "figure.dpi": 100,
            "savefig.dpi": 110,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )
    return plt


def _save(fig, path: Path) -> Path:
    fig.savefig(path, bbox_inches="tight", facecolor="white")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------- figures
def plot_cooccurrence(counts: np.ndarray, phones: Sequence[str], title: str, path: Path) -> Path:
    """P(phone | unit) heat map: phones (grouped by class) x used units sorted by most likely phone."""
    plt = _plt()
    from matplotlib.colors import PowerNorm

    counts = np.asarray(counts, dtype=np.float64)
    rows, spans = phone_order(phones)
    cols = sort_units(counts, rows)
    mat = counts[np.ix_(rows, cols)] if cols else np.zeros((len(rows), 1))
    totals = mat.sum(0)
    cond = mat / np.maximum(totals, 1e-12)
    share = totals / max(totals.sum(), 1e-12)

    n_cols = max(len(cols), 1)
    width = min(18.0, max(9.0, 4.0 + n_cols * 0.05))
    fig = plt.figure(figsize=(width, 9.0))
    # Middle column: room for the phone-class names between the matrix and the colour bar.
    # Ratios in inches: about 1.2 in for the class names and 0.25 in for the colour bar at any width.
    grid = fig.add_gridspec(
        2, 3, height_ratios=[1, 7], width_ratios=[width - 1.6, 1.2, 0.25], hspace=0.04, wspace=0.0
    )
    ax_top = fig.add_subplot(grid[0, 0])
    ax = fig.add_subplot(grid[1, 0], sharex=ax_top)
    cax = fig.add_subplot(grid[1, 2])

    ax_top.bar(np.arange(n_cols), share[:n_cols] * 100 if cols else [0], width=1.0, color="#555555")
    ax_top.set_ylabel("% frames", fontsize=9)
    ax_top.tick_params(axis="x", labelbottom=False, bottom=False)
    ax_top.tick_params(axis="y", labelsize=8)
    ax_top.set_title(title, loc="left")

    # A mild power norm keeps the many 0.1-0.3 entries visible next to the near-1 ones.
    # Cells with no frames at all stay white, so "never" differs from "rarely".
    cmap = plt.get_cmap("magma_r").with_extremes(bad="white")
    im = ax.imshow(
        np.ma.masked_equal(cond, 0.0),
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        norm=PowerNorm(0.6, vmin=0.0, vmax=1.0),
    )
    ax.set_yticks(np.arange(len(rows)))
    ax.set_yticklabels([phones[r] for r in rows], fontsize=9, family="monospace")
    for name, lo, hi in spans:
        if lo > 0:
            ax.axhline(lo - 0.5, color="#1f77b4", lw=0.8)
        # class name at the right edge, inside the plot frame's margin
        ax.text(
            1.005,
            (lo + hi - 1) / 2,
            name,
            va="center",
            ha="left",
            fontsize=9,
            color="#1f77b4",
            transform=ax.get_yaxis_transform(),
            clip_on=False,
        )
    # Column ticks: where each phone's block of units starts (units themselves are too many to label).
    if cols:
        cond_top = cond.argmax(0)
        starts = [j for j in range(len(cols)) if j == 0 or cond_top[j] != cond_top[j - 1]]
        step = max(1, math.ceil(n_cols / 16))
        ticks = list(range(0, n_cols, step))
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks], fontsize=8)
        for j in starts[1:]:
            ax.axvline(j - 0.5, color="#cccccc", lw=0.3)
    ax.set_xlabel(f"{len(cols)} used units, sorted by their most likely phone (column index)")
    ax.set_ylabel("phone")
    cb = fig.colorbar(im, cax=cax)
    cb.set_label("P(phone | unit)")
    return _save(fig, path)


def plot_codebook_usage(series: Mapping[str, np.ndarray], path: Path) -> Path:
    """Frames per unit, units sorted by use, one line per codebook layer / baseline (log y)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4.8))
    for k, (name, counts) in enumerate(series.items()):
        use = np.sort(np.asarray(counts).sum(0))[::-1].astype(np.float64)
        share = use / max(use.sum(), 1)
        active = int((use > 0).sum())
        nz = share[share > 0]
        ppl = float(np.exp(-(nz * np.log(nz)).sum())) if len(nz) else 0.0
        # Baselines keep the colours they have in the other figures; codebook layers take the palette.
        color = (
            "#777777" if name.startswith("MFCC") else COLORS[3] if name.startswith("k-means") else COLORS[k]
        )
        style = "--" if name.startswith(("MFCC", "k-means")) else "-"
        ax.plot(
            np.arange(1, len(use) + 1),
            np.where(share > 0, share * 100, np.nan),
            style,
            color=color,
            lw=1.8,
            label=f"{name}: {active}/{len(use)} used, perplexity {ppl:.0f}",
        )
    ax.set_yscale("log")
    ax.set_xlabel("unit rank (most used first)")
    ax.set_ylabel("% of evaluation frames")
    ax.set_title("Codebook usage on the evaluation set")
    ax.legend(loc="upper right", frameon=False)
    ax.grid(True, which="major", alpha=0.3)
    return _save(fig, path)


def _layer_series(block: Mapping[str, Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pairs = sorted((int(k), v.get(key)) for k, v in block.items())
    pairs = [(k, float(v)) for k, v in pairs if v is not None and v == v]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _hline(ax, value, label, color, style="--") -> None:
    if value is not None and value == value:
        ax.axhline(value, color=color, ls=style, lw=1.4, label=label)


def plot_layers(metrics: Mapping[str, Any], path: Path) -> Path | None:
    """PNMI / phone purity of the units and ABX error of features and units against the layer."""
    units, layers, base = metrics["units"], metrics["layers"], metrics["baselines"]
    if not units and not any("abx_within" in v for v in layers.values()):
        return None
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    fig.subplots_adjust(wspace=0.22)
    x, pnmi = _layer_series(units, "pnmi")
    _, pur = _layer_series(units, "phone_purity")
    ax1.plot(x, pnmi, "o-", color=COLORS[0], lw=2, label="PNMI (codebook units)")
    ax1.plot(x, pur, "s-", color=COLORS[1], lw=2, label="phone purity (codebook units)")
    mk = base.get("mfcc_kmeans", {})
    _hline(ax1, mk.get("pnmi"), "PNMI, MFCC k-means", COLORS[0])
    _hline(ax1, mk.get("phone_purity"), "phone purity, MFCC k-means", COLORS[1])
    for name, block in base.items():
        if name.startswith("kmeans_layer"):
            _hline(ax1, block.get("pnmi"), f"PNMI, k-means on layer {block.get('layer')}", COLORS[2], ":")
    ax1.set_xlabel("transformer layer")
    ax1.set_ylabel("score (higher is better)")
    ax1.set_ylim(0, 1)
    ax1.set_title("Unit quality per codebook layer")
    if x:
        ax1.set_xticks(x)
    ax1.legend(frameon=False, fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    ax1.grid(True, alpha=0.3)

    for mode, color in (("within", COLORS[0]), ("across", COLORS[1])):
        xs, ys = _layer_series(layers, f"abx_{mode}")
        if xs:
            ax2.plot(xs, ys, "o-", color=color, lw=2, label=f"features, {mode} speaker")
        xu, yu = _layer_series(units, f"abx_{mode}")
        if xu:
            ax2.plot(xu, yu, "D:", color=color, lw=1.5, ms=7, mfc="white", label=f"units, {mode} speaker")
        _hline(ax2, base.get("mfcc", {}).get(f"abx_{mode}"), f"MFCC features, {mode}", color, "--")
        _hline(ax2, mk.get(f"abx_{mode}"), f"MFCC k-means, {mode}", color, (0, (1, 3)))
    ax2.set_xlabel("transformer layer (0 = transformer input)")
    ax2.set_ylabel("ABX error % (lower is better)")
    ax2.set_title("Triphone ABX per layer")
    all_x = sorted({int(k) for k in layers} | {int(k) for k in units})
    if all_x:
        ax2.set_xticks(all_x)
    ax2.set_ylim(bottom=0)
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(frameon=False, fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    else:
        ax2.text(0.5, 0.5, "no ABX computed", ha="center", va="center", transform=ax2.transAxes)
    ax2.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_probe(metrics: Mapping[str, Any], path: Path) -> Path | None:
    """Linear-probe frame accuracy and PER against the layer, with the MFCC probe as reference."""
    layers, mfcc = metrics["layers"], metrics["baselines"].get("mfcc", {})
    x, acc = _layer_series(layers, "probe_accuracy")
    if not x:
        return None
    _, per = _layer_series(layers, "probe_per")
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.plot(x, acc, "o-", color=COLORS[0], lw=2, label="DinoSR features")
    _hline(ax1, mfcc.get("probe_accuracy"), "MFCC features", "#777777")
    ax1.set_ylabel("frame accuracy % (higher is better)")
    ax1.set_title("Linear phone probe: frame accuracy")
    ax2.plot(x, per, "o-", color=COLORS[1], lw=2, label="DinoSR features")
    _hline(ax2, mfcc.get("probe_per"), "MFCC features", "#777777")
    ax2.set_ylabel("PER % (lower is better)")
    ax2.set_title("Linear phone probe: phone error rate")
    ax1.set_ylim(0, 100)
    ax2.set_ylim(0, max([*per, mfcc.get("probe_per") or 0, 100]) * 1.05)
    for ax in (ax1, ax2):
        ax.set_xlabel("transformer layer (0 = transformer input)")
        ax.set_xticks(x)
        ax.legend(frameon=False)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_baselines(summary: Mapping[str, Any], path: Path) -> Path | None:
    """Model versus baselines, one panel per metric, one bar per system."""
    panels = [
        ("pnmi", "PNMI", ["model_units", "mfcc_kmeans", "kmeans"], False),
        ("phone_purity", "phone purity", ["model_units", "mfcc_kmeans", "kmeans"], False),
        (
            "abx_within",
            "ABX within speaker %\n(lower is better)",
            ["model_features", "mfcc", "model_units", "mfcc_kmeans", "kmeans"],
            True,
        ),
        (
            "abx_across",
            "ABX across speaker %\n(lower is better)",
            ["model_features", "mfcc", "model_units", "mfcc_kmeans", "kmeans"],
            True,
        ),
        ("probe_accuracy", "probe frame accuracy %", ["model_features", "mfcc"], False),
    ]
    names = {
        "model_units": ("DinoSR units L{layer}", COLORS[0]),
        "model_features": ("DinoSR feats L{layer}", COLORS[5]),
        "mfcc_kmeans": ("MFCC k-means", "#777777"),
        "mfcc": ("MFCC feats", "#BBBBBB"),
        "kmeans": ("k-means L{layer}", COLORS[3]),
    }
    systems = dict(summary)
    used = [p for p in panels if any(_val(systems, s, p[0]) is not None for s in _expand(systems, p[2]))]
    if not used:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(used), figsize=(3.3 * len(used), 4.4), squeeze=False)
    for ax, (key, label, which, _lower) in zip(axes[0], used):
        bars = [(s, _val(systems, s, key)) for s in _expand(systems, which)]
        bars = [(s, v) for s, v in bars if v is not None]
        xs = np.arange(len(bars))
        kind = [("kmeans" if s.startswith("kmeans_layer") else s) for s, _ in bars]
        colors = [names[k][1] for k in kind]
        ax.bar(xs, [v for _, v in bars], color=colors, width=0.7)
        for xi, (_, v) in zip(xs, bars):
            ax.text(xi, v, f"{v:.2f}" if v < 1.5 else f"{v:.1f}", ha="center", va="bottom", fontsize=9)
        ax.set_xticks(xs)
        ax.set_xticklabels(
            [names[k][0].format(layer=systems[s].get("layer")) for k, (s, _) in zip(kind, bars)],
            rotation=30,
            ha="right",
            fontsize=9,
        )
        ax.set_title(label, fontsize=11)
        top = max((v for _, v in bars), default=1.0)
        ax.set_ylim(0, top * 1.18 if top > 0 else 1)
    fig.suptitle("DinoSR against the baselines (best layers)", y=1.02)
    fig.tight_layout()
    return _save(fig, path)


def _expand(systems: Mapping[str, Any], which: Sequence[str]) -> list[str]:
    out = []
    for w in which:
        if w == "kmeans":
            out += sorted(s for s in systems if s.startswith("kmeans_layer"))
        elif w in systems:
            out.append(w)
    return out


def _val(systems: Mapping[str, Any], name: str, key: str) -> float | None:
    v = systems.get(name, {}).get(key)
    return float(v) if v is not None and v == v else None


def read_train_log(path: str | Path) -> list[dict[str, Any]]:
    """Records of a ``metrics.jsonl``, one per step (a resumed run re-logs steps: the last one wins)."""
    by_step: dict[int, dict[str, Any]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash
            continue
        if isinstance(rec, dict) and "step" in rec:
            by_step[int(rec["step"])] = rec
    return [by_step[s] for s in sorted(by_step)]


def plot_training(
    records: Sequence[Mapping[str, Any]],
    path: Path,
    *,
    codebook_size: int | None = None,
    codebook_layers: Sequence[int] | None = None,
) -> Path | None:
    """Loss, target perplexity and active codewords per codebook layer against the optimizer step."""
    if not records:
        return None
    plt = _plt()
    steps = [r["step"] for r in records]
    mk = "o" if len(records) < 25 else None  # a short run: show the log points themselves
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    axes[0].plot(
        steps, [r.get("loss", np.nan) for r in records], color="#222222", lw=1.8, marker=mk, label="mean"
    )
    n_layers = max((len(r.get("loss_per_layer") or []) for r in records), default=0)
    for k in range(n_layers):
        name = (
            f"layer {codebook_layers[k]}" if codebook_layers and k < len(codebook_layers) else f"codebook {k}"
        )
        axes[0].plot(
            steps,
            [(r.get("loss_per_layer") or [np.nan] * n_layers)[k] for r in records],
            color=COLORS[k % len(COLORS)],
            lw=1,
            alpha=0.8,
            label=name,
        )
    axes[0].set_title("training loss (masked-frame CE)")
    axes[0].set_ylabel("nats")
    for ax, key, title in (
        (axes[1], "target_ppl", "target perplexity"),
        (axes[2], "active_codewords", "active codewords per log window"),
    ):
        n = max((len(r.get(key) or []) for r in records), default=0)
        for k in range(n):
            name = (
                f"layer {codebook_layers[k]}"
                if codebook_layers and k < len(codebook_layers)
                else f"codebook {k}"
            )
            ax.plot(
                steps,
                [(r.get(key) or [np.nan] * n)[k] for r in records],
                color=COLORS[k % len(COLORS)],
                lw=1.6,
                marker=mk,
                label=name,
            )
        if codebook_size:
            ax.axhline(codebook_size, color="#999999", ls="--", lw=1, label=f"codebook size {codebook_size}")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
    for ax in axes:
        ax.set_xlabel("optimizer step")
        ax.grid(True, alpha=0.3)
        ax.legend(frameon=False, fontsize=8.5)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------- HTML
_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 4px 9px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #555; font-size: 0.9em; } code { background: #f5f5f5; padding: 0 3px; }
figure { margin: 1em 0; } figcaption { color: #444; font-size: 0.9em; }
"""


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _figure(rel: str, caption: str) -> str:
    return (
        f'<figure><a href="{html.escape(rel)}"><img src="{html.escape(rel)}" alt="{html.escape(caption)}">'
        f"</a><figcaption>{caption}</figcaption></figure>"
    )


def write_report(
    out_dir: str | Path,
    metrics: Mapping[str, Any],
    counts: Mapping[str, np.ndarray],
    *,
    train_log: str | Path | None = None,
    title: str = "DinoSR evaluation",
) -> Path:
    """Draw the figures into ``out_dir/figures`` and write ``out_dir/report.html``; returns its path."""
    from dinosr.evaluate.evaluate import summary_rows

    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for old in fig_dir.glob("*.png"):  # a rerun must not show figures of a previous evaluation
        old.unlink()
    phones = metrics["data"]["phones"]
    src = metrics.get("source", {})
    sections: list[str] = []

    # Summary
    from dinosr.evaluate.evaluate import SUMMARY_COLUMNS

    rows = [[html.escape(label), *cells] for label, cells in summary_rows(metrics.get("summary", {}))]
    data = metrics["data"]
    sections.append(
        "<h2>Summary</h2>"
        + _table(["system", *[c[1] for c in SUMMARY_COLUMNS]], rows)
        + f"<p class='note'>Evaluation set: {data['num_utterances']} utterances, "
        f"{data['seconds'] / 60:.1f} min, "
        f"speakers {', '.join(map(html.escape, data['speakers']))} (held out from training). "
        f"Probe and k-means fit on {data['train_utterances']} training utterances "
        f"({data['train_seconds'] / 60:.1f} min, "
        f"speakers {', '.join(map(html.escape, data['train_speakers']))}). "
        f"ABX: {data['abx_items']} triphone items from {data['abx_utterances']} utterances. "
        "Best layers: units by PNMI, features by probe accuracy. Definitions: docs/evaluation.md.</p>"
    )

    # Unit analysis
    unit_figs = []
    for key in sorted(counts, key=_count_key_order):
        c = counts[key]
        if key.startswith("units/"):
            layer = key.split("/")[1]
            name, label = (
                f"units_L{layer}.png",
                f"DinoSR {src.get('unit_source', 'codebook')} units, layer {layer}",
            )
        elif key == "mfcc_kmeans":
            name, label = "units_mfcc_kmeans.png", f"MFCC k-means ({c.shape[1]} units)"
        else:
            layer = key.split("/")[1]
            name, label = (
                f"units_kmeans_L{layer}.png",
                f"k-means ({c.shape[1]} units) on DinoSR layer {layer}",
            )
        q = _block_for(metrics, key)
        title_text = f"{label}: PNMI {_fmt(q.get('pnmi'))}, phone purity {_fmt(q.get('phone_purity'))}"
        plot_cooccurrence(c, phones, title_text, fig_dir / name)
        unit_figs.append(_figure(f"figures/{name}", html.escape(title_text)))
    if unit_figs:
        unit_rows = []
        for layer, q in sorted(metrics["units"].items(), key=lambda kv: int(kv[0])):
            unit_rows.append([f"DinoSR L{layer}", *_unit_cells(q)])
        for name, q in metrics["baselines"].items():
            if "pnmi" in q:
                label = "MFCC k-means" if name == "mfcc_kmeans" else f"k-means on L{q.get('layer')}"
                unit_rows.append([label, *_unit_cells(q)])
        sections.append(
            "<h2>Units</h2>"
            + _table(
                [
                    "units",
                    "PNMI",
                    "phone purity",
                    "cluster purity",
                    "active",
                    "perplexity",
                    "bitrate (bit/s)",
                    "ABX within %",
                    "ABX across %",
                ],
                unit_rows,
            )
            + "<p class='note'>Co-occurrence figures: each column is one used unit; the colour is "
            "P(phone | unit), so a column with one dark cell is a unit that fires on one phone. "
            "Rows are phones grouped by class, columns are sorted by the unit's most likely phone, "
            "so a clean diagonal staircase means units "
            "specialise by phone. The bar above each column is the unit's share of evaluation frames.</p>"
            + "".join(unit_figs)
        )

    usage = {f"layer {k.split('/')[1]}": v for k, v in counts.items() if k.startswith("units/")}
    if "mfcc_kmeans" in counts:
        usage["MFCC k-means"] = counts["mfcc_kmeans"]
    for k, v in counts.items():
        if k.startswith("kmeans/"):
            usage[f"k-means L{k.split('/')[1]}"] = v
    if usage:
        plot_codebook_usage(usage, fig_dir / "codebook_usage.png")
        sections.append(
            "<h2>Codebook usage</h2>"
            + _figure(
                "figures/codebook_usage.png",
                "Share of evaluation frames per unit, units ranked by use. A collapsed codebook shows "
                "few used units and a steep fall; a healthy one a long flat head.",
            )
        )

    # Layers
    layer_rows = [
        [
            f"L{layer}",
            _fmt(v.get("abx_within"), 1),
            _fmt(v.get("abx_across"), 1),
            _fmt(v.get("probe_accuracy"), 1),
            _fmt(v.get("probe_per"), 1),
        ]
        for layer, v in sorted(metrics["layers"].items(), key=lambda kv: int(kv[0]))
    ]
    mf = metrics["baselines"].get("mfcc")
    if mf:
        layer_rows.append(
            [
                "MFCC",
                _fmt(mf.get("abx_within"), 1),
                _fmt(mf.get("abx_across"), 1),
                _fmt(mf.get("probe_accuracy"), 1),
                _fmt(mf.get("probe_per"), 1),
            ]
        )
    figs = []
    if plot_layers(metrics, fig_dir / "layers.png"):
        figs.append(
            _figure(
                "figures/layers.png",
                "Left: unit PNMI and phone purity per codebook layer. "
                "Right: ABX error of continuous features (solid) and codebook units (dotted) per layer; "
                "dashed lines: MFCC baselines.",
            )
        )
    if plot_probe(metrics, fig_dir / "probe.png"):
        figs.append(
            _figure(
                "figures/probe.png",
                "Linear phone probe trained on the training speakers, tested on the "
                "held-out speakers: frame accuracy and phone error rate (repeats collapsed, silence "
                "dropped).",
            )
        )
    if layer_rows:
        sections.append(
            f"<h2>Layers ({html.escape(str(src.get('feature_kind', 'hidden')))} features)</h2>"
            + _table(["layer", "ABX within %", "ABX across %", "probe accuracy %", "probe PER %"], layer_rows)
            + "".join(figs)
        )
    if plot_baselines(metrics.get("summary", {}), fig_dir / "baselines.png"):
        sections.append(
            "<h2>Model versus baselines</h2>"
            + _figure(
                "figures/baselines.png",
                "Best DinoSR layers next to MFCC features, MFCC k-means with the same number "
                "of units fit on the training speech, and k-means on a DinoSR layer (if computed).",
            )
        )

    # Training
    if train_log is not None and Path(train_log).exists():
        records = read_train_log(train_log)
        layers = src.get("codebook_layers")
        if plot_training(
            records, fig_dir / "training.png", codebook_size=src.get("codebook_size"), codebook_layers=layers
        ):
            last = records[-1]
            sections.append(
                "<h2>Training</h2>"
                + _figure(
                    "figures/training.png",
                    f"From {html.escape(str(train_log))} ({len(records)} log points, "
                    f"last step {last['step']}). Target perplexity and active codewords are measured on the "
                    "teacher targets of each logging window; a collapsing codebook drops towards 1.",
                )
            )

    meta = _table(
        ["item", "value"],
        [[html.escape(k), _fmt(v)] for k, v in _flat_meta(metrics).items()],
    )
    sections.append("<h2>Settings and timings</h2>" + meta)
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        + "".join(sections)
        + "<p class='note'>Numbers: metrics.json next to this page; count matrices: counts.npz.</p>"
        + "</body></html>\n"
    )
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _count_key_order(key: str) -> tuple[int, int]:
    if key.startswith("units/"):
        return (0, int(key.split("/")[1]))
    if key == "mfcc_kmeans":
        return (1, 0)
    return (2, int(key.split("/")[1]))


def _block_for(metrics: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    if key.startswith("units/"):
        return metrics["units"].get(key.split("/")[1], {})
    if key == "mfcc_kmeans":
        return metrics["baselines"].get("mfcc_kmeans", {})
    return metrics["baselines"].get(f"kmeans_layer{key.split('/')[1]}", {})


def _unit_cells(q: Mapping[str, Any]) -> list[str]:
    return [
        _fmt(q.get("pnmi")),
        _fmt(q.get("phone_purity")),
        _fmt(q.get("cluster_purity")),
        _fmt(q.get("active_units")),
        _fmt(q.get("unit_perplexity"), 1),
        _fmt(q.get("bitrate"), 1),
        _fmt(q.get("abx_within"), 1),
        _fmt(q.get("abx_across"), 1),
    ]


def _flat_meta(metrics: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section in ("source", "settings", "timings"):
        for k, v in (metrics.get(section) or {}).items():
            out[f"{section}.{k}"] = v if not isinstance(v, list | dict) else json.dumps(v)
    for k in ("model_path", "train_log", "corpus"):
        if k in metrics:
            out[k] = metrics[k]
    return out


def load_counts(path: str | Path) -> dict[str, np.ndarray]:
    """``counts.npz`` of `run_evaluation` with its keys mapped back (``units_L2`` -> ``units/2``)."""
    with np.load(path) as data:
        return {
            k.replace("_L", "/") if k.startswith(("units_L", "kmeans_L")) else k: data[k] for k in data.files
        }


def rebuild_report(out_dir: str | Path, *, title: str | None = None) -> Path:
    """Redraw ``report.html`` and its figures from ``metrics.json`` and ``counts.npz`` (no recomputation)."""
    out_dir = Path(out_dir)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    train_log = metrics.get("train_log")
    return write_report(
        out_dir,
        metrics,
        load_counts(out_dir / "counts.npz"),
        train_log=train_log,
        title=title or metrics.get("title", "DinoSR evaluation"),
    )
