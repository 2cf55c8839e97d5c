"""Fine-tuning step throughput: our CTC model against Hugging Face ``Data2VecAudioForCTC`` on the same work.

    python benchmarks/finetune_step.py                              # tiny + base, fp32, CPU
    python benchmarks/finetune_step.py --presets base --precisions fp32,bf16 --threads 2

One step = forward of a padded batch, the CTC loss summed per utterance and averaged over utterances,
backward, gradient clipping, AdamW (fused where the device has the kernel, as the trainer does). Both sides
get the same weights (ours exported with ``dinosr.interop.hf_ctc``), the same audio and the same letter
targets, the front end frozen (fairseq / ``freeze_feature_encoder``), and no time/channel masking, dropout or
LayerDrop, so they do identical arithmetic (the loss is printed to show it). The two sides alternate
(A B A B, ``--rounds``) in one process so they see the same machine load; ``HF / ours`` is HF's median time
over ours (> 1 = we are faster). B utterances of S seconds, each with a random transcript of S * 12 letters
(equal lengths: HF's output for a padded row differs from the unpadded utterance's, so a padded batch would
not be the same arithmetic).
The log-mel models (``recipe``) have no HF counterpart (HF has no log-mel front end): ours only.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import string
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # benchmarks/ is not a package
    Col,
    OtherCpuShare,
    Table,
    add_batch_options,
    add_threads_option,
    add_timing_options,
    repeats_note,
    run_stamp,
    time_calls,
    warn_if_busy,
)

from dinosr.configs import load_preset
from dinosr.data.labels import Dictionary
from dinosr.model.config import ModelConfig, tiny_model_config
from dinosr.model.ctc import CTCConfig, DinoSRForCTC, ctc_loss_sum

PRESETS = {
    "tiny": tiny_model_config,
    "base": ModelConfig,
    "recipe": lambda: load_preset("tiny").model,  # configs/tiny.toml: log-mel front end
}
QUIET = CTCConfig(mask_prob=0.0, mask_channel_prob=0.0, layerdrop=0.0, dropout=0.0, activation_dropout=0.0)


def _models(preset: str) -> tuple[DinoSRForCTC, torch.nn.Module | None, Dictionary]:
    torch.manual_seed(0)
    dictionary = Dictionary([*string.ascii_uppercase, "'", "|"])
    ours = DinoSRForCTC(replace(PRESETS[preset](), layerdrop=0.0), len(dictionary), QUIET)
    if ours.cfg.frontend != "conv":
        return ours, None, dictionary
    from transformers import Data2VecAudioForCTC
    from transformers.utils import logging as hf_logging

    from dinosr.interop.hf_ctc import export_hf_ctc

    hf_logging.set_verbosity_error()  # the load report lists masked_spec_embed, unused without time masking
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        export_hf_ctc(ours, dictionary, tmp)
        hf = Data2VecAudioForCTC.from_pretrained(
            tmp, mask_time_prob=0.0, layerdrop=0.0, ctc_loss_reduction="sum"
        )
    hf.freeze_feature_encoder()
    return ours, hf, dictionary


def _batch(args, dictionary: Dictionary) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    g = torch.Generator().manual_seed(0)
    samples = int(args.seconds * 16000)
    # Equal lengths: HF's Data2VecAudio gives a padded row other outputs than the same utterance alone
    # (ours does not, tests/test_ctc_model.py), so only unpadded batches are identical work on both sides.
    lengths = torch.full((args.batch,), samples)
    wav = torch.zeros(args.batch, samples)
    for row, n in zip(wav, lengths):
        row[:n] = torch.nn.functional.layer_norm(torch.randn(int(n), generator=g), (int(n),))
    symbols = list(range(dictionary.nspecial, len(dictionary)))
    targets = [
        [symbols[i] for i in torch.randint(len(symbols), (int(n / 16000 * 12),), generator=g)]
        for n in lengths
    ]
    return wav, lengths, targets


def _step_fn(model, kind: str, wav, lengths, targets, precision: str, blank: int):
    """``(step, losses)``: ``step()`` makes one optimizer step and appends its loss to ``losses``."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=True)
    model.train()
    if kind == "hf":
        attention = (torch.arange(wav.shape[1])[None] < lengths[:, None]).long()
        labels = torch.full((len(targets), max(map(len, targets))), -100)
        for row, t in zip(labels, targets):
            row[: len(t)] = torch.tensor(t)

    losses: list[float] = []

    def step() -> None:
        autocast = (
            torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        )
        with autocast:
            if kind == "ours":
                out = model(wav, lengths)
                loss = ctc_loss_sum(out.logits, out.frame_lengths, targets, blank=blank) / len(targets)
            else:
                loss = model(wav, attention_mask=attention, labels=labels).loss / len(targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 10.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))

    return step, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,base", help="comma list of tiny, base, recipe (log-mel)")
    parser.add_argument("--precisions", default="fp32", help="comma list of fp32, bf16")
    add_batch_options(parser, per="step")
    rounds = "alternating ours / HF rounds"
    add_timing_options(parser, option="--steps", unit="steps", default=3, warmup=1, rounds=rounds)
    add_threads_option(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"{run_stamp('cpu', args.threads)}  B={args.batch} x {args.seconds:g} s, "
        f"{repeats_note(args.rounds, args.steps, 'steps', args.warmup)}"
    )
    columns = [Col("preset", 6, left=True), Col("prec", 5, left=True), Col("ms/step", 8)]
    columns += [Col("audio s/s", 9, ".2f"), Col("HF ms", 8), Col("HF / ours", 9, ".2f", suffix="x")]
    table = Table(columns, note="first loss ours / HF")
    for preset in args.presets.split(","):
        ours_model, hf_model, dictionary = _models(preset)
        wav, lengths, targets = _batch(args, dictionary)
        audio = float(lengths.sum()) / 16000
        for precision in args.precisions.split(","):
            sides = {"ours": _step_fn(ours_model, "ours", wav, lengths, targets, precision, dictionary.blank)}
            if hf_model is not None:
                sides["hf"] = _step_fn(hf_model, "hf", wav, lengths, targets, precision, dictionary.blank)
            times: dict[str, list[float]] = {k: [] for k in sides}
            with OtherCpuShare() as share:
                for _ in range(args.rounds):
                    for kind, (step, _) in sides.items():
                        got = time_calls(step, warmup=args.warmup, timed=args.steps)
                        times[kind].append(statistics.median(got))
            # the loss of the first step (the shared initial weights): equal work on both sides
            first = {kind: losses[0] for kind, (_, losses) in sides.items()}
            ms = 1000 * statistics.median(times["ours"])
            cells = [preset, precision, ms, audio / (ms / 1000)]
            note = f"{first['ours']:.2f}"
            if "hf" in times:
                hf_ms = 1000 * statistics.median(times["hf"])
                cells += [hf_ms, hf_ms / ms]
                note += f" / {first['hf']:.2f}"
            table.row(*cells, note=note)
            warn_if_busy(share.frac)


if __name__ == "__main__":
    main()
