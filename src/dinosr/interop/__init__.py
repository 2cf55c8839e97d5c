"""Use a trained model: save/load, checkpoint importers (fairseq, spidr), HF export, s3prl upstream,
feature/unit extraction to disk. Inference functions live in :mod:`dinosr.inference`.
"""

from dinosr.interop.convert import ConversionError, fairseq_to_dinosr, infer_model_config, spidr_to_dinosr
from dinosr.interop.pretrained import load_model, load_pretrained, save_pretrained
from dinosr.interop.safe_pickle import UnsafeCheckpointError, safe_torch_load

__all__ = [
    "ConversionError",
    "UnsafeCheckpointError",
    "fairseq_to_dinosr",
    "infer_model_config",
    "load_model",
    "load_pretrained",
    "safe_torch_load",
    "save_pretrained",
    "spidr_to_dinosr",
]
