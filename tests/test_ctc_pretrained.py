"""Fine-tuned model files (dinosr.interop.ctc_pretrained): the dinosr-ctc directory, checkpoints and run
directories of fine-tuning, and the errors for what is not a CTC model."""

from __future__ import annotations

import json

import pytest
import torch

from dinosr.config import to_plain
from dinosr.data.labels import Dictionary
from dinosr.errors import CheckpointError
from dinosr.interop.ctc_pretrained import is_ctc_model_dir, is_ctc_source, load_ctc_model, save_ctc_model
from dinosr.interop.pretrained import save_pretrained
from dinosr.model import DinoSR
from dinosr.model.ctc import CTCConfig, DinoSRForCTC
from model_utils import micro_model_config

DICT = Dictionary(["E", "T", "|", "A", "'"], [50, 40, 30, 20, 1])


def _model(**overrides) -> DinoSRForCTC:
    torch.manual_seed(0)
    return DinoSRForCTC(micro_model_config(**overrides), len(DICT), CTCConfig(layerdrop=0.05, mask_prob=0.5))


def _logits(model: DinoSRForCTC) -> torch.Tensor:
    wav = torch.randn(2, 4000, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return model.eval()(wav, torch.tensor([4000, 3100])).logits


def _checkpoint(model: DinoSRForCTC, symbols) -> dict:
    return {
        "model": model.state_dict(),
        "config": {"model": to_plain(model.cfg), "ctc": to_plain(model.ctc_cfg), "optim": {"lr": 1e-4}},
        "dictionary": symbols,
        "step": 10,
    }


@pytest.mark.parametrize("frontend", ["conv", "logmel"])
def test_directory_round_trip(tmp_path, frontend):
    model = _model(frontend=frontend, n_mels=16)
    save_ctc_model(model, DICT, tmp_path / "ft")
    assert sorted(p.name for p in (tmp_path / "ft").iterdir()) == [
        "config.json",
        "dict.ltr.txt",
        "model.safetensors",
    ]
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert config["format"] == "dinosr-ctc"
    assert config["version"] == 1
    assert config["symbols"] == ["<s>", "<pad>", "</s>", "<unk>", "E", "T", "|", "A", "'"]
    assert config["ctc"]["mask_prob"] == 0.5
    assert is_ctc_model_dir(tmp_path / "ft")
    assert is_ctc_source(tmp_path / "ft")

    loaded, dictionary = load_ctc_model(tmp_path / "ft")
    assert dictionary == DICT  # counts come back from dict.ltr.txt
    assert loaded.cfg == model.cfg
    assert loaded.ctc_cfg == model.ctc_cfg
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert torch.equal(_logits(loaded), _logits(model))


@pytest.mark.parametrize("with_specials", [True, False])
def test_fine_tuning_checkpoint_file(tmp_path, with_specials):
    model = _model()
    symbols = DICT.symbols if with_specials else DICT.symbols[DICT.nspecial :]
    path = tmp_path / "checkpoint_00000010.pt"
    torch.save(_checkpoint(model, symbols), path)
    assert is_ctc_source(path)  # a checkpoint outside a run directory is opened to tell
    loaded, dictionary = load_ctc_model(path)
    assert dictionary.symbols == DICT.symbols
    assert torch.equal(_logits(loaded), _logits(model))


def test_run_directory_prefers_best_then_newest(tmp_path):
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    models = {}
    for name, seed in [("checkpoint_00000010.pt", 1), ("checkpoint_00000020.pt", 2), ("best.pt", 3)]:
        torch.manual_seed(seed)
        models[name] = DinoSRForCTC(micro_model_config(), len(DICT))
        torch.save(_checkpoint(models[name], DICT.symbols), ckpts / name)
    assert torch.equal(_logits(load_ctc_model(tmp_path / "run")[0]), _logits(models["best.pt"]))
    # the run's own config.json (the run configuration, not a model directory) does not get in the way
    run_config = _checkpoint(models["best.pt"], DICT.symbols)["config"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(run_config))
    assert torch.equal(_logits(load_ctc_model(tmp_path / "run")[0]), _logits(models["best.pt"]))
    assert is_ctc_source(tmp_path / "run")
    assert is_ctc_source(ckpts / "checkpoint_00000010.pt")
    (ckpts / "best.pt").unlink()
    assert torch.equal(
        _logits(load_ctc_model(tmp_path / "run")[0]), _logits(models["checkpoint_00000020.pt"])
    )
    for p in ckpts.iterdir():
        p.unlink()
    with pytest.raises(CheckpointError, match=r"no best\.pt and no checkpoint_"):
        load_ctc_model(tmp_path / "run")


def test_pretrained_models_are_refused_with_a_clear_error(tmp_path):
    torch.manual_seed(0)
    dinosr = DinoSR(micro_model_config())
    save_pretrained(dinosr, tmp_path / "pre")
    with pytest.raises(CheckpointError, match="pretrained DinoSR encoder without a CTC head: fine-tune it"):
        load_ctc_model(tmp_path / "pre")
    path = tmp_path / "pretrain.pt"
    torch.save({"model": dinosr.state_dict(), "config": {"model": to_plain(dinosr.cfg)}}, path)
    with pytest.raises(CheckpointError, match=r"pretrain\.pt: not a CTC fine-tuning checkpoint"):
        load_ctc_model(path)
    assert not is_ctc_source(tmp_path / "pre")
    assert not is_ctc_source(path)
    with pytest.raises(CheckpointError, match="no such model file or directory"):
        load_ctc_model(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="neither a fine-tuned model directory"):
        load_ctc_model(tmp_path)


def test_damaged_or_inconsistent_models(tmp_path):
    model = _model()
    save_ctc_model(model, DICT, tmp_path / "ft")
    (tmp_path / "ft" / "dict.ltr.txt").write_text("E 50\nT 40\n| 30\nB 20\n' 1\n")
    with pytest.raises(CheckpointError, match=r"dict\.ltr\.txt: symbols differ"):
        load_ctc_model(tmp_path / "ft")
    path = tmp_path / "ckpt.pt"
    torch.save(_checkpoint(model, DICT.symbols[:-1]), path)  # one symbol short of the output layer
    with pytest.raises(CheckpointError, match="dictionary does not match the output layer"):
        load_ctc_model(path)
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"cut\.pt: truncated"):
        load_ctc_model(tmp_path / "cut.pt")
    save_ctc_model(model, DICT, tmp_path / "ft2")
    (tmp_path / "ft2" / "model.safetensors").write_bytes(b"\0" * 100)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: unreadable weights"):
        load_ctc_model(tmp_path / "ft2")


def test_save_refuses_a_dictionary_that_does_not_fit(tmp_path):
    with pytest.raises(ValueError, match="the dictionary has 6 symbols but the model 9 outputs"):
        save_ctc_model(_model(), Dictionary(["A", "B"]), tmp_path / "ft")
