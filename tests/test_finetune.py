"""CTC fine-tuning on the shared training loop (dinosr.train.ctc_task): the encoder freeze schedule, the
loss normalisation against a direct computation, exact resume, validation WER + best.pt, the exported
model, starting from a pretraining run directory, and the command's one-line errors."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from dinosr.asr.decode import greedy_decode
from dinosr.asr.scoring import score
from dinosr.cli import main
from dinosr.data.labels import Dictionary
from dinosr.errors import ConfigError
from dinosr.interop.ctc_pretrained import load_ctc_model
from dinosr.model.ctc import ctc_loss_sum
from dinosr.train.checkpoint import latest_checkpoint, load_checkpoint
from dinosr.train.ctc_task import _load_padded, load_init, ltr_to_words
from dinosr.train.finetune_cli import finetune
from dinosr.train.trainer import Trainer
from finetune_utils import DETERMINISTIC_CTC, ft_config, ft_trainer, write_labelled_corpus
from train_utils import micro_config


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_labelled_corpus(tmp_path_factory.mktemp("ftcorpus"))


def _state(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_freeze_schedule_head_then_encoder_never_front_end(tmp_path, corpus):
    trainer = ft_trainer(ft_config(tmp_path, corpus, ctc={"layerdrop": 0.0}))
    model = trainer.model
    encoder = {id(p) for p in model.param_groups()[0]["params"]}
    front = list(model.feature_extractor.parameters())
    start = _state(trainer)
    for step in range(4):
        result = trainer.train_step([trainer._next_batch()])
        assert result["updated"]
        for name, p in model.named_parameters():
            if name.startswith("head."):
                assert p.grad is not None, (step, name)
                assert p.grad.abs().sum() > 0, (step, name)
            elif id(p) in encoder:
                # steps 0 and 1 run before freeze_finetune_updates = 2: the encoder gets no gradient
                assert (p.grad is not None) == (step >= 2), (step, name)
            else:
                assert p.grad is None, (step, name)
                assert not p.requires_grad, (step, name)
        names = [g["name"] for g in trainer.optimizer.param_groups]
        assert names == (["head"] if step + 1 < 2 else ["encoder", "head"]), step
        if step == 1:  # two frozen updates: the encoder is still the initial one
            after = _state(trainer)
            changed = {k for k in start if not torch.equal(start[k], after[k])}
            assert changed == {"head.weight", "head.bias"}
    assert all(
        torch.equal(p, start[f"feature_extractor.{n}"]) for n, p in model.feature_extractor.named_parameters()
    )
    assert front == [] or all(not p.requires_grad for p in front)
    trainer.close()


def test_one_step_gradient_is_the_mean_per_sentence_ctc_loss(tmp_path, corpus):
    """Two micro-batches (grad_accum 2) of padded utterances: the update's gradient equals the gradient of
    (sum of the per-sentence CTC losses) / (number of sentences), computed directly."""
    cfg = ft_config(
        tmp_path,
        corpus,
        ctc=DETERMINISTIC_CTC,
        finetune={"freeze_finetune_updates": 0},
        run={"grad_accum": 2},
    )
    trainer = ft_trainer(cfg)
    batches = [trainer._next_batch(), trainer._next_batch()]
    assert any(len(set(b.lengths.tolist())) > 1 for b in batches)  # padding is exercised
    reference = copy.deepcopy(trainer.model)
    result = trainer.train_step(batches)
    assert result["updated"]
    labels = trainer.task.labels
    total, sentences = 0.0, 0
    for b in batches:
        out = reference(b.waveforms, b.lengths)
        total = total + ctc_loss_sum(out.logits, out.frame_lengths, [labels[n] for n in b.names])
        sentences += len(b.names)
    assert result["utterances"] == sentences
    assert result["loss_sum"] == pytest.approx(float(total.detach()), rel=1e-5)
    (total / sentences).backward()
    got = dict(trainer.model.named_parameters())
    compared = 0
    for name, p in reference.named_parameters():
        if p.grad is None:
            assert got[name].grad is None, name
            continue
        # float32 sums in another order: tolerance relative to the gradient's scale
        atol = 1e-5 * float(p.grad.abs().max())
        torch.testing.assert_close(got[name].grad, p.grad, rtol=1e-4, atol=atol, msg=name)
        compared += 1
    assert compared > 10
    trainer.close()


def test_resume_is_bit_exact(tmp_path, corpus):
    """Straight 6 steps == 4 steps, the step-4 checkpoint lost (a kill), restart from step 3 to 6; the
    interruption falls after the encoder joined (freeze 2), masks + dropout + LayerDrop on."""
    run = {"validate_every": 2, "save_every": 3}
    straight = ft_trainer(ft_config(tmp_path / "a", corpus, run=run))
    straight.fit()
    straight.close()

    workdir = tmp_path / "b"
    first = ft_trainer(ft_config(workdir, corpus, run=run))
    assert first.fit(until_step=4) == 4
    first.close()
    latest_checkpoint(workdir / "checkpoints").unlink()  # the kill: step 4 never saved
    second = ft_trainer(ft_config(workdir, corpus, run=run))
    assert second.fit() == 6
    second.close()
    final = _state(second)
    for key, value in _state(straight).items():
        assert torch.equal(final[key], value), key
    assert second.best == straight.best
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "valid_wer" in r] == [2, 4, 6]  # step 4 logged once


def test_resume_is_bit_exact_with_speed_perturbation(tmp_path, corpus):
    """The speed factors come from the checkpointed RNG: a killed and resumed run ends on the same weights,
    and the perturbation changes the training (other weights than without it)."""
    run, data = {"save_every": 3}, {"speed_perturb": [0.85, 1.15]}
    straight = ft_trainer(ft_config(tmp_path / "a", corpus, run=run, data=data))
    straight.fit()
    straight.close()
    workdir = tmp_path / "b"
    first = ft_trainer(ft_config(workdir, corpus, run=run, data=data))
    assert first.fit(until_step=4) == 4
    first.close()
    latest_checkpoint(workdir / "checkpoints").unlink()
    second = ft_trainer(ft_config(workdir, corpus, run=run, data=data))
    assert second.fit() == 6
    second.close()
    plain = ft_trainer(ft_config(tmp_path / "c", corpus, run=run))
    plain.fit()
    plain.close()
    final, reference, unperturbed = _state(second), _state(straight), _state(plain)
    for key, value in reference.items():
        assert torch.equal(final[key], value), key
    assert any(not torch.equal(unperturbed[k], v) for k, v in reference.items())


def test_validation_logs_wer_keeps_best_by_wer_and_exports(tmp_path, corpus):
    cfg = ft_config(tmp_path / "run", corpus, run={"validate_every": 2, "max_steps": 6})
    assert finetune(cfg) == 6
    run_dir = tmp_path / "run"
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in rows if "valid_wer" in r]
    assert [r["step"] for r in valid] == [2, 4, 6]
    best_row = min(valid, key=lambda r: r["valid_wer"])  # first of equal values, as the loop keeps it
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["best"]["metric"] == "wer"
    assert best["best"]["mode"] == "min"
    assert best["step"] == best_row["step"]
    dictionary = Dictionary.load(run_dir / "dict.ltr.txt")  # built from train.ltr, saved in the run
    assert best["dictionary"] == dictionary.symbols
    assert best["config"]["ctc"]["mask_prob"] == 0.3

    # The logged WER/CER are those of greedy decoding the valid split with the best checkpoint's model.
    model, _ = load_ctc_model(run_dir / "checkpoints" / "best.pt")
    from dinosr.data.manifest import read_manifest

    entries = read_manifest(corpus.with_name("valid.tsv"))
    refs = [ltr_to_words(x) for x in corpus.with_name("valid.ltr").read_text().splitlines()]
    wav, lengths = _load_padded(entries, cfg.data)
    with torch.no_grad():
        out = model(wav, lengths)
    rates = score(refs, greedy_decode(out.logits, out.frame_lengths, dictionary))
    assert rates.wer == pytest.approx(best_row["valid_wer"], abs=1e-6)
    assert rates.cer == pytest.approx(best_row["valid_cer"], abs=1e-6)

    # RUN/valid_ref.tsv: the references for `dinosr wer`, by utterance name.
    lines = (run_dir / "valid_ref.tsv").read_text().splitlines()
    assert lines == [f"{e.name}\t{r}" for e, r in zip(entries, refs)]

    # RUN/model: the best checkpoint as a dinosr-ctc directory.
    exported, exported_dict = load_ctc_model(run_dir / "model")
    assert exported_dict.symbols == dictionary.symbols
    for key, value in model.state_dict().items():
        assert torch.equal(exported.state_dict()[key], value), key


def test_best_checkpoint_by_cer(tmp_path, corpus):
    cfg = ft_config(
        tmp_path, corpus, finetune={"best_metric": "cer"}, run={"validate_every": 2, "max_steps": 4}
    )
    trainer = ft_trainer(cfg)
    trainer.fit()
    trainer.close()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in rows if "valid_cer" in r]
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")["best"]
    assert best["metric"] == "cer"
    assert best["value"] == min(r["valid_cer"] for r in valid)
    assert valid[-1]["best_valid_cer"] == best["value"]


def test_finetune_from_a_pretraining_run_directory(tmp_path, corpus):
    pretrain_dir = tmp_path / "pretrain"
    pretrainer = Trainer(micro_config(pretrain_dir, corpus, run={"max_steps": 2}))
    pretrainer.fit()
    pretrainer.close()
    student = {k: v for k, v in pretrainer.model.state_dict().items() if k.startswith("student.")}

    cfg = ft_config(tmp_path / "ft", corpus, finetune={"init": str(pretrain_dir)}, run={"max_steps": 3})
    resolved, init = load_init(cfg)
    assert init is not None
    # [model] now describes the pretrained architecture as the CTC model runs it (ctc overrides applied).
    assert resolved.model.embed_dim == pretrainer.model.cfg.embed_dim
    assert resolved.model.layerdrop == cfg.ctc.layerdrop
    assert resolved.model.dropout == cfg.ctc.dropout
    trainer = ft_trainer(cfg)
    state = trainer.model.state_dict()
    for key, value in student.items():
        assert torch.equal(state[key], value), key  # the student encoder, copied 1:1
    assert trainer.fit() == 3
    trainer.close()
    saved = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert saved["model"]["embed_dim"] == pretrainer.model.cfg.embed_dim
    assert saved["finetune"]["init"] == str(pretrain_dir)

    # Input normalisation must be the pretraining run's.
    with pytest.raises(ConfigError, match="normalize"):
        load_init(
            ft_config(tmp_path / "x", corpus, finetune={"init": str(pretrain_dir)}, data={"normalize": False})
        )


def test_cli_errors_are_one_line(tmp_path, corpus, capsys):
    base = [
        "finetune",
        "cpu_small",
        "--set",
        f"run.workdir={tmp_path / 'r'}",
        "--set",
        f"data.manifest={corpus}",
    ]
    assert main(base) == 2  # neither --init nor --from-scratch
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "--init" in err[0]
    assert err[0].startswith("dinosr finetune: error:")
    assert main([*base, "--from-scratch", "--set", "data.batching=crop"]) == 2
    assert "pad" in capsys.readouterr().err
    assert main([*base, "--init", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert main([*base, "--from-scratch", "--set", "ctc.bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err
