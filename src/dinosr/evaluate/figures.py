"""The report's figures: PNG files drawn with matplotlib (``Agg`` backend, no display needed).

* `plot_cooccurrence`: the phone x unit co-occurrence matrix, P(phone | unit), rows = phones grouped by
  class, columns = used units sorted by their most likely phone (the unit-analysis figure of the DinoSR
  paper), with each unit's share of frames above it;
* `plot_codebook_usage`: frames per unit (sorted) for every codebook layer and the k-means baselines;
* `plot_layers`: PNMI / purity of the units and ABX error of features and units against the layer;
* `plot_probe`: linear-probe frame accuracy and PER against the layer;
* `plot_baselines`: the model next to the baselines, metric by metric;
* `plot_training`: loss, target perplexity and active codewords from the run's ``metrics.jsonl``.

Each returns the path written, or None when there is nothing to draw. matplotlib is imported inside
the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dinosr.fileio import atomic_write

__all__ = [
    "PHONE_CLASSES",
    "phone_order",
    "plot_baselines",
    "plot_codebook_usage",
    "plot_cooccurrence",
    "plot_layers",
    "plot_probe",
    "plot_training",
    "sort_units",
]

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
    # Atomic, through a file object: savefig cannot see the final name, so it is told the format.
    with atomic_write(path) as f:
        fig.savefig(f, format=Path(path).suffix.lstrip(".") or "png", bbox_inches="tight", facecolor="white")
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
