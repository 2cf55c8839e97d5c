"""The package's import directions (docs/DESIGN.md "Layout"), lazy imports included, and no import circle.

Every module under src/dinosr is parsed with ``ast``; every ``import``/``from ... import`` anywhere in it
(module level, inside functions, under ``if TYPE_CHECKING``) counts, and so do the names a package
resolves lazily through a module-level ``_EXPORTS = {name: module}`` table (``dinosr/__init__.py``,
``dinosr/evaluate/__init__.py``) and literal ``importlib.import_module("dinosr....")`` calls.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "dinosr"

# Importable by every module; they import nothing of dinosr themselves (checked below).
BASE = ("dinosr.errors", "dinosr.configcheck", "dinosr.fileio")

# module or package prefix -> the prefixes it may import (besides itself and BASE). The rule of a module
# is that of its longest matching prefix. Adding a package is one line here.
ALLOWED: dict[str, tuple[str, ...]] = {
    "dinosr.errors": (),
    "dinosr.configcheck": (),
    "dinosr.fileio": (),
    "dinosr.model": (),  # the leaf: torch only
    "dinosr.data": (),
    "dinosr.config": ("dinosr.model.config", "dinosr.data.config", "dinosr.train.config"),
    "dinosr.configs": ("dinosr.config",),
    "dinosr.train": ("dinosr.model", "dinosr.data", "dinosr.config", "dinosr.configs"),
    # the fine-tuning task loads a pretrained model (interop) and scores WER (asr); the loop itself does not
    "dinosr.train.ctc_task": (
        "dinosr.train",
        "dinosr.model",
        "dinosr.data",
        "dinosr.config",
        "dinosr.interop",
        "dinosr.asr",
    ),
    "dinosr.inference": ("dinosr.model", "dinosr.data"),
    # interop reads our training checkpoints (train.checkpoint), configs and presets; never the trainer
    "dinosr.interop": (
        "dinosr.model",
        "dinosr.data",
        "dinosr.inference",
        "dinosr.config",
        "dinosr.configs",
        "dinosr.train.checkpoint",
    ),
    "dinosr.asr": ("dinosr.model", "dinosr.data", "dinosr.inference", "dinosr.interop"),
    "dinosr.evaluate": (
        "dinosr.model",
        "dinosr.data",
        "dinosr.inference",
        "dinosr.interop",
        "dinosr.config",
        "dinosr.train.checkpoint",
    ),
    # applications on top: may import anything
    "dinosr.demo": ("dinosr",),
    "dinosr.cli": ("dinosr",),
    "dinosr.__main__": ("dinosr",),
    # the public API (lazy names)
    "dinosr": ("dinosr.model", "dinosr.inference", "dinosr.interop"),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str:
    """The module an import name refers to: ``from pkg import sub`` names the module ``pkg.sub``."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(module: str) -> set[str]:
    """dinosr modules ``module`` imports anywhere in its source (resolved to existing modules)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets
        ):
            assert isinstance(node.value, ast.Dict), f"{module}: _EXPORTS must be a dict literal"
            for value in node.value.values:
                assert isinstance(value, ast.Constant), f"{module}: _EXPORTS values must be strings"
                target = value.value
                names.add(target if target.startswith("dinosr") else f"{package}.{target}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(node.args[0].value)
    return {_resolve(n) for n in names if n == "dinosr" or n.startswith("dinosr.")} - {module}


def _rule(module: str) -> str:
    # the key "dinosr" is the package __init__ only, not a catch-all
    matches = [p for p in ALLOWED if module == p or (p != "dinosr" and module.startswith(p + "."))]
    assert matches, f"{module} has no layering rule: add its package to ALLOWED in tests/test_layering.py"
    return max(matches, key=len)


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_every_module_has_a_rule_and_parses():
    assert {"dinosr.model.dinosr", "dinosr.inference"} <= set(MODULES)
    for module in MODULES:
        _rule(module)
        imports_of(module)


def test_import_directions():
    bad = []
    for module in MODULES:
        rule = _rule(module)
        allowed = (*((rule,) if rule != "dinosr" else ()), *BASE, *ALLOWED[rule])
        bad += [f"{module} -> {t}" for t in sorted(imports_of(module)) if not _within(t, allowed)]
    assert not bad, "imports against the layering (tests/test_layering.py ALLOWED):\n" + "\n".join(bad)


def test_base_modules_import_nothing_of_dinosr():
    for module in BASE:
        if module in MODULES:
            assert imports_of(module) == set(), module


def _graph() -> dict[str, set[str]]:
    """Module -> modules it imports, plus the package ``__init__``s Python runs on the way (``import
    a.b.c`` runs ``a`` and ``a.b``), except the importer's own enclosing packages (already running)."""
    graph = {}
    for module in MODULES:
        own_parents = {module.rsplit(".", i)[0] for i in range(1, module.count(".") + 1)}
        edges = set()
        for target in imports_of(module):
            parts = target.split(".")
            chain = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
            edges |= {m for m in chain if m in MODULES and m not in own_parents and m != module}
        graph[module] = edges
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_lazy_and_function_level_imports_are_seen(tmp_path, monkeypatch):
    """The parser sees imports inside functions and lazy _EXPORTS tables (what the old circle used)."""
    pkg = tmp_path / "dinosr"
    (pkg / "model").mkdir(parents=True)
    (pkg / "__init__.py").write_text('_EXPORTS = {"load_model": "dinosr.interop"}\n')
    (pkg / "model" / "__init__.py").write_text("")
    (pkg / "model" / "dinosr.py").write_text("def f():\n    from dinosr.interop import load_model\n")
    (pkg / "interop.py").write_text("")
    fake = {_module_name_in(tmp_path, p): p for p in pkg.rglob("*.py")}
    monkeypatch.setattr(sys.modules[__name__], "MODULES", fake)
    assert imports_of("dinosr.model.dinosr") == {"dinosr.interop"}
    assert imports_of("dinosr") == {"dinosr.interop"}


def _module_name_in(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_public_api():
    import dinosr
    import dinosr.inference
    import dinosr.interop.pretrained
    import dinosr.model.dinosr
    from dinosr import DinoSR, extract_features, load_model, units

    assert DinoSR is dinosr.model.dinosr.DinoSR
    assert extract_features is dinosr.inference.extract_features
    assert units is dinosr.inference.units
    assert load_model is dinosr.interop.pretrained.load_model
    assert set(dinosr.__all__) <= set(dir(dinosr))
    with pytest.raises(AttributeError):
        dinosr.no_such_name  # noqa: B018


def test_import_dinosr_is_light():
    code = "import sys, dinosr; print(sorted(m for m in sys.modules if m.startswith(('torch', 'dinosr.'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
