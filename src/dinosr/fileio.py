"""Atomic file writes with the permissions the umask asks for.

Outputs (checkpoints, extracted ``.npy`` files, ``model.safetensors``, index files) are written to a
temporary file in the target directory and renamed over the final name, so a crash or ``kill -9``
never leaves a half-written file under a final name. ``tempfile.mkstemp`` creates files with mode
0600 whatever the umask; the temporary file is chmod-ed to ``0o666 & ~umask`` before the rename, so a
shared group can read the outputs exactly as it could read a file made with ``open(path, "w")``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "file_mode", "temp_name_prefix"]


def _umask() -> int:
    # /proc/self/status reads the umask without changing it (os.umask can only set it, racing threads).
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: ``0o666 & ~umask``."""
    return 0o666 & ~_umask()


def temp_name_prefix(path: Path) -> str:
    """Temporary files of ``path`` are ``.<name>.<random>.tmp`` in the same directory."""
    return f".{path.name}."


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, binary: bool = True, fsync: bool = False) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on a clean exit it replaces ``path`` atomically.

    Args:
        binary: yield a binary file (else UTF-8 text).
        fsync: flush to disk before the rename (checkpoints: the rename must never point at lost data).
    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_name_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as err:  # e.g. a missing directory: name the file asked for, not the temporary name
        raise OSError(err.errno, err.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically: readers see the old file or the new one, never half."""
    with atomic_write(path, binary=False) as f:
        f.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically.

    For safetensors, ``atomic_write_bytes(path, safetensors.torch.save(...))``: ``save_file`` writes in place.
    """
    with atomic_write(path) as f:
        f.write(data)
