"""Export a fine-tuned CTC model as a Hugging Face ``Data2VecAudioForCTC`` + ``Wav2Vec2Processor`` directory.

Written without transformers::

    config.json               Data2VecAudioConfig (Data2VecAudioForCTC, vocab_size, pad_token_id 0 = blank)
    model.safetensors         data2vec_audio.* (the encoder, mapped as interop/hf.py does) + lm_head.*
    preprocessor_config.json  Wav2Vec2FeatureExtractor(do_normalize=True): our per-utterance standardisation
    vocab.json                our dictionary: {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "E": 4, ...}
    tokenizer_config.json     Wav2Vec2CTCTokenizer: pad_token "<s>" (so HF's blank = pad_token_id = 0 = ours),
                              word_delimiter_token "|", no lower-casing, no clean-up of spaces

so ``pipeline("automatic-speech-recognition", model=DIR)`` and ``Data2VecAudioForCTC.from_pretrained(DIR)``
work. Logits equal ours on unpadded input (see docs/interop.md for padded batches). Text: HF's greedy
decoding collapses repeats, drops the blank and maps ``|`` to a space like ours, but does not collapse a
double space (two word separators split by a blank), and prints ``<pad>``/``</s>``/``<unk>`` should the
model emit them (we drop them; a fine-tuned model has never seen them as targets).

Only the conv front end exports: HF has no log-mel front end, so such a model is refused (as interop/hf.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import Tensor

from dinosr.data.labels import Dictionary
from dinosr.errors import CheckpointError
from dinosr.fileio import atomic_write
from dinosr.interop.hf import hf_config, hf_preprocessor_config, hf_state_dict
from dinosr.model.ctc import DinoSRForCTC

__all__ = ["export_hf_ctc", "hf_ctc_config", "hf_ctc_state_dict", "hf_tokenizer_config", "hf_vocab"]

BASE_PREFIX = "data2vec_audio."  # Data2VecAudioForCTC.base_model_prefix


def _check_exportable(model: DinoSRForCTC, dictionary: Dictionary) -> None:
    if model.cfg.frontend != "conv":
        raise CheckpointError(
            f"only the official conv front end exports to Hugging Face (it has no log-mel front end); "
            f"this model has frontend={model.cfg.frontend!r}"
        )
    if len(dictionary) != model.vocab_size:
        raise CheckpointError(
            f"the dictionary has {len(dictionary)} symbols but the model {model.vocab_size}"
        )
    if dictionary.word_separator not in dictionary:
        raise CheckpointError(f"the dictionary has no word separator {dictionary.word_separator!r}")


def hf_ctc_config(model: DinoSRForCTC, dictionary: Dictionary) -> dict[str, Any]:
    """``config.json`` of the ``Data2VecAudioForCTC``: the encoder's (hf_config) + head, CTC and masking."""
    c = model.ctc_cfg
    config = hf_config(model)  # dropouts / LayerDrop: model.cfg, which holds the fine-tuning values
    config.update(
        architectures=["Data2VecAudioForCTC"],
        vocab_size=len(dictionary),
        pad_token_id=dictionary.blank,  # HF's CTC blank is pad_token_id
        bos_token_id=None,
        eos_token_id=dictionary.eos,
        final_dropout=c.final_dropout,
        ctc_loss_reduction="sum",  # fairseq: summed, then divided by the sentences of the batch
        ctc_zero_infinity=True,
        # fine-tuning masks as in our CTCConfig (HF's SpecAugment: time spans, then feature channels)
        mask_time_prob=c.mask_prob,
        mask_time_length=c.mask_length,
        mask_time_min_masks=c.min_masks,
        mask_feature_prob=c.mask_channel_prob,
        mask_feature_length=c.mask_channel_length,
        mask_feature_min_masks=0,
    )
    return config


def hf_ctc_state_dict(model: DinoSRForCTC) -> dict[str, Tensor]:
    """``Data2VecAudioForCTC`` weights: the encoder under ``data2vec_audio.`` and ``lm_head`` = our head."""
    out = {BASE_PREFIX + k: v for k, v in hf_state_dict(model).items()}
    for kind in ("weight", "bias"):
        out[f"lm_head.{kind}"] = getattr(model.head, kind).detach().cpu().float().contiguous().clone()
    return out


def hf_vocab(dictionary: Dictionary) -> dict[str, int]:
    """``vocab.json``: every symbol with our index (the blank ``<s>`` = 0)."""
    return {symbol: i for i, symbol in enumerate(dictionary.symbols)}


def hf_tokenizer_config(dictionary: Dictionary) -> dict[str, Any]:
    """``tokenizer_config.json`` of a ``Wav2Vec2CTCTokenizer`` whose pad token is our blank."""
    return {
        "tokenizer_class": "Wav2Vec2CTCTokenizer",
        "processor_class": "Wav2Vec2Processor",
        "pad_token": dictionary.symbols[dictionary.blank],  # "<s>": HF removes pad_token as the CTC blank
        "bos_token": None,
        "eos_token": dictionary.symbols[dictionary.eos],
        "unk_token": dictionary.symbols[dictionary.unk],
        "word_delimiter_token": dictionary.word_separator,
        "replace_word_delimiter_char": " ",
        "do_lower_case": False,
        "clean_up_tokenization_spaces": False,  # it would glue " 'S" to the previous word
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_write(path, binary=False) as f:
        f.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def export_hf_ctc(model: DinoSRForCTC, dictionary: Dictionary, directory: str | os.PathLike) -> Path:
    """Write the HF directory (see the module docstring); returns it. Each file is written atomically."""
    from safetensors.torch import save

    _check_exportable(model, dictionary)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_write(directory / "model.safetensors") as f:
        f.write(save(hf_ctc_state_dict(model), metadata={"format": "pt"}))
    _write_json(directory / "vocab.json", hf_vocab(dictionary))
    _write_json(directory / "tokenizer_config.json", hf_tokenizer_config(dictionary))
    _write_json(
        directory / "preprocessor_config.json",
        {**hf_preprocessor_config(), "processor_class": "Wav2Vec2Processor"},
    )
    _write_json(directory / "config.json", hf_ctc_config(model, dictionary))
    return directory
