"""The `dinosr` command line: argparse subcommands, each a thin wrapper around library code.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``; the parser's
``func`` default is called with the parsed arguments and returns an exit code. Logging is
configured here and nowhere else.

Error boundary: a :class:`dinosr.errors.DinosrError` (bad input: a file, a config value, a busy work
directory) or an ``OSError`` about a named file is printed as one line, ``dinosr <command>: error:
<message>``, with exit status 2 (or the error's ``exit_status``: 1 for a diverged training); ``--debug``
(or ``DINOSR_DEBUG=1``) adds the traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

from dinosr.errors import DinosrError

# (module, what it adds) — modules are imported lazily so `dinosr --help` stays fast and
# optional dependencies are only needed by the subcommand that uses them.
SUBCOMMAND_MODULES = [
    "dinosr.train.cli",  # pretrain
    "dinosr.train.finetune_cli",  # finetune
    "dinosr.data.cli",  # manifest
    "dinosr.data.corpus.cli",  # corpus synth | demo
    "dinosr.interop.cli",  # convert, export, extract
    "dinosr.evaluate.cli",  # evaluate
    "dinosr.demo",  # demo
    "dinosr.asr.cli",  # wer, transcribe
    "dinosr.asr.labels_cli",  # labels
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dinosr", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of errors too (also: DINOSR_DEBUG=1)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        # No try/except: a subcommand module that fails to import is a bug to see, not a command to hide.
        importlib.import_module(name).add_parser(subparsers)
    return parser


def _one_line(text: str) -> str:
    return "; ".join(part.strip() for part in text.splitlines() if part.strip()) or "(no message)"


def _user_error(err: BaseException) -> str | None:
    """The one-line message for an error caused by the user's input, or None for a bug."""
    if isinstance(err, DinosrError):
        return _one_line(str(err))
    if isinstance(err, OSError) and err.filename is not None:  # a named file is missing, unreadable, ...
        where = f"{err.filename} -> {err.filename2}" if err.filename2 else str(err.filename)
        return _one_line(f"{where}: {err.strerror or err}")
    return None


def _debug_requested(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("DINOSR_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from dinosr.train.distributed import detect_environment

    level = logging.DEBUG if args.verbose else logging.INFO
    if not detect_environment().is_main:
        level = max(level, logging.WARNING)  # one rank of a torchrun/srun job talks; the others only warn
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (DinosrError, OSError) as err:
        message = _user_error(err)
        if message is None:
            raise
        if _debug_requested(args):
            traceback.print_exc()
        command = " ".join(filter(None, [args.command, getattr(args, "corpus_command", None)]))
        print(f"dinosr {command}: error: {message}", file=sys.stderr)
        return err.exit_status if isinstance(err, DinosrError) else 2
    except KeyboardInterrupt:
        print(f"dinosr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
