"""The shipped config presets (``base``, ``tiny``), readable after ``pip install``.

The files here are identical copies of the repository's ``configs/*.toml`` (a test checks it);
edit ``configs/`` and copy.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from dinosr.config import Config, load_config

PRESETS = ("base", "tiny")


def preset_path(name: str) -> Path:
    """Path of the packaged ``<name>.toml``.

    Raises:
        ValueError: unknown preset name.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown config preset {name!r}; choose from {list(PRESETS)}")
    return Path(str(resources.files(__package__).joinpath(f"{name}.toml")))


def load_preset(name: str, overrides: list[str] | None = None) -> Config:
    """The packaged preset ``name`` with ``--set``-style overrides applied."""
    return load_config(preset_path(name), overrides)
