"""`dinosr evaluate` end to end (micro model, synthetic aligned corpus) and a `dinosr demo` smoke run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import dinosr
from dinosr.cli import main
from dinosr.evaluate.corpus import PHONE_INVENTORY, load_eval_corpus, pick_balanced
from dinosr.evaluate.evaluate import EvalSettings
from dinosr.evaluate.runner import resolve_model_path
from dinosr.evaluate.sources import ModelSource

pytest.importorskip("sklearn")
pytest.importorskip("librosa")
pytest.importorskip("matplotlib")

SR = 16000
# Each phone is a fixed tone pair + noise, so MFCC k-means finds structure and ABX has signal.
PHONE_SOUNDS = {"AA": (300, 900), "IY": (250, 2300), "S": (0, 0), "M": (200, 400), "T": (1500, 3500)}
# Two phones in the same contexts, each twice per utterance: triphone ABX cells within and across speakers.
PATTERN = ["sil", *["M", "AA", "S", "M", "IY", "S"] * 2, "T", "AA", "T", "IY", "T", "sil"]


def _render(
    rng: np.random.Generator, speaker_shift: float
) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    chunks, segs, t = [], [], 0.0
    for phone in PATTERN:
        dur = float(rng.uniform(0.06, 0.12)) if phone != "sil" else 0.15
        n = int(dur * SR)
        tt = np.arange(n) / SR
        if phone == "sil":
            x = 0.005 * rng.standard_normal(n)
        elif phone == "S":
            x = 0.2 * rng.standard_normal(n)
        else:
            f1, f2 = PHONE_SOUNDS[phone]
            x = 0.4 * np.sin(2 * np.pi * f1 * speaker_shift * tt) + 0.3 * np.sin(
                2 * np.pi * f2 * speaker_shift * tt
            )
            x += 0.01 * rng.standard_normal(n)
        chunks.append(x)
        segs.append((t, t + n / SR, phone))
        t += n / SR
    return np.concatenate(chunks).astype(np.float32), segs


def make_aligned_corpus(root: Path, *, utts_per_speaker: int = 3, prefix: str = "spk") -> Path:
    """Corpus in the DESIGN.md layout: 2 training and 2 held-out speakers, exact alignments."""
    rng = np.random.default_rng(0)
    speakers = {
        f"{prefix}a": ("train", 1.0),
        f"{prefix}b": ("train", 1.1),
        f"{prefix}c": ("valid", 0.95),
        f"{prefix}d": ("valid", 1.05),
    }
    rows = {"train": [], "valid": []}
    align = ["utt\tstart\tend\tphone"]
    spk_lines = []
    for spk, (split, shift) in speakers.items():
        (root / "audio" / spk).mkdir(parents=True, exist_ok=True)
        for i in range(utts_per_speaker):
            utt = f"{spk}-{i:03d}"
            wav, segs = _render(rng, shift)
            soundfile.write(root / "audio" / spk / f"{utt}.wav", wav, SR)
            rows[split].append(f"audio/{spk}/{utt}.wav\t{len(wav)}")
            align += [f"{utt}\t{s:.4f}\t{e:.4f}\t{p}" for s, e, p in segs]
            spk_lines.append(f"{utt}\t{spk}")
    for split, lines in rows.items():
        (root / f"{split}.tsv").write_text("\n".join([".", *lines]) + "\n")
    (root / "alignments.tsv").write_text("\n".join(align) + "\n")
    (root / "speakers.tsv").write_text("\n".join(spk_lines) + "\n")
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A synthetic corpus and a 2-step micro training run (checkpoint + metrics.jsonl)."""
    from dinosr.train.trainer import Trainer
    from train_utils import micro_config

    base = tmp_path_factory.mktemp("eval")
    corpus = make_aligned_corpus(base / "corpus")
    cfg = micro_config(base / "run", corpus / "train.tsv", run={"max_steps": 2, "log_every": 1})
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    trainer.fit()
    trainer.close()
    return base, corpus, base / "run"


def _check_metrics(metrics: dict, *, feature_layers, unit_layers) -> None:
    assert set(metrics) >= {
        "units",
        "layers",
        "baselines",
        "summary",
        "data",
        "settings",
        "source",
        "timings",
    }
    assert sorted(metrics["units"], key=int) == [str(x) for x in unit_layers]
    assert sorted(metrics["layers"], key=int) == [str(x) for x in feature_layers]
    for q in [*metrics["units"].values(), metrics["baselines"]["mfcc_kmeans"]]:
        for key in ("phone_purity", "cluster_purity", "pnmi"):
            assert 0.0 <= q[key] <= 1.0, (key, q[key])
        assert 1 <= q["active_units"] <= q["num_units"]
        assert 1.0 <= q["unit_perplexity"] <= q["num_units"] + 1e-6
        assert q["bitrate"] > 0
    # Two evaluation speakers, each phone pair in shared contexts: every system has both ABX numbers,
    # so a silently failing ABX cannot pass as "no cells".
    for r in [*metrics["units"].values(), *metrics["layers"].values(), *metrics["baselines"].values()]:
        for key in ("abx_within", "abx_across"):
            assert r[key] is not None, (key, r)
            assert 0.0 <= r[key] <= 100.0, (key, r)
    assert "abx_null" not in metrics["data"]
    for r in [*metrics["layers"].values(), metrics["baselines"]["mfcc"]]:
        assert 0.0 <= r["probe_accuracy"] <= 100.0
        assert r["probe_per"] >= 0.0
    # Frequent tones are easy: MFCC k-means must carry real phone information here.
    assert metrics["baselines"]["mfcc_kmeans"]["pnmi"] > 0.2
    assert metrics["baselines"]["mfcc"]["abx_within"] < 40.0
    assert metrics["data"]["phones"] == PHONE_INVENTORY
    assert metrics["data"]["speakers"] == ["spkc", "spkd"]
    assert metrics["data"]["train_speakers"] == ["spka", "spkb"]


def _check_report(out: Path) -> None:
    html = (out / "report.html").read_text()
    refs = re.findall(r'src="([^"]+\.png)"', html)
    assert refs, "the report shows no figure"
    for ref in refs:
        assert not ref.startswith("/"), ref
        assert (out / ref).is_file(), ref
    pngs = {f"figures/{p.name}" for p in (out / "figures").glob("*.png")}
    assert pngs == set(refs)  # every figure drawn is shown, and nothing stale is left
    for p in (out / "figures").glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_run_directory(setup, capsys):
    _, corpus, run = setup
    out = run.parent / "report"
    code = main(
        [
            "evaluate",
            str(run),
            "--corpus",
            str(corpus),
            "--out",
            str(out),
            "--probe-epochs",
            "3",
            "--kmeans-layer",
            "1",
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    _check_metrics(metrics, feature_layers=[0, 1, 2], unit_layers=[1, 2])
    assert metrics["baselines"]["kmeans_layer1"]["layer"] == 1
    assert metrics["train_log"].endswith("metrics.jsonl")
    assert set(metrics["summary"]) >= {"model_units", "model_features", "mfcc_kmeans", "mfcc"}
    assert (out / "counts.npz").is_file()
    _check_report(out)
    assert (out / "figures" / "training.png").is_file()
    assert {"units_L1.png", "units_L2.png", "units_mfcc_kmeans.png", "units_kmeans_L1.png"} <= {
        p.name for p in (out / "figures").glob("*.png")
    }
    printed = capsys.readouterr().out
    assert "MFCC k-means units" in printed
    assert "report.html" in printed


def test_evaluate_extracted_features_directory(setup):
    from dinosr.data.manifest import read_manifest
    from dinosr.interop import load_model
    from dinosr.interop.extract import ExtractSettings, run_extraction

    _, corpus, run = setup
    ckpt, _ = resolve_model_path(run)
    model = load_model(ckpt)
    feats = run.parent / "feats"
    settings = ExtractSettings(layers=(1, 2), units_layer=2)
    for split in ("train", "valid"):
        run_extraction(
            model, read_manifest(corpus / f"{split}.tsv"), feats, settings, stem=split, progress=False
        )
    out = run.parent / "report_feats"
    code = main(
        [
            "evaluate",
            str(feats),
            "--corpus",
            str(corpus),
            "--out",
            str(out),
            "--codebook-size",
            "16",
            "--probe-epochs",
            "2",
            "--no-abx",
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["source"]["kind"] == "features"
    assert sorted(metrics["layers"]) == ["1", "2"]
    assert list(metrics["units"]) == ["2"]
    assert metrics["units"]["2"]["num_units"] == 16
    assert "abx_within" not in metrics["units"]["2"]
    _check_report(out)
    # Same units as evaluating the model directly (same checkpoint, same layer).
    direct = run.parent / "report_direct"
    assert (
        main(
            [
                "evaluate",
                str(ckpt),
                "--corpus",
                str(corpus),
                "--out",
                str(direct),
                "--no-abx",
                "--no-probe",
                "--no-baselines",
                "--unit-layers",
                "2",
                "--layers",
                "1",
            ]
        )
        == 0
    )
    again = json.loads((direct / "metrics.json").read_text())
    assert again["units"]["2"]["pnmi"] == pytest.approx(metrics["units"]["2"]["pnmi"], abs=1e-9)


def test_one_pass_codebook_units_match_model_units(setup):
    from dinosr.interop import load_model

    _, corpus, run = setup
    model = load_model(resolve_model_path(run)[0])
    data = load_eval_corpus(corpus / "valid.tsv", corpus / "alignments.tsv", corpus / "speakers.tsv")
    got = ModelSource(model, batch_seconds=3.0).units(data.wavs, [1, 2])
    for layer in (1, 2):
        for wav, units in zip(data.wavs, got[layer]):
            ref = dinosr.units(model, torch.from_numpy(wav), layer=layer, source="codebook").units[0].numpy()
            np.testing.assert_array_equal(units, ref)


def test_speaker_balanced_subset_keeps_every_speaker():
    names = [f"s{k}-{i}" for k in range(3) for i in range(10)]
    picked = pick_balanced(names, [2.0] * 30, {}, 12.0, seed=0)
    assert len(picked) == 6
    assert {names[i].split("-")[0] for i in picked} == {"s0", "s1", "s2"}
    assert pick_balanced(names, [2.0] * 30, {}, None, seed=0) == list(range(30))


def test_evaluate_requires_a_corpus(tmp_path, setup):
    _, _, run = setup
    assert main(["evaluate", str(run), "--out", str(tmp_path / "x")]) == 2


def test_settings_defaults_are_json():
    json.dumps(EvalSettings().__dict__)


def test_demo_falls_back_to_bundled_corpus(tmp_path, monkeypatch):
    import dinosr.data.corpus.synth as synth
    from dinosr.data.corpus import bundled_corpus
    from dinosr.demo import corpus_complete, prepare_corpus

    monkeypatch.setattr(synth, "available_voices", lambda: [])
    root, how = prepare_corpus(tmp_path)
    assert (root, how) == (Path(bundled_corpus()), "bundled")
    assert corpus_complete(Path(bundled_corpus()))
    assert not corpus_complete(tmp_path)


def test_demo_config_reads_the_packaged_recipe(tmp_path):
    from dinosr.configs import load_preset
    from dinosr.data.corpus import bundled_corpus
    from dinosr.demo import demo_config

    cfg = demo_config(Path(bundled_corpus()), tmp_path, minutes=1.5, overrides=["run.max_steps=7"])
    recipe = load_preset("tiny")
    assert cfg.model == recipe.model
    assert cfg.optim == recipe.optim
    assert cfg.masking == recipe.masking
    assert cfg.run.max_minutes == 1.5
    assert cfg.run.max_steps == 7
    assert cfg.data.manifest.endswith("train.tsv")
    assert Path(cfg.run.workdir) == (tmp_path / "train").resolve()


def test_demo_smoke_and_resume(tmp_path, capsys):
    """`dinosr demo --bundled` with a 2-step budget, run twice: the second run resumes, not restarts."""
    args = [
        "demo",
        "--bundled",
        "--workdir",
        str(tmp_path),
        "--minutes",
        "0.5",
        "--eval-seconds",
        "25",
        "--set",
        "run.max_steps=2",
        "--set",
        "run.progress=false",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    heldout = json.loads((tmp_path / "eval" / "metrics.json").read_text())["data"]["heldout"]
    assert heldout["train_voices"]  # the training speakers were known and checked
    from dinosr.evaluate.summary import heldout_lines

    assert heldout_lines(heldout)[0] in printed  # the table says what the held-out set is
    assert "DinoSR codebook units" in printed
    assert "MFCC k-means units" in printed
    assert "probe acc %" in printed
    assert "report.html" in printed
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["train_steps"] == 2
    _check_report(tmp_path / "eval")
    ckpts = sorted((tmp_path / "train" / "checkpoints").glob("*.pt"))
    assert [p.name for p in ckpts] == ["checkpoint_00000002.pt"]
    mtime = ckpts[0].stat().st_mtime_ns
    assert main(args) == 0  # resumes: training is already done, evaluation is recomputed
    assert ckpts[0].stat().st_mtime_ns == mtime


# ------------------------------------------------------------------ held-out sets that cannot flatter us
QUICK = ["--no-abx", "--no-baselines", "--probe-epochs", "1", "--unit-layers", "2", "--layers", "1"]


def test_training_set_with_its_own_alignments(setup, tmp_path, capsys):
    """An evaluation corpus with a training set from another corpus, each with its own alignment file."""
    _, corpus, run = setup
    other = make_aligned_corpus(tmp_path / "other", utts_per_speaker=2, prefix="trn")
    args = ["evaluate", str(run), "--corpus", str(corpus), "--train-manifest", str(other / "train.tsv")]
    # The evaluation corpus's alignments do not cover the other corpus: a one-line error, no traceback.
    assert main([*args, "--out", str(tmp_path / "bad"), *QUICK]) == 2
    assert "--train-alignments" in capsys.readouterr().err
    out = tmp_path / "ok"
    extra = [
        "--train-alignments",
        str(other / "alignments.tsv"),
        "--train-speakers",
        str(other / "speakers.tsv"),
    ]
    assert main([*args, *extra, "--out", str(out), *QUICK]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["speakers"] == ["spkc", "spkd"]
    assert metrics["data"]["train_speakers"] == ["trna", "trnb"]
    assert 0.0 <= metrics["layers"]["1"]["probe_accuracy"] <= 100.0
    # --train-corpus takes the other corpus's train split with its own alignments and speakers
    out2 = tmp_path / "ok2"
    cmd = ["evaluate", str(run), "--corpus", str(corpus), "--train-corpus", str(other), "--out", str(out2)]
    assert main([*cmd, *QUICK]) == 0
    again = json.loads((out2 / "metrics.json").read_text())
    assert again["layers"]["1"]["probe_accuracy"] == metrics["layers"]["1"]["probe_accuracy"]


def test_heldout_voice_shared_with_training_is_flagged(setup, tmp_path, capsys):
    import shutil

    _, corpus, run = setup
    root = shutil.copytree(corpus, tmp_path / "corpus")
    out = tmp_path / "plain"
    assert main(["evaluate", str(run), "--corpus", str(root), "--out", str(out), *QUICK]) == 0
    printed = capsys.readouterr().out
    assert "Held-out speakers spkc, spkd (unseen in training; no voice metadata" in printed
    assert "WARNING" not in printed
    # spkc is a pseudo-speaker of spka's voice; spkd is its own voice "v2"
    (root / "voices.tsv").write_text(
        "speaker\tbase_voice\ttransform\n"
        "spka\tv1\tnone\nspkb\tv3\tnone\nspkc\tv1\tresample f0=1.1\nspkd\tv2\tnone\n"
    )
    out = tmp_path / "shared"
    assert main(["evaluate", str(run), "--corpus", str(root), "--out", str(out), *QUICK]) == 0
    printed = capsys.readouterr().out
    assert "Held-out voice v2 (unseen in training): speakers spkd" in printed
    assert "WARNING: evaluation speakers spkc share the base voice v1 with training speakers spka" in printed
    heldout = json.loads((out / "metrics.json").read_text())["data"]["heldout"]
    assert heldout["shared_voices"] == {"v1": {"eval": ["spkc"], "train": ["spka"]}}
    assert heldout["eval_voices"] == {"v1": ["spkc"], "v2": ["spkd"]}
    assert "WARNING: evaluation speakers spkc share" in (out / "report.html").read_text()


def test_heldout_lines():
    from dinosr.evaluate.corpus import heldout_split
    from dinosr.evaluate.summary import heldout_lines

    voices = {"kala": "kal", "kalc": "kal", "slta": "slt", "sltb": "slt"}
    assert heldout_lines(heldout_split(["slta", "sltb"], ["kala"], voices)) == [
        "Held-out voice slt (unseen in training): speakers slta, sltb"
    ]
    lines = heldout_lines(heldout_split(["kalc", "slta"], ["kala", "slta"], voices))
    assert lines[0].startswith("WARNING: evaluation speakers slta are also training speakers")
    assert lines[1].startswith("WARNING: evaluation speakers kalc share the base voice kal")
    assert len(lines) == 2
    assert heldout_lines(heldout_split(["a"], None, {})) == [
        "Evaluation speakers a (training speakers unknown: unseen voices not checked)"
    ]


def test_skip_bad_files(setup, tmp_path, capsys):
    import shutil

    _, corpus, run = setup
    root = shutil.copytree(corpus, tmp_path / "corpus")
    bad = root / "audio" / "spkc" / "spkc-001.wav"
    bad.write_bytes(bad.read_bytes()[:60])  # a header without its samples
    args = ["evaluate", str(run), "--corpus", str(root), *QUICK]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "spkc-001.wav" in capsys.readouterr().err
    out = tmp_path / "b"
    assert main([*args, "--out", str(out), "--skip-bad-files"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["skipped_files"] == {"eval": ["spkc-001"], "train": []}
    assert metrics["data"]["num_utterances"] == 5


def test_abx_only_no_cells_becomes_null(setup):
    """One evaluation speaker: ABX across is null (recorded why); a wrong input still raises."""
    from dinosr.evaluate.corpus import EvalCorpus
    from dinosr.evaluate.evaluate import AbxScorer, EvalSettings, _Timer

    _, corpus, _ = setup
    full = load_eval_corpus(corpus / "valid.tsv", corpus / "alignments.tsv", corpus / "speakers.tsv")
    keep = [i for i, n in enumerate(full.names) if full.speakers[n] == "spkc"]
    one = EvalCorpus(
        [full.names[i] for i in keep],
        [full.wavs[i] for i in keep],
        full.segments,
        [full.labels[i] for i in keep],
        full.speakers,
    )
    scorer = AbxScorer(one, EvalSettings(), _Timer())
    feats = [np.random.default_rng(0).standard_normal((len(y), 4)) for y in one.labels]
    res = scorer(feats, "angular")
    assert 0.0 <= res["abx_within"] <= 100.0
    assert res["abx_across"] != res["abx_across"]  # NaN -> null in metrics.json
    assert "across" in scorer.null_reasons
    assert "within" not in scorer.null_reasons
    with pytest.raises(ValueError, match="unit distance"):
        scorer(feats, "unit")  # float features scored as units: a bug to see, not a null
