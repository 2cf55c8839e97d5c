"""The evaluation report: one HTML page that shows the figures of `dinosr.evaluate.figures`.

``write_report(out_dir, metrics, counts, train_log=...)`` writes ``out_dir/report.html`` and
``out_dir/figures/*.png``. The page uses relative links only, so the directory can be copied or
opened from anywhere (``file://``). Each section has its own builder (``section_*``), which draws its
figures and returns its HTML, or "" when it has nothing to show; `write_report` joins them in order.
`rebuild_report` redraws the page from ``metrics.json`` and ``counts.npz``.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dinosr.evaluate.figures import (
    plot_baselines,
    plot_codebook_usage,
    plot_cooccurrence,
    plot_layers,
    plot_probe,
    plot_training,
)
from dinosr.evaluate.summary import SUMMARY_COLUMNS, heldout_lines, summary_rows
from dinosr.fileio import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

__all__ = ["load_counts", "read_train_log", "rebuild_report", "write_report"]

_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 4px 9px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #555; font-size: 0.9em; } code { background: #f5f5f5; padding: 0 3px; }
.warn { color: #a00; font-weight: bold; }
figure { margin: 1em 0; } figcaption { color: #444; font-size: 0.9em; }
"""


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


# ---------------------------------------------------------------------------------------------- HTML
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


# ------------------------------------------------------------------------------------------ sections
def section_summary(metrics: Mapping[str, Any]) -> str:
    """The summary table (the demo's printout), what the held-out set is, and the sets used."""
    rows = [[html.escape(label), *cells] for label, cells in summary_rows(metrics.get("summary", {}))]
    data = metrics["data"]
    heldout = "".join(
        f"<p class='{'warn' if line.startswith('WARNING') else 'note'}'>{html.escape(line)}</p>"
        for line in heldout_lines(data.get("heldout"))
    )
    notes = []
    for mode, reason in (data.get("abx_null") or {}).items():
        notes.append(f"ABX {html.escape(mode)} is null for every system: {html.escape(reason)}.")
    for split, names in (data.get("skipped_files") or {}).items():
        if names:
            notes.append(f"{len(names)} unreadable {split} file(s) skipped: {html.escape(', '.join(names))}.")
    return (
        "<h2>Summary</h2>"
        + heldout
        + _table(["system", *[c[1] for c in SUMMARY_COLUMNS]], rows)
        + f"<p class='note'>Evaluation set: {data['num_utterances']} utterances, "
        f"{data['seconds'] / 60:.1f} min, "
        f"speakers {', '.join(map(html.escape, data['speakers']))}. "
        f"Probe and k-means fit on {data['train_utterances']} training utterances "
        f"({data['train_seconds'] / 60:.1f} min, "
        f"speakers {', '.join(map(html.escape, data['train_speakers']))}). "
        f"ABX: {data['abx_items']} triphone items from {data['abx_utterances']} utterances. "
        "Best layers: units by PNMI, features by probe accuracy. Definitions: docs/evaluation.md."
        + "".join(f" {n}" for n in notes)
        + "</p>"
    )


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


def section_units(metrics: Mapping[str, Any], counts: Mapping[str, np.ndarray], fig_dir: Path) -> str:
    """Per-system unit table and one co-occurrence figure per unit system."""
    phones = metrics["data"]["phones"]
    src = metrics.get("source", {})
    figs = []
    for key in sorted(counts, key=_count_key_order):
        c = counts[key]
        if key.startswith("units/"):
            layer = key.split("/")[1]
            name = f"units_L{layer}.png"
            label = f"DinoSR {src.get('unit_source', 'codebook')} units, layer {layer}"
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
        figs.append(_figure(f"figures/{name}", html.escape(title_text)))
    if not figs:
        return ""
    rows = [
        [f"DinoSR L{layer}", *_unit_cells(q)] for layer, q in sorted(metrics["units"].items(), key=_by_int)
    ]
    for name, q in metrics["baselines"].items():
        if "pnmi" in q:
            label = "MFCC k-means" if name == "mfcc_kmeans" else f"k-means on L{q.get('layer')}"
            rows.append([label, *_unit_cells(q)])
    head = [
        "units",
        "PNMI",
        "phone purity",
        "cluster purity",
        "active",
        "perplexity",
        "bitrate (bit/s)",
        "ABX within %",
        "ABX across %",
    ]
    return (
        "<h2>Units</h2>"
        + _table(head, rows)
        + "<p class='note'>Co-occurrence figures: each column is one used unit; the colour is "
        "P(phone | unit), so a column with one dark cell is a unit that fires on one phone. "
        "Rows are phones grouped by class, columns are sorted by the unit's most likely phone, "
        "so a clean diagonal staircase means units "
        "specialise by phone. The bar above each column is the unit's share of evaluation frames.</p>"
        + "".join(figs)
    )


def section_usage(counts: Mapping[str, np.ndarray], fig_dir: Path) -> str:
    """Frames per unit, ranked, for every codebook layer and k-means baseline."""
    usage = {f"layer {k.split('/')[1]}": v for k, v in counts.items() if k.startswith("units/")}
    if "mfcc_kmeans" in counts:
        usage["MFCC k-means"] = counts["mfcc_kmeans"]
    for k, v in counts.items():
        if k.startswith("kmeans/"):
            usage[f"k-means L{k.split('/')[1]}"] = v
    if not usage:
        return ""
    plot_codebook_usage(usage, fig_dir / "codebook_usage.png")
    return "<h2>Codebook usage</h2>" + _figure(
        "figures/codebook_usage.png",
        "Share of evaluation frames per unit, units ranked by use. A collapsed codebook shows "
        "few used units and a steep fall; a healthy one a long flat head.",
    )


def _by_int(kv: tuple[str, Any]) -> int:
    return int(kv[0])


def _feature_cells(v: Mapping[str, Any]) -> list[str]:
    keys = ("abx_within", "abx_across", "probe_accuracy", "probe_per")
    return [_fmt(v.get(k), 1) for k in keys]


def section_layers(metrics: Mapping[str, Any], fig_dir: Path) -> str:
    """Per-layer ABX / probe table with the layer and probe figures."""
    rows = [[f"L{layer}", *_feature_cells(v)] for layer, v in sorted(metrics["layers"].items(), key=_by_int)]
    mf = metrics["baselines"].get("mfcc")
    if mf:
        rows.append(["MFCC", *_feature_cells(mf)])
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
    if not rows and not figs:
        return ""
    kind = html.escape(str(metrics.get("source", {}).get("feature_kind", "hidden")))
    head = ["layer", "ABX within %", "ABX across %", "probe accuracy %", "probe PER %"]
    return f"<h2>Layers ({kind} features)</h2>" + (_table(head, rows) if rows else "") + "".join(figs)


def section_baselines(metrics: Mapping[str, Any], fig_dir: Path) -> str:
    """Bars per metric: the best DinoSR layers against the baselines."""
    if not plot_baselines(metrics.get("summary", {}), fig_dir / "baselines.png"):
        return ""
    return "<h2>Model versus baselines</h2>" + _figure(
        "figures/baselines.png",
        "Best DinoSR layers next to MFCC features, MFCC k-means with the same number "
        "of units fit on the training speech, and k-means on a DinoSR layer (if computed).",
    )


def section_training(metrics: Mapping[str, Any], train_log: str | Path | None, fig_dir: Path) -> str:
    """Training curves from the run's ``metrics.jsonl`` (when known)."""
    if train_log is None or not Path(train_log).exists():
        return ""
    src = metrics.get("source", {})
    records = read_train_log(train_log)
    drawn = plot_training(
        records,
        fig_dir / "training.png",
        codebook_size=src.get("codebook_size"),
        codebook_layers=src.get("codebook_layers"),
    )
    if not drawn:
        return ""
    return "<h2>Training</h2>" + _figure(
        "figures/training.png",
        f"From {html.escape(str(train_log))} ({len(records)} log points, "
        f"last step {records[-1]['step']}). Target perplexity and active codewords are measured on the "
        "teacher targets of each logging window; a collapsing codebook drops towards 1.",
    )


def _flat_meta(metrics: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section in ("source", "settings", "timings"):
        for k, v in (metrics.get(section) or {}).items():
            out[f"{section}.{k}"] = v if not isinstance(v, list | dict) else json.dumps(v)
    for k in ("model_path", "train_log", "corpus"):
        if k in metrics:
            out[k] = metrics[k]
    return out


def section_settings(metrics: Mapping[str, Any]) -> str:
    """Source, settings and timings as one key/value table."""
    rows = [[html.escape(k), _fmt(v)] for k, v in _flat_meta(metrics).items()]
    return "<h2>Settings and timings</h2>" + _table(["item", "value"], rows)


# ------------------------------------------------------------------------------------------- the page
def write_report(
    out_dir: str | Path,
    metrics: Mapping[str, Any],
    counts: Mapping[str, np.ndarray],
    *,
    train_log: str | Path | None = None,
    title: str = "DinoSR evaluation",
) -> Path:
    """Draw the figures into ``out_dir/figures`` and write ``out_dir/report.html``; returns its path."""
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for old in fig_dir.glob("*.png"):  # a rerun must not show figures of a previous evaluation
        old.unlink()
    sections = [
        section_summary(metrics),
        section_units(metrics, counts, fig_dir),
        section_usage(counts, fig_dir),
        section_layers(metrics, fig_dir),
        section_baselines(metrics, fig_dir),
        section_training(metrics, train_log, fig_dir),
        section_settings(metrics),
    ]
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        + "".join(sections)
        + "<p class='note'>Numbers: metrics.json next to this page; count matrices: counts.npz.</p>"
        + "</body></html>\n"
    )
    path = out_dir / "report.html"
    atomic_write_text(path, page)
    return path


def save_counts(path: str | Path, counts: Mapping[str, np.ndarray]) -> None:
    """Write ``counts.npz`` atomically with npz-safe keys (``units/2`` -> ``units_L2``); see `load_counts`."""
    with atomic_write(path) as f:  # a file object: np.savez would append ".npz" to a temporary name
        np.savez_compressed(f, **{k.replace("/", "_L"): v for k, v in counts.items()})


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
