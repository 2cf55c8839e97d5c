"""The `dinosr` error boundary: bad input made for real -> one line `dinosr CMD: error: ...`, exit 2.

(A diverged training is the one error with exit status 1.)
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import dinosr
from dinosr import cli
from dinosr.cli import main
from dinosr.data.corpus import bundled_corpus
from dinosr.errors import ManifestError
from dinosr.model import dinosr_tiny
from train_utils import micro_config, write_corpus


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    """Exit status and the error line (asserting it is the only stderr line and has no traceback)."""
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # Progress bars (tqdm) share stderr; the error itself is one line of its own kind.
    found = re.findall(r"dinosr [a-z ]+: error: [^\r\n]*", err)
    assert len(found) == 1, err
    return code, found[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"), num_files=4)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny"
    dinosr.save_pretrained(dinosr_tiny(num_layers=2, num_codebook_layers=2).eval(), path)
    return path


def _config_file(tmp_path: Path, manifest: Path, **data) -> Path:
    cfg = micro_config(tmp_path / "run", manifest, data=data, run={"max_steps": 1})
    lines = []
    for section, values in cfg.to_dict().items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = tmp_path / "micro.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_pretrain_missing_manifest(tmp_path, capsys, corpus):
    config = _config_file(tmp_path, tmp_path / "nope.tsv")
    code, line = run_cli(capsys, ["pretrain", str(config)])
    assert code == 2
    assert line == f"dinosr pretrain: error: {tmp_path / 'nope.tsv'}: manifest not found"


def test_pretrain_malformed_manifest_line(tmp_path, capsys, corpus):
    bad = tmp_path / "bad.tsv"
    bad.write_text(corpus.read_text() + "just-a-path-without-a-count.wav\n")
    code, line = run_cli(capsys, ["pretrain", str(_config_file(tmp_path, bad))])
    assert code == 2
    assert line.startswith(f"dinosr pretrain: error: {bad}:6: expected 'relative/path<TAB>num_samples'")


@pytest.mark.parametrize("num_workers", [0, 1])
def test_pretrain_bad_audio_file(tmp_path, capsys, corpus, num_workers):
    root = tmp_path / "c"
    shutil.copytree(corpus.parent, root)
    manifest = root / "train.tsv"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([str(root / "audio"), *lines[1:]]) + "\n")
    for wav in (root / "audio").glob("*.wav"):
        wav.write_bytes(wav.read_bytes()[:2000])  # every file cut: the first batch meets one
    config = _config_file(tmp_path, manifest, num_workers=num_workers)
    code, line = run_cli(capsys, ["pretrain", str(config)])
    assert code == 2
    # Also through a DataLoader worker: the AudioError itself, not "Caught AudioError in worker process 0".
    assert line.startswith(f"dinosr pretrain: error: {root / 'audio'}/utt")
    assert "truncated or changed: the manifest says" in line


def test_pretrain_busy_workdir(tmp_path, capsys, corpus):
    config = _config_file(tmp_path, corpus)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "run").mkdir()
        record = {"pid": holder.pid, "host": os.uname().nodename, "started": "now", "command": "first run"}
        (tmp_path / "run" / "run.lock").write_text(json.dumps(record))
        code, line = run_cli(capsys, ["pretrain", str(config)])
    finally:
        holder.kill()
        holder.wait()
    assert code == 2
    busy = f"{tmp_path / 'run'} is in use by another run (pid {holder.pid}"
    assert line.startswith(f"dinosr pretrain: error: {busy}")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_pretrain_releases_its_lock_and_stale_temp_files_go(tmp_path, corpus):
    config = _config_file(tmp_path, corpus)
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / ".checkpoint_00000001.pt.x1y2.tmp").write_bytes(b"killed mid-save")
    assert main(["pretrain", str(config)]) == 0
    assert not (tmp_path / "run" / "run.lock").exists()
    assert [p.name for p in ckpts.iterdir()] == ["checkpoint_00000001.pt"]


def test_pretrain_empty_workdir_and_too_small_budget(tmp_path, capsys, corpus):
    config = _config_file(tmp_path, corpus)
    code, line = run_cli(capsys, ["pretrain", str(config), "--set", "run.workdir="])
    assert code == 2
    assert line == (
        f"dinosr pretrain: error: {config}.run: workdir must not be empty (it would write into the cwd)"
    )
    code, line = run_cli(capsys, ["pretrain", str(config), "--set", "data.max_tokens=4000"])
    assert code == 2
    assert "max_tokens (4000) must be >= min_sample_size (8000)" in line
    overrides = ["--set", "data.min_sample_size=100", "--set", "data.max_tokens=200"]
    code, line = run_cli(capsys, ["pretrain", str(config), *overrides])
    assert code == 2
    assert line == (
        "dinosr pretrain: error: data.min_sample_size = 100 is shorter than one frame of the model "
        "(receptive field 400 samples); use at least 400"
    )


def test_pretrain_diverged(tmp_path, capsys, corpus, monkeypatch):
    # Every step's loss made NaN (as test_trainer's NaN guard does): the run stops after max_bad_steps
    # with one line naming the work directory and what to change, exit status 1 (not 2: input was fine).
    from dinosr.model.dinosr import DinoSR

    forward = DinoSR.forward

    def poisoned(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        out.losses = out.losses * float("nan")
        return out

    monkeypatch.setattr(DinoSR, "forward", poisoned)
    config = _config_file(tmp_path, corpus)
    code, line = run_cli(capsys, ["pretrain", str(config), "--set", "run.max_bad_steps=2"])
    assert code == 1
    assert line.startswith(
        f"dinosr pretrain: error: {tmp_path / 'run'}: training diverged: "
        "2 non-finite steps in a row at step 0; lower optim.lr"
    )
    assert not (tmp_path / "run" / "run.lock").exists()  # the lock is released on the way out


def _manifest(tmp_path: Path, samples: list[int]) -> Path:
    rng = np.random.default_rng(0)
    lines = [str(tmp_path)]
    for i, n in enumerate(samples):
        soundfile.write(tmp_path / f"u{i}.wav", (0.1 * rng.standard_normal(n)).astype(np.float32), 16000)
        lines.append(f"u{i}.wav\t{n}")
    path = tmp_path / "m.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_extract_truncated_checkpoint(tmp_path, capsys, model_dir):
    manifest = _manifest(tmp_path, [8000])
    ckpt = tmp_path / "model.pt"
    torch.save({"model": dinosr_tiny(num_layers=2, num_codebook_layers=2).state_dict()}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    code, line = run_cli(capsys, ["extract", str(ckpt), str(manifest), str(tmp_path / "o"), "--units"])
    assert code == 2
    assert line.startswith(f"dinosr extract: error: {ckpt}: truncated or incomplete checkpoint")
    ckpt.write_bytes(b"")
    code, line = run_cli(capsys, ["extract", str(ckpt), str(manifest), str(tmp_path / "o"), "--units"])
    assert code == 2
    assert line == (
        f"dinosr extract: error: {ckpt}: empty file (0 bytes): the checkpoint was not written completely"
    )


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_extract_unsafe_pickle(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manifest = _manifest(tmp_path, [8000])
    ckpt = tmp_path / "evil.pt"
    with open(ckpt, "wb") as f:
        pickle.dump({"model": _Evil()}, f, protocol=2)
    code, line = run_cli(capsys, ["extract", str(ckpt), str(manifest), str(tmp_path / "o"), "--units"])
    assert code == 2
    assert line.startswith(f"dinosr extract: error: {ckpt}: refusing to load global posix.system")
    assert not (tmp_path / "pwned.txt").exists()


def test_extract_short_audio_and_empty_manifest(tmp_path, capsys, model_dir):
    manifest = _manifest(tmp_path, [8000, 100])
    out = str(tmp_path / "o")
    code, line = run_cli(capsys, ["extract", str(model_dir), str(manifest), out, "--units"])
    assert code == 2
    assert line == (
        f"dinosr extract: error: {tmp_path / 'u1.wav'}: only 100 samples, shorter than one frame of the "
        "model (receptive field 400 samples at 16000 Hz)"
    )
    assert main(["extract", str(model_dir), str(manifest), out, "--units", "--skip-bad-files"]) == 0
    assert (tmp_path / "o" / "m.km").read_text().splitlines()[1] == ""  # the counted skip keeps its line
    empty = tmp_path / "empty.tsv"
    empty.write_text(f"{tmp_path}\n")
    code, line = run_cli(capsys, ["extract", str(model_dir), str(empty), out, "--units"])
    assert line == f"dinosr extract: error: {empty}: the manifest lists no utterances, nothing to extract"


def test_extract_bom_and_latin1_manifests(tmp_path, capsys, model_dir):
    manifest = _manifest(tmp_path, [8000])
    bom = tmp_path / "bom.tsv"
    bom.write_bytes(b"\xef\xbb\xbf" + manifest.read_bytes())
    assert main(["extract", str(model_dir), str(bom), str(tmp_path / "o"), "--units"]) == 0
    latin = tmp_path / "latin.tsv"
    latin.write_bytes(f"{tmp_path}\nu0.wav\t8000\ncaf\xe9.wav\t10\n".encode("latin-1"))
    code, line = run_cli(capsys, ["extract", str(model_dir), str(latin), str(tmp_path / "o2"), "--units"])
    assert code == 2
    assert line == (
        f"dinosr extract: error: {latin}:3: byte 0xe9: not UTF-8 text; re-save the manifest as UTF-8"
    )


def test_convert_corrupt_file(tmp_path, capsys):
    bad = tmp_path / "garbage.ckpt"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    code, line = run_cli(capsys, ["convert", str(bad), str(tmp_path / "out")])
    assert code == 2
    assert line.startswith(f"dinosr convert: error: {bad}: corrupt checkpoint")
    code, line = run_cli(capsys, ["convert", str(tmp_path / "missing.pt"), str(tmp_path / "out")])
    assert line == f"dinosr convert: error: {tmp_path / 'missing.pt'}: checkpoint not found"


def test_convert_bare_state_dict_of_the_tiny_recipe(tmp_path):
    from dinosr.config import load_config
    from dinosr.configs import preset_path
    from dinosr.model.dinosr import DinoSR

    cfg = load_config(preset_path("tiny"))
    model = DinoSR(cfg.model, cfg.masking)
    torch.save(model.state_dict(), tmp_path / "bare.pt")  # log-mel front end, anchor, codebook upkeep
    assert main(["convert", str(tmp_path / "bare.pt"), str(tmp_path / "out")]) == 0
    loaded = dinosr.load_model(tmp_path / "out")
    assert loaded.cfg == cfg.model
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_evaluate_bad_audio(tmp_path, capsys, model_dir):
    root = tmp_path / "corpus"
    shutil.copytree(bundled_corpus(), root)
    for rel in [line.split("\t")[0] for line in (root / "valid.tsv").read_text().splitlines()[1:]]:
        (root / rel).write_bytes(b"not audio at all")  # whichever subset evaluate picks meets one
    argv = ["evaluate", str(model_dir), "--corpus", str(root), "--split", "valid"]
    argv += ["--out", str(tmp_path / "e"), "--no-abx", "--no-probe", "--no-baselines", "--max-seconds", "30"]
    code, line = run_cli(capsys, argv)
    assert code == 2
    assert re.fullmatch(rf"dinosr evaluate: error: {re.escape(str(root))}/audio/\S+\.flac: .+", line), line


def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    code = main(["--debug", "pretrain", str(tmp_path / "none.toml")])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" in err
    missing = tmp_path / "none.toml"
    assert err.strip().splitlines()[-1] == f"dinosr pretrain: error: {missing}: config file not found"
    monkeypatch.setenv("DINOSR_DEBUG", "1")
    assert main(["pretrain", str(tmp_path / "none.toml")]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_bugs_keep_their_traceback(tmp_path, monkeypatch):
    import dinosr.train.cli as train_cli

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(train_cli, "run", broken)
    with pytest.raises(ZeroDivisionError):
        main(["pretrain", "x"])


def test_a_broken_subcommand_module_is_not_hidden(monkeypatch):
    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", [*cli.SUBCOMMAND_MODULES, "dinosr.no_such_module"])
    with pytest.raises(ModuleNotFoundError, match=r"dinosr\.no_such_module"):
        cli.build_parser()


def test_library_users_still_get_the_exception(tmp_path):
    with pytest.raises(ManifestError):
        dinosr.data.manifest.read_manifest(tmp_path / "x.tsv")
