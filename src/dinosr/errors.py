"""The exceptions the library raises for bad input: one base class, so the `dinosr` command has one boundary.

Every class here means "the user's file, config or environment is wrong", never "dinosr has a bug": the
command line prints ``dinosr <command>: error: <message>`` for them (exit status ``exit_status``, 2
unless the class says otherwise) instead of a traceback,
so each message must name the file (and line, key, ...) and the problem on its own. Library users
catch them like any exception; each also derives from the builtin it replaced (``ValueError``,
``RuntimeError``, ...), so code written against the older classes keeps working.

This module imports nothing from dinosr, so any module can raise these without an import circle.
"""

from __future__ import annotations

import os
import pickle

__all__ = [
    "AudioError",
    "CheckpointError",
    "ConfigError",
    "DinosrError",
    "ExtractionError",
    "LabelError",
    "LockError",
    "ManifestError",
    "UnsafeCheckpointError",
]


class DinosrError(Exception):
    """Base class of every user-facing error; ``str(err)`` is a complete one-line explanation."""

    # The `dinosr` command's exit status for this error; a subclass whose input was fine but whose run
    # failed (training diverged) overrides it, so scripts can tell "fix the input" from "change settings".
    exit_status: int = 2


class ConfigError(DinosrError, ValueError):
    """A configuration file or override is invalid; the message names the key."""


class ManifestError(DinosrError, ValueError):
    """A manifest file is unreadable or malformed; the message names the file and the line."""


class LabelError(DinosrError, ValueError):
    """A transcript, dictionary or alignment file is malformed; the message names the file and the line."""


class AudioError(DinosrError, RuntimeError):
    """An audio file cannot be used; ``str(err)`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem

    def __reduce__(self):
        # Pickled by DataLoader workers (and multiprocessing): rebuild from both arguments, not args[0].
        return (type(self), (self.path, self.problem))


class CheckpointError(DinosrError, ValueError):
    """A checkpoint or model file is missing, truncated, corrupt or does not fit; the message names it."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """The file references a global that could execute code; loading was refused."""


class ExtractionError(DinosrError, ValueError):
    """An extraction output directory is inconsistent with the requested run (``dinosr extract``)."""


class LockError(DinosrError, RuntimeError):
    """Another live process holds the work directory's lock; the message names the holder."""
