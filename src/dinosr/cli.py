"""The `dinosr` command line: argparse subcommands, each a thin wrapper around library code.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``; the parser's
``func`` default is called with the parsed arguments and returns an exit code. Logging is
configured here and nowhere else.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# (module, what it adds) — modules are imported lazily so `dinosr --help` stays fast and
# optional dependencies are only needed by the subcommand that uses them.
SUBCOMMAND_MODULES = [
    "dinosr.train.cli",  # pretrain
    "dinosr.data.cli",  # manifest
    "dinosr.data.corpus.cli",  # corpus synth | demo
    "dinosr.interop.cli",  # convert, export, extract
    "dinosr.evaluate.cli",  # evaluate, demo
    "dinosr.asr.cli",  # wer, transcribe
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dinosr", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and err.name.startswith("dinosr"):
                continue  # that part of the toolkit is not built yet
            raise
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
