"""Audio manifests: fairseq TSV, CSV and JSONL readers/writers; the directory scan behind `dinosr manifest`.

Formats (the format is chosen by the file suffix: ``.tsv``, ``.csv``, ``.jsonl``):

* fairseq TSV (``wav2vec_manifest.py``): first line the root directory, then one
  ``relative/path<TAB>num_samples`` line per file. The utterance name is the file stem.
* CSV (spidr): header ``fileid,path,num_samples`` (an optional ``sample_rate`` column is kept).
* JSONL: one object per line with ``"name"`` (or ``"fileid"``), ``"path"``, ``"num_samples"``
  and optionally ``"sample_rate"``.

Relative paths in CSV/JSONL are resolved against the manifest's directory. ``num_samples`` is
the frame count in the file header (at the file's own rate), exactly like fairseq.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import logging
import os
import random
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import soundfile
from tqdm import tqdm

from dinosr.errors import ManifestError
from dinosr.fileio import atomic_write_text

log = logging.getLogger(__name__)

FORMATS = (".tsv", ".csv", ".jsonl")
# utf-8-sig: a byte-order mark written by some editors is dropped instead of becoming part of the root path.
_ENCODING = "utf-8-sig"


@dataclass(frozen=True)
class ManifestEntry:
    """One audio file of a manifest.

    Attributes:
        name: utterance id (the file stem for TSV manifests, ``fileid``/``name`` otherwise).
        path: absolute path of the audio file.
        num_samples: number of frames in the file (at the file's own sample rate).
        sample_rate: the file's rate when the manifest records it, else None (assumed = data.sample_rate).
    """

    name: str
    path: Path
    num_samples: int
    sample_rate: int | None = field(default=None, compare=False)


@dataclass
class ScanResult:
    """What `scan_directory` wrote: counts per split and the files it could not read."""

    num_train: int = 0
    num_valid: int = 0
    bad_files: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ManifestError(
            f"{path}: unknown manifest format {suffix!r} (expected one of {', '.join(FORMATS)})"
        )
    return suffix


def _parse_count(value: object, where: str) -> int:
    try:
        count = int(str(value).strip())
    except ValueError:
        raise ManifestError(f"{where}: num_samples {value!r} is not an integer") from None
    if count < 0:
        raise ManifestError(f"{where}: num_samples {count} is negative")
    return count


def _read_tsv(path: Path) -> list[ManifestEntry]:
    with open(path, encoding=_ENCODING) as f:
        lines = f.read().splitlines()
    if not lines or not lines[0].strip():
        raise ManifestError(f"{path}:1: a fairseq manifest starts with the root directory")
    root = Path(lines[0].strip())
    if not root.is_absolute():
        # A relative root (e.g. "." in the bundled corpus) is relative to the manifest itself,
        # so a corpus directory can be moved or installed anywhere.
        root = path.parent / root
    entries = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue  # tolerate a trailing blank line
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0]:
            raise ManifestError(f"{path}:{lineno}: expected 'relative/path<TAB>num_samples', got {line!r}")
        rel, count = fields
        entries.append(ManifestEntry(Path(rel).stem, root / rel, _parse_count(count, f"{path}:{lineno}")))
    return entries


def _resolve(base: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base / p


def _optional_rate(value: object, where: str) -> int | None:
    if value in (None, ""):
        return None
    return _parse_count(value, where) or None


def _read_csv(path: Path) -> list[ManifestEntry]:
    base = path.resolve().parent
    entries = []
    with open(path, encoding=_ENCODING, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"fileid", "path", "num_samples"} - set(reader.fieldnames or [])
        if missing:
            raise ManifestError(
                f"{path}:1: CSV header lacks {sorted(missing)} (need fileid,path,num_samples)"
            )
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row or any(row[k] is None for k in ("fileid", "path", "num_samples")):
                raise ManifestError(f"{where}: wrong number of columns")
            if not row["path"]:
                raise ManifestError(f"{where}: empty path")
            entries.append(
                ManifestEntry(
                    row["fileid"] or Path(row["path"]).stem,
                    _resolve(base, row["path"]),
                    _parse_count(row["num_samples"], where),
                    _optional_rate(row.get("sample_rate"), where),
                )
            )
    return entries


def _read_jsonl(path: Path) -> list[ManifestEntry]:
    base = path.resolve().parent
    entries = []
    with open(path, encoding=_ENCODING) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ManifestError(f"{where}: invalid JSON ({err.msg})") from None
            if not isinstance(obj, dict) or "path" not in obj or "num_samples" not in obj:
                raise ManifestError(f"{where}: expected an object with 'path' and 'num_samples'")
            name = obj.get("name", obj.get("fileid")) or Path(obj["path"]).stem
            entries.append(
                ManifestEntry(
                    str(name),
                    _resolve(base, str(obj["path"])),
                    _parse_count(obj["num_samples"], where),
                    _optional_rate(obj.get("sample_rate"), where),
                )
            )
    return entries


def read_manifest(path: str | os.PathLike) -> list[ManifestEntry]:
    """Read a fairseq TSV, CSV or JSONL manifest (chosen by suffix).

    Raises:
        ManifestError: malformed content, naming the file and line number.
    """
    path = Path(path)
    readers = {".tsv": _read_tsv, ".csv": _read_csv, ".jsonl": _read_jsonl}
    reader = readers[_format_of(path)]
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found")
    if path.is_dir():
        raise ManifestError(f"{path}: is a directory, not a manifest file")
    try:
        return reader(path)
    except UnicodeDecodeError:
        where = _first_non_utf8(path)
        raise ManifestError(f"{path}:{where}: not UTF-8 text; re-save the manifest as UTF-8") from None
    except OSError as err:
        raise ManifestError(f"{path}: cannot read the manifest ({err.strerror or err})") from None


def _first_non_utf8(path: Path) -> str:
    """``"<line>: byte 0x.."`` of the first byte that is not UTF-8 (text IO reports chunk offsets only)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        return f"{line}: byte 0x{data[err.start]:02x}"
    return "?"


def write_manifest(
    entries: Sequence[ManifestEntry], path: str | os.PathLike, *, root: str | os.PathLike | None = None
) -> None:
    """Write entries as a TSV, CSV or JSONL manifest (chosen by suffix).

    For TSV, paths are written relative to ``root`` (default: the common directory of all files);
    CSV and JSONL get absolute paths.
    """
    path = Path(path)
    fmt = _format_of(path)
    # Built in memory, then written atomically: overwriting a manifest never leaves half of one behind.
    text = io.StringIO()
    if fmt == ".tsv":
        if root is None:
            root = os.path.commonpath([str(e.path.parent) for e in entries]) if entries else os.getcwd()
        root = str(root)
        lines = [root] + [f"{os.path.relpath(e.path, root)}\t{e.num_samples}" for e in entries]
        text.write("\n".join(lines) + "\n")
    elif fmt == ".csv":
        writer = csv.writer(text, lineterminator="\n")
        with_rate = any(e.sample_rate for e in entries)
        writer.writerow(["fileid", "path", "num_samples"] + (["sample_rate"] if with_rate else []))
        for e in entries:
            row = [e.name, str(e.path), e.num_samples]
            writer.writerow(row + ([e.sample_rate or ""] if with_rate else []))
    else:
        for e in entries:
            obj = {"name": e.name, "path": str(e.path), "num_samples": e.num_samples}
            if e.sample_rate:
                obj["sample_rate"] = e.sample_rate
            text.write(json.dumps(obj) + "\n")
    atomic_write_text(path, text.getvalue())


# ----------------------------------------------------------------------------- directory scan


def _frames(path: str) -> int | str:
    """Frame count from the header, or the reason the file cannot be read (never raises)."""
    try:
        return soundfile.info(path).frames
    except Exception as err:
        return f"{type(err).__name__}: {err}"


def find_audio(root: str | os.PathLike, extensions: Iterable[str], *, must_contain: str = "") -> list[str]:
    """Audio files under ``root`` in fairseq's order: one recursive glob per extension, in glob order.

    Returns real paths, filtered by ``must_contain`` on the real path (``--path-must-contain``).
    """
    dir_path = os.path.realpath(root)
    found = []
    for ext in extensions:
        for fname in glob.iglob(os.path.join(dir_path, "**/*." + ext.lstrip(".")), recursive=True):
            file_path = os.path.realpath(fname)
            if must_contain and must_contain not in file_path:
                continue
            found.append(file_path)
    return found


def scan_directory(
    root: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    extensions: Sequence[str] = ("flac",),
    valid_percent: float = 0.01,
    seed: int = 42,
    must_contain: str = "",
    workers: int = 8,
    progress: bool = True,
) -> ScanResult:
    """Write fairseq ``train.tsv`` / ``valid.tsv`` for the audio under ``root`` (``wav2vec_manifest.py``).

    Same output as fairseq: root = realpath of ``root``; files in recursive-glob order; for each
    readable file, ``rng.random() > valid_percent`` (``rng = random.Random(seed)``) sends it to
    train, else to valid; ``valid.tsv`` only when ``valid_percent > 0``. Frame counts come from
    file headers, read by a thread pool. Deviation: an unreadable file is logged, listed in the
    result and skipped *without drawing a random number*, so the split equals fairseq's on the
    tree without that file (fairseq would crash).
    """
    if not 0.0 <= valid_percent <= 1.0:
        raise ValueError(f"valid_percent must be in [0, 1], got {valid_percent}")
    dir_path = os.path.realpath(root)
    files = find_audio(dir_path, extensions, must_contain=must_contain)
    os.makedirs(dest, exist_ok=True)
    rng = random.Random(seed)
    result = ScanResult()
    train_lines, valid_lines = [dir_path], [dir_path]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        frames = pool.map(_frames, files, chunksize=64)  # map keeps glob order
        for file_path, count in tqdm(
            zip(files, frames), total=len(files), desc="manifest", unit="file", disable=not progress
        ):
            if isinstance(count, str):
                log.warning("skipping unreadable audio %s (%s)", file_path, count)
                result.bad_files.append((file_path, count))
                continue
            line = f"{os.path.relpath(file_path, dir_path)}\t{count}"
            if rng.random() > valid_percent:
                train_lines.append(line)
            else:
                valid_lines.append(line)
    atomic_write_text(Path(dest, "train.tsv"), "\n".join(train_lines) + "\n")
    if valid_percent > 0:
        atomic_write_text(Path(dest, "valid.tsv"), "\n".join(valid_lines) + "\n")
    result.num_train, result.num_valid = len(train_lines) - 1, len(valid_lines) - 1
    return result
