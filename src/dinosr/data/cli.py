"""`dinosr manifest`: fairseq ``train.tsv`` / ``valid.tsv`` for a directory of audio (fairseq flags)."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``manifest`` subcommand."""
    p = subparsers.add_parser(
        "manifest",
        help="write fairseq train.tsv/valid.tsv for a directory of audio",
        description="Scan ROOT recursively and write fairseq manifests (first line = root, then "
        "relative/path<TAB>num_samples), split at random like fairseq's wav2vec_manifest.py.",
    )
    p.add_argument("root", metavar="ROOT", help="root directory of the audio files")
    p.add_argument("--dest", default=".", help="output directory for train.tsv / valid.tsv")
    p.add_argument("--ext", default="flac", help="extension(s) to look for, comma-separated (e.g. wav,flac)")
    p.add_argument("--valid-percent", type=float, default=0.01, help="fraction of files for valid.tsv (0..1)")
    p.add_argument("--seed", type=int, default=42, help="seed of the random split")
    p.add_argument("--path-must-contain", default="", help="keep only files whose path contains this string")
    p.add_argument("--workers", type=int, default=8, help="threads reading file headers")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the manifests; unreadable files are reported and skipped. Returns 0 (1 if no file was found)."""
    from dinosr.data.manifest import scan_directory

    extensions = [e.strip() for e in args.ext.split(",") if e.strip()]
    result = scan_directory(
        args.root,
        args.dest,
        extensions=extensions,
        valid_percent=args.valid_percent,
        seed=args.seed,
        must_contain=args.path_must_contain,
        workers=args.workers,
    )
    log.info("wrote %d train and %d valid files to %s", result.num_train, result.num_valid, args.dest)
    if result.bad_files:
        log.warning("%d unreadable file(s) skipped:", len(result.bad_files))
        for path, reason in result.bad_files:
            log.warning("  %s: %s", path, reason)
    if result.num_train + result.num_valid == 0:
        log.error("no readable *.%s files under %s", args.ext, args.root)
        return 1
    return 0
