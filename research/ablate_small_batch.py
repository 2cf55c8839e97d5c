"""Small-batch ablation of DinoSR (issue 6): train the tiny preset for a fixed wall time, then score the
teacher's codebook units on held-out speakers.

    python research/ablate_small_batch.py run NAME --corpus /tmp/demo_corpus --minutes 5 --set model.x=y ...
    python research/ablate_small_batch.py mfcc --corpus /tmp/demo_corpus      # MFCC + k-means baseline
    python research/ablate_small_batch.py table runs/ablate                   # markdown rows of all results

A run writes ``runs/ablate/NAME/result.json`` (final numbers) and ``metrics.jsonl`` (the trainer's log, with
per-step loss, target perplexity and active codewords when ``--log-every 1``) plus ``evals.jsonl`` (held-out
PNMI of every codebook every ``--eval-every`` seconds of training). Evaluation time is not training time:
the wall budget counts only the optimizer steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dinosr.config import load_config
from dinosr.data.alignments import load_frame_labels
from dinosr.data.audio import load_audio
from dinosr.data.manifest import read_manifest
from dinosr.evaluate.baselines import mfcc_features
from dinosr.evaluate.metrics import labels_to_ids, unit_quality
from dinosr.model.dinosr import instance_norm_frames

REPO = Path(__file__).resolve().parents[1]


def load_split(
    corpus: Path, split: str, every: int = 1
) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Standardised waveforms and per-20ms phone ids of every ``every``-th utterance of one split.

    Utterances without an alignment are dropped. ``every`` > 1 keeps evaluation affordable on 2 busy cores;
    the MFCC baseline and every run use the same subset.
    """
    labels = load_frame_labels(corpus / "alignments.tsv")
    wavs, phones = [], []
    for entry in read_manifest(corpus / f"{split}.tsv")[::every]:
        if entry.name in labels:
            wavs.append(load_audio(entry.path))
            phones.append(labels[entry.name])
    ids, inventory = labels_to_ids(phones)
    return wavs, ids, inventory


@torch.no_grad()
def teacher_units(model, wavs: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Per codebook, per utterance: nearest-codeword units of the instance-normalised teacher FFN outputs."""
    was_training = model.training
    model.eval()
    cfg = model.cfg
    first = cfg.num_layers - cfg.num_codebook_layers
    units: list[list[np.ndarray]] = [[] for _ in range(cfg.num_codebook_layers)]
    for wav in wavs:
        x, _ = model.features(torch.from_numpy(wav)[None])
        out = model.teacher(x, None)
        targets = torch.stack([instance_norm_frames(f)[0] for f in out.ffn[first:]])  # (K, T, D)
        codes = model.codebooks.assign(targets)
        for k in range(len(units)):
            units[k].append(codes[k].numpy())
    model.train(was_training)
    return units


def score(units: list[np.ndarray], labels: list[np.ndarray], num_units: int, num_phones: int) -> dict:
    q = unit_quality(units, labels, num_units=num_units, num_phones=num_phones, max_mismatch=3)
    return {
        "pnmi": q["pnmi"],
        "phone_purity": q["phone_purity"],
        "active": q["active_units"],
        "perplexity": q["unit_perplexity"],
    }


@torch.no_grad()
def teacher_features(model, wavs: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Per codebook layer, per utterance: (T, D) instance-normalised teacher FFN outputs (the targets)."""
    model.eval()
    first = model.cfg.num_layers - model.cfg.num_codebook_layers
    feats: list[list[np.ndarray]] = [[] for _ in range(model.cfg.num_codebook_layers)]
    for wav in wavs:
        x, _ = model.features(torch.from_numpy(wav)[None])
        out = model.teacher(x, None)
        for k, f in enumerate(out.ffn[first:]):
            feats[k].append(instance_norm_frames(f)[0].numpy())
    return feats


def kmeans_probe(model, corpus: Path, wavs, labels, num_phones, every: int = 4) -> list[dict]:
    """k-means (V clusters) on the teacher targets of every ``every``-th training utterance, scored on
    held-out speech: separates the representation's quality from the online codebook's."""
    from sklearn.cluster import MiniBatchKMeans

    train = [load_audio(e.path) for e in read_manifest(corpus / "train.tsv")[::every]]
    v = model.cfg.codebook_size
    results = []
    for fit_feats, eval_feats in zip(teacher_features(model, train), teacher_features(model, wavs)):
        km = MiniBatchKMeans(v, random_state=0, batch_size=4096, n_init=1).fit(np.concatenate(fit_feats))
        results.append(score([km.predict(f) for f in eval_feats], labels, v, num_phones))
    return results


def evaluate(model, wavs, labels, num_phones) -> list[dict]:
    return [score(u, labels, model.cfg.codebook_size, num_phones) for u in teacher_units(model, wavs)]


def cmd_run(args: argparse.Namespace) -> int:
    from dinosr.train.trainer import Trainer

    corpus = Path(args.corpus)
    out = Path(args.out) / args.name
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        print(f"{out} exists (use --overwrite)", file=sys.stderr)
        return 1
    overrides = [
        f"data.manifest={corpus / 'train.tsv'}",
        f"run.workdir={out}",
        "run.progress=false",
        f"run.log_every={args.log_every}",
        "run.save_every=1000000",
        *args.set,
    ]
    cfg = load_config(args.config, overrides)
    if out.exists():
        for f in out.glob("*.jsonl"):
            f.unlink()
    trainer = Trainer(cfg)
    trainer.task.prepare(trainer.model, trainer.loader)  # anchor k-means (anchor_units > 0), before step 0
    model = trainer.model
    wavs, labels, inventory = load_split(corpus, "valid", args.valid_every)
    evals = (out / "evals.jsonl").open("a", buffering=1)

    def do_eval(train_s: float) -> list[dict]:
        started = time.perf_counter()
        res = evaluate(model, wavs, labels, len(inventory))
        row = {
            "step": trainer.step,
            "train_s": train_s,
            "codebooks": res,
            "eval_s": time.perf_counter() - started,
        }
        evals.write(json.dumps(row) + "\n")
        pnmi = " ".join(f"{r['pnmi']:.3f}/{r['active']}" for r in res)
        print(f"[eval] step {trainer.step} t={train_s:.0f}s pnmi/active {pnmi}", flush=True)
        return res

    do_eval(0.0)
    budget = 60.0 * args.minutes
    train_s, next_eval, audio = 0.0, args.eval_every, 0
    last = {}
    model.train()
    while train_s < budget and trainer.step < cfg.run.max_steps:
        started = time.perf_counter()
        batches = [trainer._next_batch() for _ in range(cfg.run.grad_accum)]
        result = trainer.train_step(batches)
        trainer._add_to_window(result)
        if result["updated"]:
            audio += result["audio_samples"]
            if trainer.step % cfg.run.log_every == 0:
                last = trainer.log()
        train_s += time.perf_counter() - started
        due_steps = (
            args.eval_every_steps > 0 and result["updated"] and trainer.step % args.eval_every_steps == 0
        )
        if (args.eval_every > 0 and train_s >= next_eval) or due_steps:
            do_eval(train_s)
            next_eval += args.eval_every if args.eval_every > 0 else 0
    if trainer._window_steps:
        last = trainer.log()
    final = do_eval(train_s)
    # Final loss over the last 10% of steps from the trainer's log (the last window alone is noisy).
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    tail = [r for r in records if "loss" in r][-max(1, len(records) // 10) :]
    result = {
        "name": args.name,
        "overrides": args.set,
        "steps": trainer.step,
        "train_s": train_s,
        "audio_s": audio / 16000,
        "audio_s_per_s": audio / 16000 / max(train_s, 1e-9),
        "final_loss": float(np.mean([r["loss"] for r in tail])),
        "final_target_ppl": last.get("target_ppl"),
        "codebooks": final,
        "pnmi_max": max(r["pnmi"] for r in final),
        "pnmi_mean": float(np.mean([r["pnmi"] for r in final])),
        "active_min": min(r["active"] for r in final),
    }
    if args.probe:
        result["kmeans_probe"] = kmeans_probe(model, corpus, wavs, labels, len(inventory))
        print("[probe] k-means on teacher targets:", [round(r["pnmi"], 3) for r in result["kmeans_probe"]])
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "codebooks"}), flush=True)
    trainer.close()
    return 0


def cmd_mfcc(args: argparse.Namespace) -> int:
    """MFCC k-means (256) fit on the training speech, scored on the held-out speakers."""
    from sklearn.cluster import MiniBatchKMeans

    corpus = Path(args.corpus)
    train = [load_audio(e.path) for e in read_manifest(corpus / "train.tsv")]
    feats = np.concatenate([mfcc_features(w) for w in train])
    mean, std = feats.mean(0), feats.std(0) + 1e-8
    km = MiniBatchKMeans(args.units, random_state=0, batch_size=4096, n_init=3).fit((feats - mean) / std)
    wavs, labels, inventory = load_split(corpus, "valid", args.valid_every)
    units = [km.predict((mfcc_features(w) - mean) / std) for w in wavs]
    res = score(units, labels, args.units, len(inventory))
    res["train_frames"] = len(feats)
    res["valid_utterances"] = len(wavs)
    out = Path(args.out) / "mfcc_kmeans.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res))
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    print("| run | steps | audio-s/s | final loss | PNMI per codebook | phone purity | active (of 256) |")
    print("|---|---|---|---|---|---|---|")
    for path in sorted(Path(args.dir).glob("*/result.json"), key=lambda p: p.stat().st_mtime):
        r = json.loads(path.read_text())
        cb = r["codebooks"]
        print(
            f"| {r['name']} | {r['steps']} | {r['audio_s_per_s']:.1f} | {r['final_loss']:.3f} | "
            + " / ".join(f"{c['pnmi']:.3f}" for c in cb)
            + " | "
            + " / ".join(f"{c['phone_purity']:.3f}" for c in cb)
            + " | "
            + " / ".join(str(c["active"]) for c in cb)
            + " |"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run")
    run.add_argument("name")
    run.add_argument("--corpus", default=str(REPO / "src/dinosr/assets/corpus"))
    run.add_argument("--config", default=str(REPO / "configs/tiny.toml"))
    run.add_argument("--out", default=str(REPO / "runs/ablate"))
    run.add_argument("--minutes", type=float, default=5.0, help="training wall time (evaluation excluded)")
    run.add_argument("--eval-every", type=float, default=0.0, help="seconds of training between evaluations")
    run.add_argument("--eval-every-steps", type=int, default=0, help="optimizer steps between evaluations")
    run.add_argument("--log-every", type=int, default=1)
    run.add_argument("--set", action="append", default=[], help="config override k=v (repeatable)")
    run.add_argument("--overwrite", action="store_true")
    run.add_argument("--probe", action="store_true", help="also score k-means on the teacher targets")
    mfcc = sub.add_parser("mfcc")
    mfcc.add_argument("--corpus", default=str(REPO / "src/dinosr/assets/corpus"))
    mfcc.add_argument("--out", default=str(REPO / "runs/ablate"))
    mfcc.add_argument("--units", type=int, default=256)
    for p in (run, mfcc):
        p.add_argument("--valid-every", type=int, default=3, help="score every n-th held-out utterance")
    table = sub.add_parser("table")
    table.add_argument("dir", nargs="?", default=str(REPO / "runs/ablate"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster on shared cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return {"run": cmd_run, "mfcc": cmd_mfcc, "table": cmd_table}[args.cmd](args)


if __name__ == "__main__":
    raise SystemExit(main())
