"""kill -9 in the middle of writing a checkpoint, then a rerun: no temp file left, one metrics row per step,
the run lock of the dead process replaced. The kill is made deterministic by the child itself: its
``torch.save`` writes half of the checkpoint of step 4 and then sends itself SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

from dinosr.cli import main
from train_utils import micro_config, write_corpus

CHILD = textwrap.dedent(
    """
    import io, os, signal, sys
    import torch
    import dinosr.train.checkpoint as ckpt
    from dinosr.cli import main

    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        if obj.get("step") == 4:  # half a checkpoint on disk, then the hard kill
            buf = io.BytesIO()
            real_save(obj, buf)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *args, **kwargs)

    ckpt.torch.save = dying_save
    sys.exit(main(["pretrain", sys.argv[1]]))
    """
)


def test_kill_during_checkpoint_then_resume(tmp_path):
    manifest = write_corpus(tmp_path / "corpus", num_files=4)
    cfg = micro_config(tmp_path / "run", manifest, run={"max_steps": 6, "save_every": 2, "log_every": 1})
    config = tmp_path / "micro.toml"
    lines = []
    for section, values in cfg.to_dict().items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    config.write_text("\n".join(lines) + "\n")

    child = subprocess.run([sys.executable, "-c", CHILD, str(config)], capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    ckpts = tmp_path / "run" / "checkpoints"
    assert len(list(ckpts.glob(".checkpoint_00000004.pt.*.tmp"))) == 1  # what the kill left
    assert (tmp_path / "run" / "run.lock").exists()  # held by a dead process
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [1, 2, 3, 4]

    assert main(["pretrain", str(config)]) == 0  # resumes from step 2
    assert sorted(p.name for p in ckpts.iterdir()) == [
        "checkpoint_00000002.pt",
        "checkpoint_00000004.pt",
        "checkpoint_00000006.pt",
    ]
    steps = [json.loads(r)["step"] for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert not (tmp_path / "run" / "run.lock").exists()
