"""A fine-tuned-looking CTC model for the transcription and export tests: random weights, a head scaled up
so that its letters vary from frame to frame with clear decisions, word separators and blanks favoured so the
text has words and repeated letters."""

import torch

from dinosr.data.labels import Dictionary
from dinosr.model.ctc import CTCConfig, DinoSRForCTC
from model_utils import micro_model_config

DICT = Dictionary(list("ETAOINS|"))


def biased_ctc_model(dictionary: Dictionary = DICT, **overrides) -> DinoSRForCTC:
    torch.manual_seed(0)
    model = DinoSRForCTC(micro_model_config(**overrides), len(dictionary), CTCConfig())
    with torch.no_grad():
        model.head.weight.mul_(40.0)
        model.head.bias[dictionary.blank] += 60.0
        model.head.bias[dictionary.index(dictionary.word_separator)] += 120.0
        model.head.bias[1:4] = -1e4  # never <pad>, </s>, <unk>
    return model.eval()
