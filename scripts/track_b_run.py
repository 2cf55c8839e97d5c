"""Track B (issue 6): the ablation run of scripts/ablate_small_batch.py plus a representation diagnosis.

Trains the tiny preset exactly as ``ablate_small_batch.py run`` (same loop, same held-out codebook scoring),
then, with ``--diag``, fits MiniBatchKMeans(256) on the trained teacher's per-layer features of every
``--diag-train-every``-th training utterance and scores held-out PNMI of those k-means units, for
``ffn`` (instance-normalised FFN output, the tensor the codebooks cluster) and ``hidden`` (post-LN residual
stream; layer 0 = transformer input) of every layer. If k-means on the features beats the codebooks by a
lot, the codebooks are the limit; if not, the representation is.

    python scripts/track_b_run.py NAME --corpus /tmp/demo_corpus --out runs/ablate_b --minutes 4 \
        --diag --set model.target_assignment=sinkhorn ...

Writes ``OUT/NAME/result.json`` (as the ablation script, plus ``diag``) and ``evals.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ablate_small_batch as ab

from dinosr.config import load_config
from dinosr.model.dinosr import instance_norm_frames


@torch.no_grad()
def teacher_features(model, wavs) -> dict[str, list[np.ndarray]]:
    """{"ffn<l>" / "hidden<l>": per-utterance (T, D) teacher features}; ffn instance-normalised."""
    was = model.training
    model.eval()
    feats: dict[str, list[np.ndarray]] = {}
    for wav in wavs:
        x, _ = model.features(torch.from_numpy(wav)[None])
        out = model.teacher(x, None)
        feats.setdefault("hidden0", []).append(out.layer_input[0].numpy())
        for i, (h, f) in enumerate(zip(out.residuals, out.ffn), start=1):
            feats.setdefault(f"hidden{i}", []).append(h[0].numpy())
            feats.setdefault(f"ffn{i}", []).append(instance_norm_frames(f)[0].numpy())
    model.train(was)
    return feats


def diagnose(model, corpus: Path, wavs, labels, num_phones, train_every: int, keys=None) -> dict:
    from sklearn.cluster import MiniBatchKMeans

    train = [ab.load_audio(p) for _, p in ab.read_manifest(corpus / "train.tsv")[::train_every]]
    t0 = time.perf_counter()
    ftrain = teacher_features(model, train)
    fvalid = teacher_features(model, wavs)
    res = {"train_frames": int(sum(len(f) for f in ftrain["hidden0"]))}
    for key in keys or ftrain:
        x = np.concatenate(ftrain[key])
        mean, std = x.mean(0), x.std(0) + 1e-6  # standardise (as the MFCC baseline)
        km = MiniBatchKMeans(256, random_state=0, batch_size=4096, n_init=1, max_iter=50)
        km.fit((x - mean) / std)
        units = [km.predict((f - mean) / std) for f in fvalid[key]]
        r = ab.score(units, labels, 256, num_phones)
        res[key] = r
        print(f"[diag] {key}: pnmi {r['pnmi']:.3f} active {r['active']}", flush=True)
    res["diag_s"] = time.perf_counter() - t0
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name")
    p.add_argument("--corpus", default="/tmp/demo_corpus")
    p.add_argument("--config", default=str(ab.REPO / "configs/tiny.toml"))
    p.add_argument("--out", default=str(ab.REPO / "runs/ablate_b"))
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--eval-every-steps", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--valid-every", type=int, default=3)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--diag", action="store_true", help="k-means on every layer's teacher features")
    p.add_argument("--diag-keys", default="", help="comma list, e.g. hidden2,ffn2 (default: all)")
    p.add_argument("--diag-train-every", type=int, default=3)
    p.add_argument("--save", action="store_true", help="save the model state_dict to OUT/NAME/model.pt")
    args = p.parse_args()
    torch.set_num_threads(1)
    from dinosr.train.trainer import Trainer

    corpus = Path(args.corpus)
    out = Path(args.out) / args.name
    out.mkdir(parents=True, exist_ok=True)
    for f in out.glob("*.jsonl"):
        f.unlink()
    overrides = [
        f"data.manifest={corpus / 'train.tsv'}",
        f"run.workdir={out}",
        "run.progress=false",
        f"run.log_every={args.log_every}",
        "run.save_every=1000000",
        *args.set,
    ]
    cfg = load_config(args.config, overrides)
    trainer = Trainer(cfg)
    model = trainer.model
    wavs, labels, inventory = ab.load_split(corpus, "valid", args.valid_every)
    evals = (out / "evals.jsonl").open("a", buffering=1)

    def do_eval(train_s: float) -> list[dict]:
        res = ab.evaluate(model, wavs, labels, len(inventory))
        evals.write(json.dumps({"step": trainer.step, "train_s": train_s, "codebooks": res}) + "\n")
        pn = " ".join(f"{r['pnmi']:.3f}/{r['active']}" for r in res)
        print(f"[eval] step {trainer.step} t={train_s:.0f}s pnmi/active {pn}", flush=True)
        return res

    budget = 60.0 * args.minutes
    train_s, audio = 0.0, 0
    model.train()
    while train_s < budget and trainer.step < cfg.run.max_steps:
        started = time.perf_counter()
        batches = [trainer._next_batch() for _ in range(cfg.run.grad_accum)]
        result = trainer.train_step(batches)
        trainer.meter.add(result)
        if result["updated"]:
            audio += result["audio_samples"]
            if trainer.step % cfg.run.log_every == 0:
                trainer.log()
        train_s += time.perf_counter() - started
        if args.eval_every_steps > 0 and result["updated"] and trainer.step % args.eval_every_steps == 0:
            do_eval(train_s)
    if trainer.meter.steps:
        trainer.log()
    final = do_eval(train_s)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    tail = [r for r in records if "loss" in r][-max(1, len(records) // 10) :]
    result = {
        "name": args.name,
        "overrides": args.set,
        "steps": trainer.step,
        "train_s": train_s,
        "audio_s": audio / 16000,
        "audio_s_per_s": audio / 16000 / max(train_s, 1e-9),
        "final_loss": float(np.mean([r["loss"] for r in tail])) if tail else None,
        "codebooks": final,
        "pnmi_max": max(r["pnmi"] for r in final),
        "active_min": min(r["active"] for r in final),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "codebooks"}), flush=True)
    if args.save:
        torch.save(model.state_dict(), out / "model.pt")
    if args.diag:
        keys = [k for k in args.diag_keys.split(",") if k] or None
        result["diag"] = diagnose(model, corpus, wavs, labels, len(inventory), args.diag_train_every, keys)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    trainer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
