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
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OtherCpuShare, cpu_share_note  # benchmarks/ is not a package

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
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=True)
    model.train()
    if kind == "hf":
        attention = (torch.arange(wav.shape[1])[None] < lengths[:, None]).long()
        labels = torch.full((len(targets), max(map(len, targets))), -100)
        for row, t in zip(labels, targets):
            row[: len(t)] = torch.tensor(t)

    def step() -> float:
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
        return float(loss.detach())

    return step


def _time(step, warmup: int, steps: int) -> tuple[list[float], float]:
    """Step times after ``warmup`` untimed steps, and the loss of the first step."""
    losses, times = [], []
    for i in range(warmup + steps):
        start = time.perf_counter()
        losses.append(step())
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times, losses[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,base", help="comma list of tiny, base, recipe (log-mel)")
    parser.add_argument("--precisions", default="fp32", help="comma list of fp32, bf16")
    parser.add_argument("--batch", type=int, default=4, help="utterances per step")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per utterance")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="alternating ours / HF rounds")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}  cpu threads={args.threads} torch {torch.__version__}  "
        f"B={args.batch} x {args.seconds:g} s, median of {args.rounds} rounds x {args.steps} steps"
    )
    header = f"{'preset':<7}{'prec':<6}{'ms/step':>9}{'audio s/s':>10}{'HF ms':>9}{'HF / ours':>10}"
    print(header + "  first loss ours / HF")
    for preset in args.presets.split(","):
        ours_model, hf_model, dictionary = _models(preset)
        wav, lengths, targets = _batch(args, dictionary)
        audio = float(lengths.sum()) / 16000
        for precision in args.precisions.split(","):
            sides = {"ours": _step_fn(ours_model, "ours", wav, lengths, targets, precision, dictionary.blank)}
            if hf_model is not None:
                sides["hf"] = _step_fn(hf_model, "hf", wav, lengths, targets, precision, dictionary.blank)
            times: dict[str, list[float]] = {k: [] for k in sides}
            losses: dict[str, float] = {}
            with OtherCpuShare() as share:
                for r in range(args.rounds):
                    for kind, step in sides.items():
                        got, first_loss = _time(step, args.warmup, args.steps)
                        times[kind].append(statistics.median(got))
                        if r == 0:  # the loss of the shared initial weights: equal work on both sides
                            losses[kind] = first_loss
            ms = 1000 * statistics.median(times["ours"])
            line = f"{preset:<7}{precision:<6}{ms:>9.0f}{audio / (ms / 1000):>10.2f}"
            if "hf" in times:
                hf_ms = 1000 * statistics.median(times["hf"])
                line += f"{hf_ms:>9.0f}{hf_ms / ms:>9.2f}x  {losses['ours']:.2f} / {losses['hf']:.2f}"
            else:
                line += f"{'-':>9}{'-':>10}  {losses['ours']:.2f}"
            print(line, flush=True)
            if share.frac > 0.05:
                print("  " + cpu_share_note(share.frac))


if __name__ == "__main__":
    main()
