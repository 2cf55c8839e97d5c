"""Word n-gram LM beam search on the AN4 dev speakers: how much a train-text LM adds to greedy decoding.

    python research/real_speech/an4_lm.py --lmplz /path/to/kenlm/build/bin/lmplz RUN [RUN ...]

For each fine-tuned RUN (a `dinosr finetune` work directory or model directory):
1. a word n-gram (default order 3) is estimated with KenLM's ``lmplz`` from the AN4 *training* transcripts
   only (``an4_train.wrd``; the dev speakers' text is never used), written as ARPA;
2. the dev logits are computed once; greedy decoding and `dinosr.asr.lm.BeamSearchDecoder` over a grid of
   (lm_weight, word_score) are scored with `dinosr.asr.scoring.score`;
3. so that the reported LM number is not tuned on the data it is scored on, the dev speakers are split
   into two halves (alternating in sorted order): the grid point chosen on one half is scored on the other,
   and the two halves' errors are pooled ("2-fold speaker CV"). The best grid point on all of dev is also
   printed, labelled as tuned on dev.

KenLM's ``lmplz`` is not on PyPI as a program: build it from the ``kenlm`` sdist (``cmake .. && make lmplz``,
needs Boost program_options/system/thread and zlib). Experiments only; nothing here is part of the package.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
from pathlib import Path

import torch

from dinosr.asr.decode import greedy_decode
from dinosr.asr.lm import BeamSearchDecoder, BeamSettings
from dinosr.asr.scoring import score
from dinosr.asr.transcribe import ctc_logits
from dinosr.data.audio import load_model_inputs
from dinosr.data.labels import Dictionary
from dinosr.data.manifest import read_manifest
from dinosr.fileio import atomic_write
from dinosr.interop.ctc_pretrained import load_ctc_model

LM_WEIGHTS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
WORD_SCORES = (-1.0, 0.0, 1.0, 2.0, 3.0)


def build_lm(lmplz: str, text: Path, order: int, out: Path) -> Path:
    """ARPA n-gram of ``text`` (one sentence per line); discount fallback: AN4's counts are tiny."""
    if not out.exists():
        with open(text, "rb") as src, atomic_write(out) as dst:
            subprocess.run([lmplz, "-o", str(order), "--discount_fallback"], stdin=src, stdout=dst,
                           stderr=subprocess.DEVNULL, check=True)  # fmt: skip
    return out


def dev_logits(run: str, manifest: Path) -> tuple[list[str], torch.Tensor, torch.Tensor, Dictionary]:
    """Utterance names, (N, T, V) logits and frame lengths of every dev utterance, one at a time."""
    model, dictionary = load_ctc_model(run)
    entries = read_manifest(manifest)
    wavs, names = load_model_inputs(entries, model.cfg.receptive_field)
    rows, lengths = [], []
    with torch.inference_mode():
        for wav in wavs:  # one at a time: no padding, as `dinosr transcribe` of one utterance
            logits, n = ctc_logits(model, [torch.as_tensor(wav)])
            rows.append(logits[0, : int(n[0])])
            lengths.append(int(n[0]))
    padded = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    return names, padded, torch.tensor(lengths), dictionary


def speaker_of(name: str) -> str:
    return name.split("-")[1]  # AN4 names: anNNN-SPEAKER-x


def rates(names, refs, hyps, subset=None):
    """WER/CER of ``hyps`` on the utterances of the speakers in ``subset`` (None = all)."""
    idx = [i for i, n in enumerate(names) if subset is None or speaker_of(n) in subset]
    return score([refs[i] for i in idx], [hyps[i] for i in idx])


def evaluate_run(run: str, args: argparse.Namespace, lm: Path, refs_by_name: dict[str, str]) -> str:
    names, logits, lengths, dictionary = dev_logits(run, args.data / "an4_dev.tsv")
    refs = [refs_by_name[n] for n in names]
    grid = list(itertools.product(LM_WEIGHTS, WORD_SCORES))
    hyps = {"greedy": greedy_decode(logits, lengths, dictionary)}
    for weight, word_score in grid:
        settings = BeamSettings(beam_size=args.beam_size, lm_weight=weight, word_score=word_score)
        hyps[(weight, word_score)] = BeamSearchDecoder(dictionary, lm, None, settings)(logits, lengths)
    speakers = sorted({speaker_of(n) for n in names})
    halves = [set(speakers[0::2]), set(speakers[1::2])]
    greedy = rates(names, refs, hyps["greedy"])
    best_dev = min(grid, key=lambda k: rates(names, refs, hyps[k]).wer)
    # 2-fold speaker CV: tune on one half, score the other; pool the errors of both scored halves
    chosen, err_w, n_w, err_c, n_c = [], 0, 0, 0, 0
    for tune, test in ((halves[0], halves[1]), (halves[1], halves[0])):
        key = min(grid, key=lambda k: rates(names, refs, hyps[k], tune).wer)
        r = rates(names, refs, hyps[key], test)
        chosen.append(key)
        err_w, n_w = err_w + r.words.errors, n_w + r.words.ref_length
        err_c, n_c = err_c + r.chars.errors, n_c + r.chars.ref_length
    tuned = rates(names, refs, hyps[best_dev])
    return (
        f"{run}: greedy WER {greedy.wer:.1f} CER {greedy.cer:.1f} | {args.order}-gram LM, 2-fold speaker CV "
        f"(chosen {chosen}): WER {100 * err_w / n_w:.1f} CER {100 * err_c / n_c:.1f} | "
        f"tuned on dev {best_dev}: WER {tuned.wer:.1f} CER {tuned.cer:.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--lmplz", required=True)
    parser.add_argument("--data", type=Path, default=Path("/work/exp/real"))
    parser.add_argument("--order", type=int, default=3)
    parser.add_argument("--beam-size", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("/work/exp/an4_lm"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    arpa = args.out / f"an4_train.{args.order}gram.arpa"
    lm = build_lm(args.lmplz, args.data / "an4_train.wrd", args.order, arpa)
    dev_names = [e.name for e in read_manifest(args.data / "an4_dev.tsv")]
    refs_by_name = dict(zip(dev_names, (args.data / "an4_dev.wrd").read_text().splitlines()))
    for run in args.runs:
        print(evaluate_run(run, args, lm, refs_by_name), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
