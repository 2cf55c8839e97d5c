"""CTC fine-tuning as a `Task` of the training loop (fairseq ``wav2vec_ctc`` semantics, docs/DESIGN.md).

* Loss: the CTC loss summed per sentence (``ctc_loss_sum``, zero_infinity) over a micro-batch; the
  normaliser is the global number of sentences, so after the loop's rescale and DDP's averaging the
  gradient is that of the mean per-sentence loss over the whole effective batch (fairseq ``sentence_avg``).
* Freezing: the front end never trains (not in any group); while ``step < freeze_finetune_updates`` the
  encoder runs under no_grad and only the ``head`` group trains, then ``encoder`` joins (the loop rebuilds
  the optimizer groups and the DDP wrapper). Time + channel masking and LayerDrop during training only.
* Labels are looked up by utterance name (``Batch.names``): names must be unique in the train manifest.
* Validation: greedy decoding of the valid split (batches sharded over ranks, hypotheses gathered), WER/CER
  with ``dinosr.asr.scoring``; ``checkpoints/best.pt`` keeps the lowest WER (``finetune.best_metric``).
  Checkpoints carry the dictionary's symbols (``"dictionary"``), as ``interop.ctc_pretrained`` reads.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from dinosr.data.labels import DICT_NAME, Dictionary, labels_path, load_labels, read_label_lines
from dinosr.errors import CheckpointError, ConfigError, LabelError
from dinosr.model.ctc import DinoSRForCTC, ctc_loss_sum
from dinosr.train import distributed as dist
from dinosr.train.task import StepStats, Task

if TYPE_CHECKING:
    from dinosr.data.manifest import ManifestEntry
    from dinosr.model.dinosr import DinoSR
    from dinosr.train.finetune_config import FinetuneConfig

log = logging.getLogger(__name__)

ENCODER_GROUP, HEAD_GROUP = "encoder", "head"
EXPORT_DIR = "model"  # RUN/model: the dinosr-ctc directory written from the best checkpoint


@dataclasses.dataclass(kw_only=True)
class CTCStats(StepStats):
    """Sums of one fine-tuning step (per micro-batch, then over micro-batches and ranks)."""

    loss_sum: Tensor | float  # CTC loss summed over sentences (nats)
    utterances: float  # the normaliser
    frames: float  # valid encoder frames
    tokens: float  # target labels
    audio_samples: float

    def total_loss(self) -> float:
        return float(self.loss_sum)

    def normaliser(self) -> float:
        return float(self.utterances)

    def result(self) -> dict[str, Any]:
        return {
            "loss_sum": float(self.loss_sum),
            "utterances": int(self.utterances),
            "frames": int(self.frames),
            "tokens": int(self.tokens),
            "audio_samples": int(self.audio_samples),
            "bad_files": int(self.bad_files),
        }


def ltr_to_words(line: str) -> str:
    """``"H I | Y O U |"`` -> ``"HI YOU"`` (the reference text of a ``.ltr`` line)."""
    return " ".join("".join(line.split()).replace("|", " ").split())


def train_manifest_path(cfg: FinetuneConfig) -> Path:
    if cfg.data.manifest:
        return Path(cfg.data.manifest)
    from dinosr.data.corpus import bundled_corpus

    return Path(bundled_corpus()) / "train.tsv"


def valid_manifest_path(cfg: FinetuneConfig) -> Path | None:
    """``data.valid_manifest``; else the bundled valid split (bundled training data) or ``valid.tsv``
    beside the train manifest when it exists; None = no validation."""
    if cfg.data.valid_manifest:
        return Path(cfg.data.valid_manifest)
    beside = train_manifest_path(cfg).with_name("valid.tsv")
    return beside if beside.is_file() else None


def load_init(cfg: FinetuneConfig) -> tuple[FinetuneConfig, DinoSR | None]:
    """The run config with its ``[model]`` resolved, and the pretrained model to start from (None when
    ``finetune.from_scratch``). Checks that the input normalisation equals the pretraining run's."""
    from dinosr.train.finetune_config import pretraining_normalize, resolve_model

    ft = cfg.finetune
    if ft.from_scratch:
        return resolve_model(cfg, cfg.model), None
    if not ft.init:
        raise ConfigError(
            "nothing to fine-tune: give the pretrained model (--init PATH / finetune.init) or "
            "--from-scratch (finetune.from_scratch = true)"
        )
    from dinosr.interop.pretrained import load_model

    model = load_model(ft.init)  # CheckpointError naming the file
    normalize = pretraining_normalize(ft.init)
    if normalize is not None and normalize != cfg.data.normalize:
        raise ConfigError(
            f"data.normalize = {cfg.data.normalize} but {ft.init} was pretrained with normalize = "
            f"{normalize}: fine-tuning input must be normalised as in pretraining"
        )
    if model.cfg != cfg.model and cfg.model != type(cfg.model)():
        log.info("the model architecture comes from %s; the config's [model] section is not used", ft.init)
    return resolve_model(cfg, model.cfg), model


class CTCTask(Task):
    """CTC fine-tuning of a DinoSR student (``FinetuneConfig``); see the module docstring."""

    best_metric = ("wer", "min")

    def __init__(self, config: FinetuneConfig, *, init_model: DinoSR | None = None) -> None:
        """Args:
        config: the resolved run config (:func:`load_init`).
        init_model: the pretrained DinoSR (``load_init``); loaded from ``finetune.init`` when None.
        """
        from dinosr.data.manifest import read_manifest

        self.cfg = config
        self.best_metric = (config.finetune.best_metric, "min")
        self.init_model = init_model
        self.freeze_updates = config.finetune.freeze_finetune_updates
        self.train_manifest = train_manifest_path(config)
        self.entries = read_manifest(self.train_manifest)
        self.dictionary = self._dictionary()
        labels = load_labels(self.train_manifest, self.dictionary, ext=config.finetune.labels)
        self.labels = _labels_by_name(self.entries, labels, self.train_manifest)
        self.valid = self._valid_split()
        lengths = [e.num_samples for e in self.entries]
        # About the utterances of one micro-batch (a fixed constant, see Task.loss_norm).
        mean = sum(lengths) / max(len(lengths), 1)
        self.loss_norm = max(1.0, float(min(config.data.max_tokens // max(int(mean), 1), len(lengths))))

    # ------------------------------------------------------------------ set-up
    def _dictionary(self) -> Dictionary:
        """``finetune.dictionary``, else ``dict.ltr.txt`` beside the train manifest, else the run's own
        (a resumed run), else built from the training letters; saved into the run directory."""
        ft, run_dir = self.cfg.finetune, Path(self.cfg.run.workdir)
        if ft.dictionary:
            dictionary = Dictionary.load(ft.dictionary)  # LabelError names a missing file
        elif (self.train_manifest.parent / DICT_NAME).is_file():
            dictionary = Dictionary.load(self.train_manifest.parent / DICT_NAME)
        elif (run_dir / DICT_NAME).is_file():
            dictionary = Dictionary.load(run_dir / DICT_NAME)
        else:
            letters = labels_path(self.train_manifest, ft.labels)
            dictionary = Dictionary.build(read_label_lines(letters))
            log.info("built the dictionary from %s: %s", letters, dictionary)
        if dist.rank() == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            dictionary.save(run_dir / DICT_NAME)
        return dictionary

    def _valid_split(self) -> tuple[list[ManifestEntry], list[str]] | None:
        from dinosr.data.manifest import read_manifest

        path = valid_manifest_path(self.cfg)
        if path is None:
            log.warning("no validation split (data.valid_manifest, or valid.tsv beside the train manifest)")
            return None
        entries = read_manifest(path)
        label_file = labels_path(path, self.cfg.finetune.labels)
        lines = read_label_lines(label_file)
        if len(lines) != len(entries):
            raise LabelError(
                f"{label_file}: {len(lines)} lines but the manifest {path} has {len(entries)} entries"
            )
        return entries, [ltr_to_words(line) for line in lines]

    # ------------------------------------------------------------------ the Task interface
    def build_model(self) -> nn.Module:
        cfg = self.cfg
        vocab = len(self.dictionary)
        if cfg.finetune.from_scratch:
            return DinoSRForCTC(cfg.model, vocab, cfg.ctc)
        init = self.init_model
        if init is None:
            from dinosr.interop.pretrained import load_model

            init = load_model(cfg.finetune.init)
        self.init_model = None  # the teacher and codebooks are not needed any more
        return DinoSRForCTC.from_dinosr(init, vocab, cfg.ctc)

    def build_loader(self, *, rank: int, world_size: int) -> Any:
        """Padded batches of whole utterances; longer than the batch budget / max_sample_size: left out."""
        from dinosr.data.loader import build_train_loader, training_length

        data = self.cfg.data
        limit = min(data.max_sample_size, data.max_tokens)
        kept = [e for e in self.entries if training_length(e, data.sample_rate, data.manifest_rate) <= limit]
        if len(kept) < len(self.entries):
            log.warning(
                "left out %d of %d training utterances longer than %d samples (data.max_sample_size / "
                "data.max_tokens): fine-tuning never crops a transcribed utterance",
                len(self.entries) - len(kept),
                len(self.entries),
                limit,
            )
        if not kept:
            raise ConfigError(f"every utterance of {self.train_manifest} is longer than {limit} samples")
        return build_train_loader(data, kept, rank=rank, world_size=world_size, seed=self.cfg.run.seed)

    def describe(self, world_size: int) -> str:
        data, run = self.cfg.data, self.cfg.run
        seconds = data.max_tokens * run.grad_accum * world_size / data.sample_rate
        return (
            f"fine-tuning: {len(self.labels)} labelled utterances, {len(self.dictionary)} output symbols, "
            f"at most {seconds:.0f} s of audio per update ({world_size} x {run.grad_accum} micro-batches); "
            f"encoder frozen for {self.freeze_updates} updates"
        )

    def param_groups(self, model: nn.Module, step: int) -> list[dict[str, Any]]:
        """Head only before ``freeze_finetune_updates``, then encoder + head; never the front end."""
        groups = {g["name"]: g for g in model.param_groups()}
        if step < self.freeze_updates:
            return [groups[HEAD_GROUP]]
        return [groups[ENCODER_GROUP], groups[HEAD_GROUP]]

    def find_unused_parameters(self, model: nn.Module) -> bool:
        # LayerDrop skips layers; without time masking the mask embedding gets no gradient.
        return self.cfg.ctc.layerdrop > 0 or self.cfg.ctc.mask_prob == 0

    def forward(
        self, model: nn.Module, batch: Any, *, step: int, mask: Tensor | None = None
    ) -> tuple[Tensor, CTCStats]:
        if mask is not None:
            raise ValueError("CTCTask samples its own time/channel masks (ctc.mask_prob); no mask override")
        targets = [self.labels[name] for name in batch.names]
        waveforms, lengths = batch.waveforms, batch.lengths
        if self.cfg.data.speed_perturb:
            from dinosr.data.augment import speed_perturb

            low, high = self.cfg.data.speed_perturb
            rate = self.cfg.data.sample_rate
            waveforms, lengths = speed_perturb(waveforms, lengths, (low, high), sample_rate=rate)
        out = model(waveforms, lengths, freeze_encoder=step < self.freeze_updates)
        loss = ctc_loss_sum(out.logits, out.frame_lengths, targets, blank=self.dictionary.blank)
        stats = CTCStats(
            loss_sum=loss.detach().double(),
            utterances=float(len(targets)),
            frames=float(out.frame_lengths.sum()),
            tokens=float(sum(len(t) for t in targets)),
            audio_samples=float(lengths.sum()),
        )
        return loss, stats

    def metrics(self, model: nn.Module, stats: CTCStats, *, steps: int, seconds: float, step: int) -> dict:
        steps = max(steps, 1)
        sample_rate = self.cfg.data.sample_rate
        utterances = max(float(stats.utterances), 1.0)
        audio = float(stats.audio_samples) / sample_rate
        return {
            "loss": float(stats.loss_sum) / utterances,  # per sentence (nats), what is optimised
            "loss_per_token": float(stats.loss_sum) / max(float(stats.tokens), 1.0),
            "utterances_per_step": float(stats.utterances) / steps,
            "tokens_per_step": float(stats.tokens) / steps,
            "frames_per_step": float(stats.frames) / steps,
            "batch_seconds": audio / steps,
            "audio_seconds_per_second": audio / max(seconds, 1e-9),
            "bad_files": int(stats.bad_files),
            "encoder_frozen": step < self.freeze_updates,
        }

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Greedy-decoded WER/CER (percent) of the valid split; identical on every rank."""
        if self.valid is None:
            return {}
        from dinosr.asr.decode import greedy_decode
        from dinosr.asr.scoring import score
        from dinosr.data.sampler import pack_by_length

        entries, refs = self.valid
        data = self.cfg.data
        budget = int(self.cfg.finetune.valid_batch_seconds * data.sample_rate)
        batches = pack_by_length([e.num_samples for e in entries], budget)
        rank, world = dist.rank(), dist.world_size()
        device = model.head.weight.device
        hyps: dict[int, str] = {}
        for batch in batches[rank::world]:
            wav, lengths = _load_padded([entries[i] for i in batch], data)
            out = model(wav.to(device), lengths.to(device), apply_mask=False)
            for i, text in zip(batch, greedy_decode(out.logits.float(), out.frame_lengths, self.dictionary)):
                hyps[i] = text
        for part in dist.all_gather_object(hyps) if world > 1 else [hyps]:
            hyps.update(part)
        ordered = [hyps[i] for i in range(len(entries))]
        result = score(refs, ordered)
        if dist.rank() == 0 and entries:
            log.info("valid example %s: REF %r HYP %r", entries[0].name, refs[0], ordered[0])
        return {"wer": result.wer, "cer": result.cer}

    def write_valid_references(self, path: str | Path) -> Path | None:
        """``utt<TAB>words`` of the valid split (what ``dinosr wer REF HYP`` reads); None without one."""
        if self.valid is None:
            return None
        from dinosr.fileio import atomic_write

        entries, refs = self.valid
        with atomic_write(Path(path), binary=False) as f:
            f.write("".join(f"{e.name}\t{ref}\n" for e, ref in zip(entries, refs)))
        return Path(path)

    def checkpoint_extras(self) -> dict[str, Any]:
        return {"dictionary": list(self.dictionary.symbols)}

    def load_checkpoint_extras(self, state: dict[str, Any]) -> None:
        saved = state.get("dictionary")
        if saved is not None and list(saved) != list(self.dictionary.symbols):
            raise CheckpointError(
                f"{self.cfg.run.workdir}: the checkpoint's dictionary {saved} differs from this run's "
                f"{self.dictionary.symbols}; use the same labels and dict.ltr.txt, or another run.workdir"
            )


def _labels_by_name(
    entries: Sequence[ManifestEntry], labels: list[list[int]], manifest: Path
) -> dict[str, list[int]]:
    """``{utterance name: label ids}``; batches carry names, so a repeated name is an error."""
    by_name: dict[str, list[int]] = {}
    for number, (entry, ids) in enumerate(zip(entries, labels), start=1):
        if entry.name in by_name:
            raise LabelError(
                f"{manifest}: utterance name {entry.name!r} appears twice (again at entry {number}); "
                "fine-tuning looks transcripts up by the audio file's stem, which must be unique"
            )
        by_name[entry.name] = ids
    return by_name


def _load_padded(entries: Sequence[ManifestEntry], data: Any) -> tuple[Tensor, Tensor]:
    """Decode and standardise ``entries`` as the training loader does; zero-padded (B, L) and lengths."""
    from dinosr.data.audio import load_audio

    wavs = [
        torch.from_numpy(
            load_audio(
                e.path,
                sample_rate=data.sample_rate,
                resample_audio=data.resample,
                normalize=data.normalize,
                expected_samples=e.num_samples,
            )
        )
        for e in entries
    ]
    lengths = torch.tensor([len(w) for w in wavs], dtype=torch.long)
    out = torch.zeros(len(wavs), int(lengths.max()))
    for row, w in zip(out, wavs):
        row[: len(w)] = w
    return out, lengths


def export_model(run_dir: str | Path) -> Path:
    """Write ``RUN/model`` (a dinosr-ctc directory) from ``checkpoints/best.pt`` (else the newest), with the
    dictionary stored in that checkpoint."""
    from dinosr.interop.ctc_pretrained import load_ctc_model, save_ctc_model

    model, dictionary = load_ctc_model(run_dir)
    path = save_ctc_model(model, dictionary, Path(run_dir) / EXPORT_DIR)
    log.info("exported the fine-tuned model to %s", path)
    return path
