"""Transcription real-time factor: `dinosr transcribe` (greedy CTC) against transformers' ASR pipeline on the
same model (exported with dinosr.interop.hf_ctc) and the same audio.

    python benchmarks/transcribe_rtf.py                          # tiny preset, bundled corpus valid split
    python benchmarks/transcribe_rtf.py --presets tiny base --threads 2
    python benchmarks/transcribe_rtf.py --model RUN/model --manifest data/valid.tsv --device cuda

RTF = wall time / audio duration (lower is faster), audio decoding included on both sides (ours: the
batched, length-sorted run_transcription path, written to a TSV; HF: soundfile + pipeline, one utterance
per call unless --hf-batch-size). After a warm-up on the first utterances the two sides alternate, and the
best of --repeat runs of each is reported (the machine may be shared). Without
--model the CTC model has random weights (the cost does not depend on them) and a 30-letter dictionary.
The last columns are HF RTF / ours and the share of utterances where both wrote the same text.
"""

from __future__ import annotations

import argparse
import logging
import math
import string
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import soundfile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Col, Table, add_threads_option  # benchmarks/ is not a package

from dinosr.asr.transcribe import run_transcription
from dinosr.asr.transcripts import read_transcripts
from dinosr.data.corpus import bundled_corpus
from dinosr.data.labels import Dictionary
from dinosr.data.manifest import read_manifest
from dinosr.interop.ctc_pretrained import load_ctc_model
from dinosr.interop.hf_ctc import export_hf_ctc
from dinosr.model.config import ModelConfig, tiny_model_config
from dinosr.model.ctc import CTCConfig, DinoSRForCTC

PRESETS = {"tiny": tiny_model_config, "base": ModelConfig}


def _random_model(preset: str) -> tuple[DinoSRForCTC, Dictionary]:
    torch.manual_seed(0)
    dictionary = Dictionary([*string.ascii_uppercase, "'", "|"])
    cfg = replace(PRESETS[preset](), layerdrop=0.0)
    model = DinoSRForCTC(cfg, len(dictionary), CTCConfig()).eval()
    with torch.no_grad():  # like a trained model, never emit <pad> </s> <unk> (HF would print them)
        model.head.bias[1:4] = -1e4
    return model, dictionary


def _ours(model, dictionary, entries, out: Path, batch_seconds: float) -> float:
    out.unlink(missing_ok=True)  # a fresh run, not a resumed one
    summary = run_transcription(model, dictionary, entries, out, batch_seconds=batch_seconds, progress=False)
    return summary.real_time_factor


def _hf(asr, entries, batch_size: int, out: dict[str, str]) -> float:
    start = time.perf_counter()
    wavs = [soundfile.read(e.path, dtype="float32")[0] for e in entries]
    results = asr(wavs, batch_size=batch_size)
    elapsed = time.perf_counter() - start
    out.update({e.name: r["text"] for e, r in zip(entries, results)})
    return elapsed / (sum(len(w) for w in wavs) / 16000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", choices=sorted(PRESETS), default=["tiny"])
    parser.add_argument("--model", default=None, help="a fine-tuned model (instead of random presets)")
    parser.add_argument("--manifest", default=None, help="audio manifest (default: bundled valid split)")
    parser.add_argument("--limit", type=int, default=0, help="first N utterances only (0 = all)")
    parser.add_argument("--batch-seconds", type=float, default=20.0, help="ours: padded audio per batch")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per side (the best is reported)")
    parser.add_argument("--hf-batch-size", type=int, default=1, help="pipeline batch size")
    parser.add_argument("--device", default="cpu")
    add_threads_option(parser)
    args = parser.parse_args()
    from transformers import pipeline

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    entries = read_manifest(args.manifest or bundled_corpus() / "valid.tsv")
    entries = entries[: args.limit] if args.limit else entries
    seconds = sum(e.num_samples for e in entries) / 16000
    print(f"{len(entries)} utterances, {seconds:.1f} s of audio, device {args.device}, "
          f"{torch.get_num_threads()} threads, HF batch size {args.hf_batch_size}")  # fmt: skip
    table = Table([
        Col("model", 12, left=True),
        Col("ours RTF", 9, ".4f"),
        Col("HF RTF", 9, ".4f"),
        Col("HF/ours", 8, ".2f"),
        Col("same text", 10, ".0%"),
    ])
    models = (
        [("model", *load_ctc_model(args.model))]
        if args.model
        else [(p, *_random_model(p)) for p in args.presets]
    )
    for name, model, dictionary in models:
        model = model.to(args.device)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            export_hf_ctc(model, dictionary, tmp / "hf")
            asr = pipeline("automatic-speech-recognition", model=str(tmp / "hf"), device=args.device)
            # warm-up on the first utterances, then alternate the two sides; best of --repeat runs each
            _ours(model, dictionary, entries[:2], tmp / "warm.tsv", args.batch_seconds)
            _hf(asr, entries[:2], 1, {})
            ours_rtf, hf_rtf, theirs = math.inf, math.inf, {}
            for _ in range(args.repeat):
                ours_rtf = min(
                    ours_rtf, _ours(model, dictionary, entries, tmp / "ours.tsv", args.batch_seconds)
                )
                hf_rtf = min(hf_rtf, _hf(asr, entries, args.hf_batch_size, theirs))
            ours = read_transcripts(tmp / "ours.tsv")
        same = sum(ours[u] == theirs[u] for u in theirs) / len(theirs)
        table.row(name, ours_rtf, hf_rtf, hf_rtf / ours_rtf, same)


if __name__ == "__main__":
    main()
