"""Every subcommand module is wired into `dinosr`, and every command's ``--help`` works.

A registration line in ``dinosr.cli.SUBCOMMAND_MODULES`` has been lost once already (``dinosr wer`` /
``dinosr transcribe`` vanished from a clean checkout): these tests find the subcommand modules from the
source tree, so a new or dropped one fails here instead of silently missing from the command line.
"""

from __future__ import annotations

import argparse
import ast
import importlib
from pathlib import Path

import pytest

import dinosr
from dinosr import cli

PACKAGE_DIR = Path(dinosr.__file__).parent


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands of ``parser`` (name -> parser), empty for a leaf command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    """Every command path, nested ones included (``("corpus", "synth")``) -> its parser."""
    found = {}
    for name, sub in _subparsers(parser).items():
        found[(*prefix, name)] = sub
        found.update(_commands(sub, (*prefix, name)))
    return found


def _modules_defining_add_parser() -> set[str]:
    """Modules under src/dinosr with a module-level ``def add_parser`` (the subcommand-module pattern)."""
    found = set()
    for path in PACKAGE_DIR.rglob("*.py"):
        if path == PACKAGE_DIR / "cli.py":
            continue  # the top-level parser itself
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        if any(isinstance(node, ast.FunctionDef) and node.name == "add_parser" for node in tree.body):
            parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
            found.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


COMMANDS = sorted(_commands(cli.build_parser()))


def test_the_commands_are_found():
    # The walk itself works (an empty list would make the parametrized --help test vacuous).
    top = {path[0] for path in COMMANDS}
    assert {"pretrain", "finetune", "extract", "evaluate"} <= top
    assert ("corpus", "synth") in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_exits_zero(command, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([*command, "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: dinosr {' '.join(command)}")


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_leaf_command_runs_something(command):
    # A command without sub-actions must set func, else `dinosr CMD` would only print the help.
    parser = _commands(cli.build_parser())[command]
    if not _subparsers(parser):
        assert callable(parser.get_default("func")), f"dinosr {' '.join(command)} sets no func"


def test_every_subcommand_module_is_registered():
    assert _modules_defining_add_parser() == set(cli.SUBCOMMAND_MODULES)


@pytest.mark.parametrize("module", sorted(_modules_defining_add_parser()))
def test_each_module_reaches_the_top_level_parser(module):
    # Listed is not enough: what the module's add_parser adds must be what `dinosr` offers.
    scratch = argparse.ArgumentParser(prog="dinosr").add_subparsers()
    importlib.import_module(module).add_parser(scratch)
    added = set(scratch.choices)
    assert added, f"{module}.add_parser adds no command"
    top = _subparsers(cli.build_parser())
    assert added <= set(top), f"{module}: {sorted(added - set(top))} missing from `dinosr`"
