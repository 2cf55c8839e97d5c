"""One run per work directory: ``run.workdir/run.lock`` names the process that holds it.

Two runs writing one work directory (started twice by mistake, or a second run with other settings)
would interleave ``metrics.jsonl`` rows and overwrite each other's checkpoints and ``config.json``.
The lock file is created atomically (written under a temporary name, then hard-linked to its final
name, which fails if it exists), holds ``{"pid", "host", "started", "command"}`` and is removed when
the run ends. A lock left by a killed run is *stale* when its host is this machine and its PID is no
longer alive; it is then replaced with a warning. A lock from another host cannot be checked from here:
the error says which file to delete if that run is gone.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dinosr.errors import LockError

log = logging.getLogger(__name__)

LOCK_NAME = "run.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """The lock of one work directory; use as a context manager or call acquire()/release()."""

    def __init__(self, workdir: str | os.PathLike) -> None:
        self.path = Path(workdir) / LOCK_NAME
        self.held = False

    def _holder(self) -> dict[str, Any] | None:
        """The holder's record, or None when the file vanished meanwhile."""
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            return record
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError, OSError) as err:
            raise LockError(
                f"{self.path}: unreadable run lock ({err}); if no run uses {self.path.parent}, delete it"
            ) from None

    def _is_stale(self, holder: dict[str, Any]) -> bool:
        return holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", -1)))

    def _busy_message(self, holder: dict[str, Any]) -> str:
        return (
            f"{self.path.parent} is in use by another run (pid {holder.get('pid')} on {holder.get('host')}, "
            f"started {holder.get('started')}: {holder.get('command')}); wait for it or set another "
            f"run.workdir (if that run is gone, delete {self.path})"
        )

    def acquire(self) -> None:
        """Take the lock or raise LockError naming the live holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        fd, tmp = tempfile.mkstemp(prefix=f".{LOCK_NAME}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f)
            for _ in range(3):  # a stale lock is removed once; a racing run may take it first
                try:
                    os.link(tmp, self.path)  # atomic, fails if the lock exists: never a half-written lock
                    self.held = True
                    return
                except FileExistsError:
                    holder = self._holder()
                    if holder is None:
                        continue
                    if not self._is_stale(holder):
                        raise LockError(self._busy_message(holder)) from None
                    log.warning("removing the stale lock %s (pid %s has ended)", self.path, holder.get("pid"))
                    self.path.unlink(missing_ok=True)
            raise LockError(f"{self.path}: could not take the run lock (other runs keep taking it)")
        finally:
            Path(tmp).unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock if this process holds it."""
        if not self.held:
            return
        self.held = False
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
