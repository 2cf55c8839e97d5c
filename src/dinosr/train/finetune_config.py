"""The fine-tuning run configuration: ``[model] [ctc] [finetune] [data] [optim] [run]`` (`FinetuneConfig`).

Same TOML format and ``--set section.key=value`` overrides as pretraining (the generic loader of
``dinosr.config``); defaults follow fairseq's ``wav2vec_ctc`` base_100h recipe (spec FINETUNING.md):
Adam (0.9, 0.98), eps 1e-8, no weight decay, tri-stage LR 0.1 / 0.4 / 0.5 with init scale 0.01 and final
scale 0.05, batches padded (never cropped: a transcript must keep all of its audio) under 3.2 M samples.

``[model]`` is the architecture of a ``finetune.from_scratch`` model. With ``finetune.init`` the architecture
comes from the initial checkpoint: :func:`resolve_model` writes it into the run's config (with the ``[ctc]``
dropout / LayerDrop overrides applied, i.e. ``DinoSRForCTC.cfg``), so ``config.json`` and every checkpoint's
``"config"`` describe the model that actually trains.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from dinosr.configcheck import check
from dinosr.data.config import DataConfig
from dinosr.errors import ConfigError
from dinosr.model.config import ModelConfig
from dinosr.model.ctc import CTCConfig
from dinosr.train.config import OptimConfig, RunConfig

# Packaged presets (src/dinosr/configs/finetune/NAME.toml, copies of configs/finetune/).
PRESETS = ("base_10m", "base_1h", "base_10h", "base_100h", "cpu_small", "cpu_quick")


@dataclass(frozen=True)
class FinetuneSection:
    """Where the encoder comes from, the freeze schedule and the labels (``[finetune]``)."""

    init: str = ""  # anything dinosr.load_model reads: run/pretrained dir, official dinosr.ckpt, spidr .pt
    from_scratch: bool = False  # random-init model from [model] instead (the baseline)
    freeze_finetune_updates: int = 0  # before this step the encoder runs under no_grad: only the head trains
    labels: str = "ltr"  # label file suffix beside each manifest (SPLIT.ltr)
    # "" = dict.ltr.txt beside the train manifest; built from the training letters when absent
    dictionary: str = ""
    valid_batch_seconds: float = 200.0  # audio per validation batch (padded)
    # checkpoints/best.pt by the lowest valid WER (fairseq); "cer" for tiny data, where WER stays >= 100 long
    best_metric: Literal["wer", "cer"] = "wer"
    export: bool = True  # write RUN/model (a dinosr-ctc directory) from the best checkpoint at the end

    def __post_init__(self) -> None:
        check(self.freeze_finetune_updates >= 0, "freeze_finetune_updates must be >= 0")
        check(bool(self.labels.strip()), "labels must name a label file suffix, e.g. ltr")
        check(self.valid_batch_seconds > 0, "valid_batch_seconds must be > 0")
        check(
            not (self.init and self.from_scratch),
            "give finetune.init (a pretrained model) or finetune.from_scratch = true, not both",
        )


@dataclass(frozen=True)
class FinetuneDataConfig(DataConfig):
    """`DataConfig` with fine-tuning defaults: padded batches of whole utterances (fairseq pad=True).

    An utterance longer than ``min(max_sample_size, max_tokens)`` is left out of training with a warning
    (never cropped); ``valid_manifest = ""`` means the bundled corpus's valid split when ``manifest = ""``,
    else ``valid.tsv`` beside the train manifest if it exists (no validation otherwise).
    """

    min_sample_size: int = 400  # one frame of the CNN: keep (almost) every labelled utterance
    max_sample_size: int = 3_200_000  # longer ones are dropped, not cropped
    max_tokens: int = 3_200_000  # dataset.max_tokens (200 s per batch)
    batching: Literal["crop", "pad"] = "pad"  # only "pad": the transcript needs the whole utterance
    # Speed perturbation of training utterances (Kaldi/ESPnet): one factor per utterance drawn uniformly
    # from [low, high]; () = off (fairseq). A factor below 1 lengthens the utterance past max_tokens by up
    # to 1 / low. dinosr.data.augment.
    speed_perturb: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            len(self.speed_perturb) in (0, 2)
            and all(0.5 <= f <= 2.0 for f in self.speed_perturb)
            and tuple(sorted(self.speed_perturb)) == tuple(self.speed_perturb),
            "data.speed_perturb must be [] (off) or [low, high] with 0.5 <= low <= high <= 2",
        )
        check(
            self.batching == "pad",
            "data.batching must be 'pad' for fine-tuning (a crop would cut the audio of a transcript)",
        )


@dataclass(frozen=True)
class FinetuneOptimConfig(OptimConfig):
    """fairseq's fine-tuning optimiser: adam (not adamw) without weight decay, tri-stage LR."""

    lr: float = 3e-5  # base_100h
    eps: float = 1e-8  # adam_eps
    weight_decay: float = 0.0  # fairseq adam default; AdamW with 0 decay is Adam
    scheduler: Literal["tri_stage", "cosine", "constant"] = "tri_stage"
    phase_ratio: tuple[float, float, float] = (0.1, 0.4, 0.5)
    init_lr_scale: float = 0.01
    final_lr_scale: float = 0.05


@dataclass(frozen=True)
class FinetuneRunConfig(RunConfig):
    workdir: str = "runs/finetune"
    max_steps: int = 80_000  # base_100h max_update
    save_every: int = 1000
    validate_every: int = 1000


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything a CTC fine-tuning run needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    ctc: CTCConfig = field(default_factory=CTCConfig)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    optim: FinetuneOptimConfig = field(default_factory=FinetuneOptimConfig)
    run: FinetuneRunConfig = field(default_factory=FinetuneRunConfig)

    def __post_init__(self) -> None:
        from dinosr.config import check_frame_lengths

        check_frame_lengths(self.model, self.data)
        if self.finetune.freeze_finetune_updates > self.run.max_steps:
            raise ConfigError(
                f"finetune.freeze_finetune_updates = {self.finetune.freeze_finetune_updates} is beyond "
                f"run.max_steps = {self.run.max_steps}: the encoder would never train"
            )

    def to_dict(self) -> dict[str, Any]:
        from dinosr.config import to_plain

        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "<dict>") -> FinetuneConfig:
        from dinosr.config import from_plain

        return from_plain(cls, data, source=source)


def preset_path(name: str) -> Path:
    """Path of the packaged ``configs/finetune/<name>.toml``."""
    if name not in PRESETS:
        raise ConfigError(f"unknown fine-tuning preset {name!r}; choose from {list(PRESETS)}")
    return Path(str(resources.files("dinosr.configs").joinpath("finetune", f"{name}.toml")))


def resolve_config_path(name: str) -> Path:
    """A config file path, or the packaged fine-tuning preset of that name."""
    path = Path(name)
    if path.exists() or name not in PRESETS:
        return path  # load_config reports a missing file
    return preset_path(name)


def load_finetune_config(path: str | Path | None, overrides: list[str] | None = None) -> FinetuneConfig:
    """Read a fine-tuning TOML (file or preset name) and apply ``--set`` overrides."""
    from dinosr.config import load_config

    if path is not None:
        path = resolve_config_path(str(path))
    return load_config(path, overrides, cls=FinetuneConfig)


def resolve_model(cfg: FinetuneConfig, model_cfg: ModelConfig) -> FinetuneConfig:
    """``cfg`` with ``[model]`` = ``model_cfg`` as the CTC model runs it (the ``[ctc]`` overrides applied)."""
    return dataclasses.replace(cfg, model=dataclasses.replace(model_cfg, **cfg.ctc.encoder_overrides()))


def pretraining_normalize(init: str | Path) -> bool | None:
    """``data.normalize`` of the pretraining run behind ``init``, when its config says so (our run
    directories and their checkpoints); None when unknown (official / spidr files: both standardise)."""
    path = Path(init)
    # RUN/config.json of a run directory, or of RUN/checkpoints/FILE.pt
    config = path / "config.json" if path.is_dir() else path.parent.parent / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8")).get("data", {})
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(data, dict) and isinstance(data.get("normalize"), bool):
        return data["normalize"]
    return None
