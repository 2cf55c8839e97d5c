"""The one validation helper of the config dataclasses (model, masking, data, optim, run).

It raises a plain ``ValueError``: the TOML loader (``dinosr.config.from_plain``) turns it into a
``ConfigError`` prefixed with the file and section, so the message here only names the key and the rule.
Imports nothing of dinosr, so every config module can use it.
"""

from __future__ import annotations


def check(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition``."""
    if not condition:
        raise ValueError(message)
