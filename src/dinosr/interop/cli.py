"""`dinosr convert`, `dinosr export`, `dinosr extract`: thin wrappers around dinosr.interop."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dinosr.model.dinosr import DinoSR

log = logging.getLogger(__name__)


def _parse_layers(text: str) -> tuple[int, ...]:
    """'6', '6,9', '0-12' or '1 5 9' (comma/space separated, ranges allowed) -> layer numbers."""
    layers: list[int] = []
    for part in text.replace(",", " ").split():
        if "-" in part:
            a, b = part.split("-", 1)
            layers.extend(range(int(a), int(b) + 1))
        else:
            layers.append(int(part))
    return tuple(dict.fromkeys(layers))


def _load(args: argparse.Namespace) -> DinoSR:
    from dinosr.interop.pretrained import load_model

    kwargs = {"head_placement": args.head_placement} if getattr(args, "head_placement", None) else {}
    return load_model(args.ckpt, num_heads=args.num_heads, **kwargs)


def _convert(args: argparse.Namespace) -> int:
    from dinosr.interop.pretrained import save_pretrained

    model = _load(args)
    save_pretrained(model, args.out)
    c = model.cfg
    log.info(
        "wrote %s: %d layers x %d, %d heads, qkv_bias=%s, %d codebooks x %d",
        args.out, c.num_layers, c.embed_dim, c.num_heads, c.qkv_bias, c.num_codebook_layers, c.codebook_size,
    )  # fmt: skip
    return 0


def _export(args: argparse.Namespace) -> int:
    from dinosr.interop.ctc_pretrained import is_ctc_source
    from dinosr.interop.hf import export_hf

    if is_ctc_source(args.ckpt):  # a fine-tuned model: Data2VecAudioForCTC + Wav2Vec2Processor
        from dinosr.interop.ctc_pretrained import load_ctc_model
        from dinosr.interop.hf_ctc import export_hf_ctc

        model, dictionary = load_ctc_model(args.ckpt)
        export_hf_ctc(model, dictionary, args.out)
        log.info("wrote a Data2VecAudioForCTC + Wav2Vec2Processor directory to %s", args.out)
        return 0
    export_hf(_load(args), args.out)
    log.info(
        "wrote a Data2VecAudioModel directory to %s (heads/codebooks/teacher in dinosr_extra.safetensors)",
        args.out,
    )
    return 0


def _extract(args: argparse.Namespace) -> int:
    from dinosr.interop.extract import ExtractSettings, entries_from_input, run_extraction

    if not args.layers and not args.units:
        raise SystemExit("nothing to extract: give --layers and/or --units")
    model = _load(args).to(args.device)
    settings = ExtractSettings(
        layers=_parse_layers(args.layers) if args.layers else (),
        kind=args.kind,
        units_layer=(args.layer or model.cfg.codebook_layers[0]) if args.units else None,
        source=args.source,
        dedup=args.dedup,
        teacher=args.teacher,
        chunk_seconds=None if args.chunk_seconds <= 0 else args.chunk_seconds,
        context_seconds=args.context_seconds,
    )
    entries, stem = entries_from_input(args.input)
    summary = run_extraction(
        model,
        entries,
        args.out,
        settings,
        stem=stem,
        batch_seconds=args.batch_seconds,
        skip_bad_files=args.skip_bad_files,
        progress=not args.no_progress,
    )
    log.info("extracted %d, skipped %d finished, %d bad", summary.done, summary.skipped, len(summary.bad))
    if summary.km_path is not None:
        log.info("units: %s, %s", summary.km_path, summary.jsonl_path)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "ckpt",
        metavar="CKPT",
        help="pretrained dir, our training checkpoint, official dinosr.ckpt or a spidr .pt",
    )
    p.add_argument("--num-heads", type=int, default=None, help="attention heads of an imported checkpoint")
    p.add_argument(
        "--head-placement",
        choices=["final", "intermediate"],
        default=None,
        help="spidr files only: final (DinoSR) or intermediate (SpidR) heads",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("convert", help="import a checkpoint into a save_pretrained directory")
    _common(p)
    p.add_argument("out", metavar="OUT", help="output directory (config.json + model.safetensors)")
    p.set_defaults(func=_convert)

    p = subparsers.add_parser(
        "export", help="export the student encoder (or a fine-tuned CTC model) to another toolkit's format"
    )
    p.add_argument(
        "--to",
        choices=["hf"],
        default="hf",
        help="hf: transformers Data2VecAudioModel directory (a CTC model: Data2VecAudioForCTC + processor)",
    )
    _common(p)
    p.add_argument("out", metavar="OUT", help="output directory")
    p.set_defaults(func=_export)

    p = subparsers.add_parser("extract", help="per-utterance features (.npy) and units (.km, JSONL)")
    _common(p)
    p.add_argument(
        "input", metavar="MANIFEST_OR_DIR", help="fairseq .tsv / .csv / .jsonl manifest or audio dir"
    )
    p.add_argument("out", metavar="OUT", help="output directory")
    p.add_argument("--layers", default="", help="feature layers, e.g. '6' or '0-12' (0 = transformer input)")
    p.add_argument(
        "--kind", choices=["hidden", "ffn"], default="hidden", help="hidden: post-LN; ffn: pre-residual"
    )
    p.add_argument(
        "--teacher", action="store_true", help="features of the EMA teacher instead of the student"
    )
    p.add_argument("--units", action="store_true", help="also write discrete units")
    p.add_argument("--layer", type=int, default=None, help="codebook layer of the units (default: first)")
    p.add_argument("--source", choices=["codebook", "head"], default="codebook", help="unit source")
    p.add_argument("--dedup", action="store_true", help="JSONL units de-duplicated, with durations")
    p.add_argument("--batch-seconds", type=float, default=100.0, help="padded audio per batch")
    p.add_argument("--chunk-seconds", type=float, default=20.0, help="chunk long files (<= 0: never)")
    p.add_argument("--context-seconds", type=float, default=2.0, help="context either side of a chunk")
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-bad-files", action="store_true", help="report unreadable audio and continue")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.set_defaults(func=_extract)
