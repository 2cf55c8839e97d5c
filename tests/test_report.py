"""The evaluation report: phone/unit ordering, training-log reading, HTML + PNG files from plain metrics."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from dinosr.evaluate.corpus import PHONE_INVENTORY
from dinosr.evaluate.figures import PHONE_CLASSES, phone_order, sort_units
from dinosr.evaluate.report import load_counts, read_train_log, rebuild_report, write_report
from dinosr.evaluate.summary import format_summary, summarize

pytest.importorskip("matplotlib")


def test_phone_classes_cover_the_inventory_once():
    members = [p for _, ps in PHONE_CLASSES for p in ps]
    assert sorted(members) == sorted(PHONE_INVENTORY)
    assert len(members) == len(set(members)) == 40
    order, spans = phone_order(PHONE_INVENTORY)
    assert sorted(order) == list(range(40))
    assert spans[0][:2] == ("vowels", 0)
    assert spans[-1] == ("silence", 39, 40)
    # unknown symbols go last, as "other"
    order, spans = phone_order([*PHONE_INVENTORY, "XX"])
    assert order[-1] == 40
    assert spans[-1] == ("other", 40, 41)


def test_sort_units_groups_by_most_likely_phone():
    # 3 phones x 5 units; unit 3 unused
    counts = np.array(
        [
            [0, 9, 0, 0, 2],  # phone 0
            [5, 1, 0, 0, 8],  # phone 1
            [1, 0, 7, 0, 0],  # phone 2
        ]
    )
    assert sort_units(counts, [0, 1, 2]) == [1, 0, 4, 2]  # unit 0 (5/6) before unit 4 (8/10) for phone 1
    assert sort_units(counts, [2, 1, 0]) == [2, 0, 4, 1]
    assert sort_units(np.zeros((2, 3)), [0, 1]) == []


def test_read_train_log_keeps_the_last_record_per_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [
        {"step": 10, "loss": 5.0},
        {"step": 20, "loss": 4.0},
        {"step": 20, "loss": 3.5},  # re-logged after a resume
        {"step": 15, "loss": 4.5},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + '\n{"step": 30, "lo')  # crash mid-line
    records = read_train_log(path)
    assert [r["step"] for r in records] == [10, 15, 20]
    assert records[-1]["loss"] == 3.5


def _fake_metrics(rng: np.random.Generator, num_units: int = 64):
    from dinosr.evaluate.metrics import quality_from_counts

    counts = {
        "units/2": rng.integers(0, 5, (40, num_units)) * (rng.random((40, num_units)) < 0.2),
        "units/3": rng.integers(0, 5, (40, num_units)) * (rng.random((40, num_units)) < 0.2),
        "mfcc_kmeans": rng.integers(0, 5, (40, num_units)),
    }
    units = {}
    for key in ("units/2", "units/3"):
        q = quality_from_counts(counts[key])
        units[key.split("/")[1]] = {
            **q,
            "bitrate": 120.0,
            "num_units": num_units,
            "abx_within": 20.0,
            "abx_across": None,
        }
    base_q = {**quality_from_counts(counts["mfcc_kmeans"]), "bitrate": 150.0, "num_units": num_units}
    metrics = {
        "units": units,
        "layers": {
            str(k): {
                "abx_within": 30.0 - k,
                "abx_across": 35.0 - k,
                "probe_accuracy": 40.0 + k,
                "probe_per": 90.0 - k,
            }
            for k in range(4)
        },
        "baselines": {
            "mfcc_kmeans": {**base_q, "abx_within": 25.0, "abx_across": 33.0},
            "mfcc": {"abx_within": 10.0, "abx_across": 20.0, "probe_accuracy": 45.0, "probe_per": 80.0},
        },
        "data": {
            "num_utterances": 5,
            "seconds": 30.0,
            "speakers": ["a", "b"],
            "num_frames": 1500,
            "abx_utterances": 5,
            "abx_items": 100,
            "train_utterances": 10,
            "train_seconds": 60.0,
            "train_speakers": ["c"],
            "phones": PHONE_INVENTORY,
        },
        "source": {
            "kind": "model",
            "codebook_layers": [2, 3],
            "codebook_size": num_units,
            "feature_kind": "hidden",
            "unit_source": "codebook",
        },
        "settings": {"seed": 0},
        "timings": {"abx": 1.0},
    }
    metrics["summary"] = summarize(metrics)
    return metrics, counts


def test_write_report_and_rebuild(tmp_path):
    rng = np.random.default_rng(0)
    metrics, counts = _fake_metrics(rng)
    log = tmp_path / "metrics.jsonl"
    log.write_text(
        "\n".join(
            json.dumps(
                {
                    "step": s,
                    "loss": 6 - s / 50,
                    "loss_per_layer": [6.0, 5.9],
                    "target_ppl": [40.0, 50.0],
                    "active_codewords": [60, 64],
                }
            )
            for s in range(10, 110, 10)
        )
    )
    out = tmp_path / "eval"
    stale = out / "figures" / "old.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x")
    report = write_report(out, metrics, counts, train_log=log, title="test <report>")
    html = report.read_text()
    assert "test &lt;report&gt;" in html
    refs = re.findall(r'src="([^"]+)"', html)
    expected = {
        "units_L2.png",
        "units_L3.png",
        "units_mfcc_kmeans.png",
        "codebook_usage.png",
        "layers.png",
        "probe.png",
        "baselines.png",
        "training.png",
    }
    assert {r.split("/")[-1] for r in refs} == expected
    assert {p.name for p in (out / "figures").iterdir()} == expected  # stale figure removed
    # the summary table lists the best layers
    assert "DinoSR codebook units, layer" in html
    assert "DinoSR features, layer 3" in html
    # rebuild from files written next to the page
    (out / "metrics.json").write_text(json.dumps({**metrics, "train_log": str(log), "title": "again"}))
    np.savez_compressed(out / "counts.npz", **{k.replace("/", "_L"): v for k, v in counts.items()})
    assert set(load_counts(out / "counts.npz")) == set(counts)
    assert "<title>again</title>" in rebuild_report(out).read_text()


def test_summary_table_text():
    metrics, _ = _fake_metrics(np.random.default_rng(1))
    text = format_summary(metrics["summary"])
    lines = text.splitlines()
    assert "PNMI" in lines[0]
    assert "probe acc %" in lines[0]
    names = [line.split("  ")[0].strip() for line in lines[2:]]
    assert names[1] == "MFCC k-means units"
    assert names[-1] == "MFCC features"
    assert "DinoSR features, layer 3" in text  # best probe layer
    mfcc_row = lines[-1]
    assert mfcc_row.split()[2] == "-"  # no PNMI for continuous features
