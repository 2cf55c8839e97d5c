"""One run per work directory: a held lock refuses, a stale one is replaced, release removes it."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from dinosr.errors import LockError
from dinosr.train.lock import LOCK_NAME, RunLock


def _write_lock(workdir, **record):
    workdir.mkdir(parents=True, exist_ok=True)
    base = {"pid": os.getpid(), "host": socket.gethostname(), "started": "2024-01-01", "command": "x"}
    (workdir / LOCK_NAME).write_text(json.dumps({**base, **record}))


def _dead_pid() -> int:
    code = "import os; print(os.getpid())"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)


def test_acquire_and_release(tmp_path):
    with RunLock(tmp_path / "run") as lock:
        record = json.loads(lock.path.read_text())
        assert record["pid"] == os.getpid()
        assert record["host"] == socket.gethostname()
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_a_held_lock_refuses_naming_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(tmp_path, pid=holder.pid, command="dinosr pretrain tiny")
        with pytest.raises(LockError) as info:
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    message = str(info.value)
    assert f"pid {holder.pid}" in message
    assert "dinosr pretrain tiny" in message
    assert str(tmp_path / LOCK_NAME) in message
    assert (tmp_path / LOCK_NAME).exists()  # the holder's lock is untouched


def test_second_lock_in_one_process_refuses(tmp_path):
    with RunLock(tmp_path), pytest.raises(LockError, match="in use by another run"):
        RunLock(tmp_path).acquire()


def test_a_stale_lock_is_replaced(tmp_path, caplog):
    _write_lock(tmp_path, pid=_dead_pid())
    with caplog.at_level(logging.WARNING), RunLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert "stale lock" in caplog.text


def test_a_lock_of_another_host_is_not_guessed_stale(tmp_path):
    _write_lock(tmp_path, pid=_dead_pid(), host="some-other-node")
    with pytest.raises(LockError, match="some-other-node"):
        RunLock(tmp_path).acquire()


def test_an_unreadable_lock_is_named(tmp_path):
    (tmp_path / LOCK_NAME).write_text('{"pid": 12')
    with pytest.raises(LockError, match="unreadable run lock"):
        RunLock(tmp_path).acquire()
