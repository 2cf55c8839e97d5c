"""Feature and unit extraction to disk: batched by length, resumable, tolerant of bad files.

Layout of ``OUT``::

    OUT/extract.json            settings of the run (a resumed run must use the same ones)
    OUT/layer{N}/<utt>.npy      (T, D) float32 features of layer N (libri-light / fastabx layout)
    OUT/units/<utt>.npy         (T,) int32 frame-level units (per-utterance, for resuming)
    OUT/<stem>.km               fairseq/HuBERT units, one line per manifest line (empty for a bad file)
    OUT/<stem>.units.jsonl      {"name", "units"[, "durations"]} per good utterance

Every file is written to a temporary name and renamed, so an interrupted run leaves no partial file
under a final name; a second run skips utterances whose files all exist *and* read back with the
expected dtype and shape (a file damaged since is extracted again, with a warning).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from dinosr.data.sampler import pack_by_length
from dinosr.errors import ExtractionError, ManifestError
from dinosr.fileio import atomic_write
from dinosr.inference import SAMPLE_RATE, deduplicate, extract_features, units
from dinosr.model.dinosr import DinoSR

log = logging.getLogger(__name__)

__all__ = ["ExtractSettings", "ExtractSummary", "entries_from_input", "run_extraction"]

AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "mp3")


@dataclass(frozen=True)
class ExtractSettings:
    """What to extract. ``layers`` empty = no features; ``units_layer`` None = no units."""

    layers: tuple[int, ...] = ()
    kind: str = "hidden"
    units_layer: int | None = None
    source: str = "codebook"
    dedup: bool = False
    teacher: bool = False
    chunk_seconds: float | None = 20.0
    context_seconds: float = 2.0


@dataclass
class ExtractSummary:
    """Counts of a run and the files that could not be read (``(name, error)``)."""

    done: int = 0
    skipped: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)
    km_path: Path | None = None
    jsonl_path: Path | None = None


def entries_from_input(path: str | os.PathLike) -> tuple[list, str]:
    """A manifest (.tsv/.csv/.jsonl) or a directory of audio -> (ManifestEntry list, output stem)."""
    import soundfile

    from dinosr.data.manifest import ManifestEntry, find_audio, read_manifest

    path = Path(path)
    if path.is_dir():
        files = sorted(find_audio(path, AUDIO_EXTENSIONS))
        entries = []
        for f in files:
            try:
                frames = soundfile.info(f).frames
            except Exception:  # unreadable: load_audio reports it by name during the run
                frames = 0
            entries.append(ManifestEntry(Path(f).stem, Path(f), frames))
        if not entries:
            raise ManifestError(f"{path}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this directory")
        return entries, "units"
    entries = read_manifest(path)
    if not entries:
        raise ManifestError(f"{path}: the manifest lists no utterances, nothing to extract")
    return entries, path.stem


def _save_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_write(path) as f:
        np.save(f, array)


def _finished(paths: list[Path], feature_dim: int, n_features: int) -> bool:
    """Whether every output of one utterance exists and reads back as a complete array of the right kind.

    ``paths``: the ``n_features`` feature files (T, feature_dim) float32, then optionally the units (T,)
    int32; all must agree on T. A file cut by a kill or a full disk fails ``np.load`` and is redone.
    """
    if not all(p.exists() for p in paths):
        return False
    frames = set()
    for k, p in enumerate(paths):
        try:
            a = np.load(p, mmap_mode="r")
        except (OSError, ValueError, EOFError) as err:
            log.warning("%s is damaged (%s): extracting it again", p, err)
            return False
        want = (np.float32, 2) if k < n_features else (np.int32, 1)
        if a.dtype != want[0] or a.ndim != want[1] or (k < n_features and a.shape[1] != feature_dim):
            log.warning("%s: dtype %s shape %s, not this extraction's: extracting again", p, a.dtype, a.shape)
            return False
        frames.add(a.shape[0])
    if len(frames) > 1:
        log.warning("outputs of %s disagree on the frame count %s: extracting again", paths[0].stem, frames)
        return False
    return True


def _outputs(out: Path, settings: ExtractSettings, name: str) -> list[Path]:
    paths = [out / f"layer{lay}" / f"{name}.npy" for lay in settings.layers]
    if settings.units_layer is not None:
        paths.append(out / "units" / f"{name}.npy")
    return paths


def _has_outputs(out: Path) -> bool:
    return any(out.glob("layer*/*.npy")) or any(out.glob("units/*.npy"))


def _check_settings(out: Path, settings: ExtractSettings) -> None:
    """``OUT/extract.json`` records the settings; a rerun must ask for the same ones."""
    record = out / "extract.json"
    wanted = json.loads(json.dumps(asdict(settings)))
    previous = None
    if record.exists():
        try:
            previous = json.loads(record.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
            if _has_outputs(out):  # it describes outputs we cannot check against: the user decides
                raise ExtractionError(
                    f"{record}: unreadable ({type(err).__name__}: {err}); it records the settings of the "
                    f"outputs in {out}: delete it to continue with the current settings, or use another OUT"
                ) from None
            log.warning("%s is unreadable and %s holds no output yet: rewriting it", record, out)
    if previous is not None and previous != wanted:
        raise ExtractionError(f"{out} holds an extraction with other settings {previous}; use another OUT")
    if previous is None:
        with atomic_write(record, binary=False) as f:
            f.write(json.dumps(wanted, indent=2) + "\n")


def _process_batch(
    model: DinoSR, wavs: list[np.ndarray], names: list[str], out: Path, s: ExtractSettings
) -> None:
    tensors = [torch.from_numpy(w) for w in wavs]
    if s.layers:
        feats, lengths = extract_features(
            model,
            tensors,
            layers=list(s.layers),
            kind=s.kind,
            teacher=s.teacher,
            chunk_seconds=s.chunk_seconds,
            context_seconds=s.context_seconds,
        )
        for lay, value in feats.items():
            value = value.cpu().numpy()
            for i, name in enumerate(names):
                _save_atomic(out / f"layer{lay}" / f"{name}.npy", value[i, : int(lengths[i])])
    if s.units_layer is not None:
        result = units(
            model,
            tensors,
            layer=s.units_layer,
            source=s.source,
            chunk_seconds=s.chunk_seconds,
            context_seconds=s.context_seconds,
        )
        for name, u in zip(names, result.units):
            _save_atomic(out / "units" / f"{name}.npy", u.numpy().astype(np.int32))


def _write_unit_files(
    out: Path, stem: str, entries: Sequence, bad: set[str], dedup: bool
) -> tuple[Path, Path]:
    """The manifest-aligned ``.km`` file and the JSONL, assembled from the per-utterance unit files."""
    km_path, jsonl_path = out / f"{stem}.km", out / f"{stem}.units.jsonl"
    with atomic_write(km_path, binary=False) as km, atomic_write(jsonl_path, binary=False) as js:
        for e in entries:
            path = out / "units" / f"{e.name}.npy"
            if e.name in bad or not path.exists():
                km.write("\n")  # keep the line alignment with the manifest
                continue
            u = np.load(path)
            km.write(" ".join(map(str, u.tolist())) + "\n")
            record: dict = {"name": e.name}
            if dedup:
                values, counts = deduplicate(torch.from_numpy(u))
                record.update(units=values.tolist(), durations=counts.tolist())
            else:
                record["units"] = u.tolist()
            js.write(json.dumps(record) + "\n")
    return km_path, jsonl_path


def run_extraction(
    model: DinoSR,
    entries: Sequence,
    out: str | os.PathLike,
    settings: ExtractSettings,
    *,
    stem: str = "units",
    batch_seconds: float = 100.0,
    skip_bad_files: bool = False,
    progress: bool = True,
) -> ExtractSummary:
    """Extract features and/or units of ``entries`` (``ManifestEntry``-like) into ``out``.

    Args:
        batch_seconds: padded audio per batch (B x longest utterance).
        skip_bad_files: log and skip unreadable audio (named in the summary); otherwise raise AudioError.
    """
    from tqdm import tqdm

    from dinosr.data.audio import load_model_inputs

    out = Path(out)
    if not entries:
        raise ExtractionError("nothing to extract: no utterances were given")
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings)
    for lay in settings.layers:
        (out / f"layer{lay}").mkdir(exist_ok=True)
    if settings.units_layer is not None:
        (out / "units").mkdir(exist_ok=True)
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:10]
        raise ManifestError(f"utterance names must be unique (output files are named by them): {dup}")

    summary = ExtractSummary()
    todo = []
    for i, e in enumerate(entries):
        if _finished(_outputs(out, settings, e.name), model.cfg.embed_dim, len(settings.layers)):
            summary.skipped += 1
        else:
            todo.append(i)
    if summary.skipped:
        log.info("skipping %d finished utterance(s)", summary.skipped)
    chunk = settings.chunk_seconds
    long_samples = None if chunk is None else int((chunk + 2 * settings.context_seconds) * SAMPLE_RATE)
    sub = [entries[i] for i in todo]
    min_samples = model.cfg.receptive_field
    bar = tqdm(total=len(sub), unit="utt", desc="extract", disable=not progress)
    lengths = [e.num_samples for e in sub]
    for batch in pack_by_length(lengths, int(batch_seconds * SAMPLE_RATE), alone_above=long_samples):
        wavs, batch_names = load_model_inputs(
            [sub[j] for j in batch], min_samples, skip_bad_files=skip_bad_files, bad=summary.bad
        )
        if wavs:
            _process_batch(model, wavs, batch_names, out, settings)
            summary.done += len(wavs)
        bar.update(len(batch))
    bar.close()
    if settings.units_layer is not None:
        bad = {n for n, _ in summary.bad}
        summary.km_path, summary.jsonl_path = _write_unit_files(out, stem, entries, bad, settings.dedup)
    if summary.bad:
        log.warning("%d bad file(s): %s", len(summary.bad), ", ".join(n for n, _ in summary.bad))
    return summary
