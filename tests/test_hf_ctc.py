"""Hugging Face export of fine-tuned CTC models (dinosr.interop.hf_ctc): Data2VecAudioForCTC logits and CTC
loss equal ours, the tokenizer decodes like our greedy decoder, and transformers' ASR pipeline writes the text
that `dinosr transcribe` writes."""

from __future__ import annotations

import itertools
import json
import random

import pytest
import soundfile
import torch

from asr_utils import DICT, biased_ctc_model
from dinosr.asr.decode import greedy_ids, ids_to_text
from dinosr.asr.transcribe import run_transcription
from dinosr.asr.transcripts import read_transcripts
from dinosr.cli import main
from dinosr.data.corpus import bundled_corpus
from dinosr.data.manifest import read_manifest
from dinosr.errors import CheckpointError
from dinosr.inference import standardize
from dinosr.interop.ctc_pretrained import save_ctc_model
from dinosr.interop.hf_ctc import export_hf_ctc
from dinosr.model.ctc import CTCConfig, DinoSRForCTC, ctc_loss_sum
from model_utils import micro_model_config

transformers = pytest.importorskip("transformers")

NUM_UTTS = 3


def _random_model(**overrides) -> DinoSRForCTC:
    torch.manual_seed(0)
    model = DinoSRForCTC(micro_model_config(**overrides), len(DICT), CTCConfig(final_dropout=0.1))
    with torch.no_grad():
        model.head.bias.normal_()  # exported as lm_head.bias
    return model.eval()


@pytest.fixture(scope="module")
def entries():
    root = bundled_corpus()
    return read_manifest(root / "valid.tsv")[:NUM_UTTS]


def _wav(entry) -> torch.Tensor:
    return torch.from_numpy(soundfile.read(entry.path, dtype="float32")[0])


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_logits_and_ctc_loss_equal_ours(tmp_path, entries, qkv_bias):
    model = _random_model(qkv_bias=qkv_bias)
    export_hf_ctc(model, DICT, tmp_path / "hf")
    hf = transformers.Data2VecAudioForCTC.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.pad_token_id == DICT.blank
    assert hf.config.vocab_size == len(DICT)
    for entry in entries:  # one unpadded utterance at a time (see docs/interop.md for padded batches)
        x = standardize(_wav(entry)[None])
        labels = torch.tensor([DICT.encode("T E A | S E E N |")])
        with torch.no_grad():
            ours = model(x)
            theirs = hf(x, labels=labels)
        assert theirs.logits.shape == ours.logits.shape
        assert (theirs.logits - ours.logits).abs().max() < 1e-4
        # HF's CTC loss (blank = pad_token_id, reduction "sum") is our fairseq-style sum
        expected = ctc_loss_sum(ours.logits, ours.frame_lengths, labels[0:1].tolist())
        assert theirs.loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_tokenizer_decodes_like_our_greedy_decoder(tmp_path):
    export_hf_ctc(_random_model(), DICT, tmp_path / "hf")
    processor = transformers.AutoProcessor.from_pretrained(tmp_path / "hf")
    tokenizer = processor.tokenizer
    assert tokenizer.pad_token_id == DICT.blank
    assert tokenizer.convert_tokens_to_ids(list("ETAOINS|")) == [DICT.index(c) for c in "ETAOINS|"]
    assert processor.feature_extractor.do_normalize
    rng = random.Random(0)
    # frame-level best paths without <pad>/</s>/<unk> and without a blank between two separators (HF keeps a
    # double space there, we collapse it)
    sep = DICT.index("|")
    for _ in range(200):
        frames = [rng.choice([0, 0, 0, *range(4, len(DICT))]) for _ in range(rng.randint(1, 30))]
        scores = torch.nn.functional.one_hot(torch.tensor(frames), len(DICT))[None].float()
        ids = greedy_ids(scores)[0]
        if any(a == b == sep for a, b in itertools.pairwise(ids)):
            continue
        ours = ids_to_text(ids, DICT)
        assert tokenizer.decode(frames) == ours, frames


def test_pipeline_text_equals_dinosr_transcribe(tmp_path, entries):
    model = biased_ctc_model()
    save_ctc_model(model, DICT, tmp_path / "ft")
    assert main(["export", str(tmp_path / "ft"), str(tmp_path / "hf")]) == 0
    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "vocab.json",
        "tokenizer_config.json",
    ):
        assert (tmp_path / "hf" / name).is_file(), name
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == [
        "Data2VecAudioForCTC"
    ]

    run_transcription(model, DICT, entries, tmp_path / "ours.tsv", progress=False)
    ours = read_transcripts(tmp_path / "ours.tsv")
    asr = transformers.pipeline("automatic-speech-recognition", model=str(tmp_path / "hf"), device="cpu")
    for entry in entries:
        wav = _wav(entry)
        with torch.no_grad():
            logits = model(standardize(wav[None])).logits
        top2 = logits.topk(2, dim=-1).values
        # precondition: every frame's decision is clearer than the export's logit error (~1e-5; under the
        # 1e-4 the parity test asserts) by a wide margin; the closest frame here is ~0.01 apart, and a CPU
        # whose kernels round differently moves it either side of 0.01, so the bound is 10x the tolerance
        assert (top2[..., 0] - top2[..., 1]).min() > 1e-3
        assert " " in ours[entry.name]  # words, not one run of letters
        assert asr(wav.numpy())["text"] == ours[entry.name]


def test_log_mel_models_are_refused(tmp_path):
    model = _random_model(frontend="logmel", n_mels=16)
    with pytest.raises(CheckpointError, match="only the official conv front end exports to Hugging Face"):
        export_hf_ctc(model, DICT, tmp_path / "hf")
    save_ctc_model(model, DICT, tmp_path / "ft")
    assert main(["export", str(tmp_path / "ft"), str(tmp_path / "hf")]) == 2  # one-line error, no traceback
