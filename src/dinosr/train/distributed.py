"""Process-group setup from the launcher's environment, and collectives that no-op without a group.

This is the only library module that reads environment variables. It never writes them:
:func:`init_distributed` passes rank, world size and a ``tcp://`` init method explicitly.

Launchers recognised by :func:`detect_environment`, in this order:

* ``torchrun`` (also ``torch.distributed.launch``): ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR``, ``MASTER_PORT``.
* SLURM ``srun`` (one task per GPU): ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``; the
  master is the first host of ``SLURM_NODELIST`` (``scontrol show hostnames``, else parsed here)
  and the port ``MASTER_PORT`` or :data:`DEFAULT_PORT`.
* nothing: a single process.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

DEFAULT_PORT = 29500


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_PORT
    launcher: str = "none"  # none | torchrun | slurm

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM node list such as ``gpu[03-05,9],cpu1`` (-> ``gpu03``)."""
    nodelist = nodelist.strip()
    match = re.match(r"([^,\[]+)(\[([^\]]*)\])?", nodelist)
    if match is None:
        raise ValueError(f"cannot parse SLURM node list {nodelist!r}")
    prefix, bracket = match.group(1), match.group(3)
    if bracket is None:
        return prefix
    first = bracket.split(",")[0].split("-")[0]
    return prefix + first


def _slurm_master(nodelist: str) -> str:
    # scontrol knows every node-list syntax; the parser covers the common ones when it is absent.
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(
                ["scontrol", "show", "hostnames", nodelist],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.split()
            if out:
                return out[0]
        except (subprocess.SubprocessError, OSError) as err:
            log.warning("scontrol show hostnames failed (%s); parsing SLURM_NODELIST", err)
    return first_slurm_host(nodelist)


def detect_environment(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Read the launcher's variables (``os.environ`` unless given) into a :class:`DistEnv`."""
    env = os.environ if environ is None else environ
    port = int(env.get("MASTER_PORT", DEFAULT_PORT))
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", 0)),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=port,
            launcher="torchrun",
        )
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        nodelist = (
            env.get("SLURM_STEP_NODELIST") or env.get("SLURM_NODELIST") or env.get("SLURM_JOB_NODELIST")
        )
        if not nodelist:
            raise RuntimeError("SLURM_PROCID is set but SLURM_NODELIST is not; launch with srun")
        return DistEnv(
            rank=int(env["SLURM_PROCID"]),
            world_size=int(env["SLURM_NTASKS"]),
            local_rank=int(env.get("SLURM_LOCALID", 0)),
            master_addr=env.get("MASTER_ADDR") or _slurm_master(nodelist),
            master_port=port,
            launcher="slurm",
        )
    return DistEnv()


def select_device(env: DistEnv, requested: str = "auto") -> torch.device:
    """``auto``: this rank's local GPU when CUDA is available, else the CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", env.local_rank % max(1, torch.cuda.device_count()))
    return device


def init_distributed(env: DistEnv, device: torch.device, *, backend: str = "auto") -> bool:
    """Create the default process group for ``env`` (no-op for one process).

    Returns:
        True when a process group was created.
    """
    if env.world_size <= 1:
        return False
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    init_method = f"tcp://{env.master_addr}:{env.master_port}"
    dist.init_process_group(
        backend,
        init_method=init_method,
        rank=env.rank,
        world_size=env.world_size,
        **({"device_id": device} if backend == "nccl" else {}),
    )
    log.info("rank %d/%d (%s) joined %s via %s", env.rank, env.world_size, env.launcher, backend, init_method)
    return True


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op for one process); returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_min(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise minimum over ranks in place (e.g. "every rank has data"); returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor


def any_rank(flag: bool, device: torch.device | None = None) -> bool:
    """True when ``flag`` is true on at least one rank (a collective: every rank must call it)."""
    if not is_distributed():
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` as a list indexed by rank (``[obj]`` for one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_distributed():
        dist.barrier()
