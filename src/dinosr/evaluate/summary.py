"""The summary table: the best DinoSR unit and feature layers next to the MFCC baselines.

`summarize` picks the rows from the per-layer metrics; `summary_rows` formats them (shared by the
printed table, `format_summary`, and the report's HTML table).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SUMMARY_COLUMNS", "format_summary", "heldout_lines", "summarize", "summary_rows"]


def _best(block: Mapping[str, Mapping[str, Any]], key: str, *, lower: bool = False) -> str | None:
    cands = [(v[key], k) for k, v in block.items() if isinstance(v.get(key), float) and v[key] == v[key]]
    if not cands:
        return None
    return (min if lower else max)(cands)[1]


def summarize(results: Mapping[str, Any]) -> dict[str, Any]:
    """The demo's table: best DinoSR unit layer (by PNMI) and feature layer (by probe accuracy, else ABX)
    next to MFCC k-means and MFCC features. Values are copied from the per-layer blocks."""
    out: dict[str, Any] = {}
    keys_u = (
        "pnmi",
        "phone_purity",
        "cluster_purity",
        "active_units",
        "unit_perplexity",
        "bitrate",
        "abx_within",
        "abx_across",
    )
    keys_f = ("abx_within", "abx_across", "probe_accuracy", "probe_per")
    best_u = _best(results["units"], "pnmi")
    if best_u is not None:
        out["model_units"] = {"layer": int(best_u), **{k: results["units"][best_u].get(k) for k in keys_u}}
    best_f = _best(results["layers"], "probe_accuracy") or _best(results["layers"], "abx_within", lower=True)
    if best_f is not None:
        out["model_features"] = {
            "layer": int(best_f),
            **{k: results["layers"][best_f].get(k) for k in keys_f},
        }
    base = results["baselines"]
    if "mfcc_kmeans" in base:
        out["mfcc_kmeans"] = {k: base["mfcc_kmeans"].get(k) for k in keys_u}
    if "mfcc" in base:
        out["mfcc"] = {k: base["mfcc"].get(k) for k in keys_f}
    for name, block in base.items():
        if name.startswith("kmeans_layer"):
            out[name] = {"layer": block.get("layer"), **{k: block.get(k) for k in keys_u}}
    return out


SUMMARY_COLUMNS = [
    ("pnmi", "PNMI", "{:.3f}"),
    ("phone_purity", "phone pur.", "{:.3f}"),
    ("abx_within", "ABX within %", "{:.1f}"),
    ("abx_across", "ABX across %", "{:.1f}"),
    ("probe_accuracy", "probe acc %", "{:.1f}"),
    ("probe_per", "probe PER %", "{:.1f}"),
]


def summary_rows(summary: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """(row label, formatted cells) for the text and HTML summary tables; '-' where not applicable."""
    labels = {
        "model_units": "DinoSR codebook units, layer {layer}",
        "mfcc_kmeans": "MFCC k-means units",
        "model_features": "DinoSR features, layer {layer}",
        "mfcc": "MFCC features",
    }
    rows = []
    names = [n for n in ("model_units", "mfcc_kmeans") if n in summary]
    names += sorted(n for n in summary if n.startswith("kmeans_layer"))
    names += [n for n in ("model_features", "mfcc") if n in summary]
    for name in names:
        block = summary[name]
        label = labels.get(name, "k-means on DinoSR layer {layer}").format(layer=block.get("layer"))
        cells = []
        for key, _, fmt in SUMMARY_COLUMNS:
            v = block.get(key)
            cells.append("-" if v is None or v != v else fmt.format(v))
        rows.append((label, cells))
    return rows


def format_summary(summary: Mapping[str, Any]) -> str:
    """A fixed-width text table of `summary_rows`."""
    rows = summary_rows(summary)
    head = ["", *[c[1] for c in SUMMARY_COLUMNS]]
    body = [[label, *cells] for label, cells in rows]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = []
    for r in [head, *body]:
        lines.append(
            "  ".join(r[0].ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
        )
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def heldout_lines(heldout: Mapping[str, Any] | None) -> list[str]:
    """What the evaluation set is, for the printed table and the report (``data.heldout`` of metrics.json).

    Lines starting with ``WARNING`` say that the numbers do not measure unseen voices or speakers.
    """
    if not heldout:
        return []
    voices: Mapping[str, list[str]] = heldout["eval_voices"]
    speakers = sorted(s for who in voices.values() for s in who)
    shared_voices: Mapping[str, Mapping[str, list[str]]] = heldout.get("shared_voices") or {}
    shared_speakers = heldout.get("shared_speakers") or []
    if heldout.get("train_voices") is None:
        return [
            f"Evaluation speakers {', '.join(speakers)} "
            "(training speakers unknown: unseen voices not checked)"
        ]
    lines = []
    if shared_speakers:
        lines.append(
            f"WARNING: evaluation speakers {', '.join(shared_speakers)} are also training speakers: "
            "these numbers flatter the model"
        )
    pseudo = {v: who for v, who in shared_voices.items() if set(who["eval"]) - set(shared_speakers)}
    if pseudo:
        for v, who in pseudo.items():
            lines.append(
                f"WARNING: evaluation speakers {', '.join(who['eval'])} share the base voice {v} with "
                f"training speakers {', '.join(who['train'])}: pseudo-speakers of a training voice, "
                "not an unseen voice"
            )
    unseen = [v for v in voices if v not in shared_voices]
    if unseen and heldout.get("voice_metadata"):
        noun = "voice" if len(unseen) == 1 else "voices"
        who = ", ".join(s for v in unseen for s in voices[v])
        lines.insert(0, f"Held-out {noun} {', '.join(unseen)} (unseen in training): speakers {who}")
    elif unseen:
        who = ", ".join(s for v in unseen for s in voices[v])
        lines.insert(0, f"Held-out speakers {who} (unseen in training; no voice metadata: one voice each)")
    return lines
