"""dinosr: DinoSR self-supervised speech representations in pure PyTorch.

The public API::

    from dinosr import DinoSR, load_model, extract_features, units, save_pretrained

    model = load_model("dinosr.ckpt")  # pretrained dir, training checkpoint, official or spidr file
    feats, lengths = extract_features(model, wav, layers=[5, 12])
    ids = units(model, wav, layer=5).units[0]
    save_pretrained(model, "dinosr-base")

Names are resolved lazily (module ``__getattr__``), so ``import dinosr`` (which every ``import
dinosr.x`` runs first) imports neither torch nor any subpackage. ``tests/test_layering.py`` reads
``_EXPORTS`` as the imports of this module.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "DinoSR": "dinosr.model.dinosr",
    "ModelConfig": "dinosr.model.config",
    "MaskingConfig": "dinosr.model.config",
    "dinosr_base": "dinosr.model.dinosr",
    "dinosr_tiny": "dinosr.model.dinosr",
    "Features": "dinosr.inference",
    "Units": "dinosr.inference",
    "extract_features": "dinosr.inference",
    "units": "dinosr.inference",
    "load_model": "dinosr.interop.pretrained",
    "save_pretrained": "dinosr.interop.pretrained",
}

__all__ = ["__version__", *_EXPORTS]

def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dinosr' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
