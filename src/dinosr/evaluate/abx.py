"""Triphone ABX discriminability (ZeroSpeech 2021 / Libri-light protocol, ECOSYSTEM b.2), our own code.

Protocol, as implemented here:

* **Items**: one per phone occurrence that has a left and a right neighbour in its utterance:
  ``file onset offset phone prev-phone next-phone speaker`` (`.item` files, times in seconds).
  Context = (prev-phone, next-phone). Central phones in ``skip_phones`` (silence) are not items;
  silence may be a context.
* **Token**: frames i of the whole-utterance features whose centre ``t_i = step/2 + i*step`` lies in
  ``[onset, offset]`` (fixed slicing; Libri-light's original code also dropped the last frame).
  Items with no frame centre inside their interval are dropped.
* **Frame distance**: ``angular``: ``arccos(cos_sim) / pi`` on L2-normalised frames (Libri-light's
  "cosine"); ``unit``: for integer units, 0 if the units agree else 1, or ``unit_distance[u, v]`` from a
  user (K, K) matrix. One-hot vectors under the angular distance give 0 / 0.5, a constant multiple of
  the 0 / 1 distance, so ``unit`` and one-hot ``angular`` yield the same ABX error (tested).
* **Token distance**: DTW with moves (i-1, j-1), (i-1, j), (i, j-1), accumulated frame cost at the end
  cell divided by the number of cells on the optimal path. Ties between predecessors are broken
  diagonal first, then (i-1, j), then (i, j-1) -- the path-length tie rule matters only for the
  normalisation. Rows are the A or B token, columns the X token.
* **Groups and subsampling**: tokens are grouped by (phone, context, speaker); each group is cut to at
  most ``max_size_group`` random tokens once (seeded, groups visited in sorted order).
* **Cells**: within speaker: (A, B, context, speaker), a and x drawn from the same A group with
  a != x; across speaker: (A, B, context, speaker, x-speaker) with a, b from ``speaker`` and x of
  phone A from another speaker in the same context; at most ``max_x_across`` x-speakers are sampled per
  (A, B, context, speaker).
* **Score**: per cell, the fraction of triplets (a, b, x) with d(a, x) < d(b, x), ties count 1/2;
  error = 1 - score. Aggregation: mean over contexts, then over speakers (speaker pairs across), then
  over ordered phone pairs (A, B). Returned as a fraction; multiply by 100 for the usual percentage.

`abx` is the vectorised implementation: all token pairs needed by all cells are deduplicated, their
frame distances computed context by context as one matrix product per block of tokens, and the DTWs
run thousands of pairs at a time as an anti-diagonal dynamic programme over padded arrays.
`abx_bruteforce` is a plain-Python reference (one DTW per triplet member, explicit back-tracking).
Both compute in float64.

Why one module of ~600 lines: the protocol (items, tokens, cells, aggregation) is shared by the fast
implementation and its reference, and the tests compare the two; split apart, a change to the protocol
could reach one of them and not the other.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Literal

import numpy as np

from dinosr.fileio import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = [
    "ABXResult",
    "Item",
    "ItemFile",
    "NoABXCellsError",
    "abx",
    "abx_bruteforce",
    "abx_error",
    "dtw_batch",
    "items_from_alignments",
]

Mode = Literal["within", "across"]
Distance = Literal["angular", "unit"]

DEFAULT_SKIP_PHONES = frozenset({"sil", "SIL", "sp", "spn", "SPN", "<eps>", ""})
ITEM_HEADER = "#file onset offset #phone prev-phone next-phone speaker"


class NoABXCellsError(ValueError):
    """The items give no ABX cell in this mode (e.g. one speaker: nothing across speakers).

    A property of the data, not of the features scored: `dinosr evaluate` reports such a metric as
    null. Every other ``ValueError`` of this module means wrong input and must not be hidden.
    """


# ----------------------------------------------------------------------------------------------- items
@dataclass(frozen=True)
class Item:
    """One ABX item: a phone occurrence with its left/right context phones."""

    file: str
    onset: float
    offset: float
    phone: str
    prev: str
    next: str
    speaker: str


@dataclass
class ItemFile:
    """A list of `Item`s with the standard `.item` reader/writer."""

    items: list[Item] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    @classmethod
    def read(cls, path: str | Path) -> ItemFile:
        """Read ``#file onset offset #phone prev-phone next-phone speaker`` lines (header optional)."""
        items = []
        for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 7:
                raise ValueError(f"{path}:{lineno}: expected 7 fields, got {len(parts)}: {line!r}")
            f, on, off, ph, prev, nxt, spk = parts
            items.append(Item(f, float(on), float(off), ph, prev, nxt, spk))
        return cls(items)

    def write(self, path: str | Path) -> None:
        """Write the standard item file (header line, space-separated fields, times in seconds)."""
        lines = [ITEM_HEADER]
        lines += [
            f"{it.file} {_fmt(it.onset)} {_fmt(it.offset)} {it.phone} {it.prev} {it.next} {it.speaker}"
            for it in self.items
        ]
        atomic_write_text(path, "\n".join(lines) + "\n")  # overwriting an item file never half-writes it

    @classmethod
    def from_alignments_file(
        cls,
        path: str | Path,
        speakers: Mapping[str, str] | str | Path | None = None,
        *,
        frame_step: float | None = None,
        skip_phones: Iterable[str] = DEFAULT_SKIP_PHONES,
    ) -> ItemFile:
        """Build items from an alignment file read by `dinosr.data.alignments.read_alignments`.

        Args:
            path: ``utt<TAB>start<TAB>end<TAB>phone`` TSV (with header), frame-label TSV/JSONL
                (needs ``frame_step``), a TextGrid or a directory of them.
            speakers: utt -> speaker, a ``utt<TAB>speaker`` TSV (the corpus ``speakers.tsv``), or None
                (speaker = the utterance id up to its first ``-``, the LibriSpeech convention).
        """
        from dinosr.data.alignments import read_alignments
        from dinosr.data.speakers import read_speakers

        if isinstance(speakers, str | Path):
            speakers = read_speakers(speakers)
        return items_from_alignments(
            read_alignments(path, frame_step=frame_step), speakers, skip_phones=skip_phones
        )


def _fmt(x: float) -> str:
    return format(x, ".6f").rstrip("0").rstrip(".")


def items_from_alignments(
    alignments: Mapping[str, Sequence[tuple[float, float, str]]],
    speakers: Mapping[str, str] | None = None,
    *,
    skip_phones: Iterable[str] = DEFAULT_SKIP_PHONES,
) -> ItemFile:
    """Triphone items from phone segments.

    Args:
        alignments: utt -> [(start s, end s, phone), ...] (sorted here by start).
        speakers: utt -> speaker; None: the utterance id up to its first ``-``.
        skip_phones: central phones that never become items (silence, spoken noise).

    Returns:
        every phone with a left and right neighbour in its utterance, in utterance order.
    """
    skip = set(skip_phones)
    items = []
    for utt in sorted(alignments):
        segs = sorted(alignments[utt])
        spk = speakers[utt] if speakers is not None else utt.split("-")[0]
        for k in range(1, len(segs) - 1):
            start, end, phone = segs[k]
            if phone in skip:
                continue
            items.append(Item(utt, start, end, phone, segs[k - 1][2], segs[k + 1][2], spk))
    return ItemFile(items)


# ---------------------------------------------------------------------------------------------- tokens
def _frame_span(onset: float, offset: float, step: float, num_frames: int) -> tuple[int, int]:
    """[start, stop) of the frames whose centre step/2 + i*step lies in [onset, offset]."""
    # The 1e-6 guards against 0.05 / 0.02 = 2.0000000000000004 style float noise at the borders.
    start = max(0, math.ceil((onset - step / 2) / step - 1e-6))
    stop = min(num_frames, math.floor((offset - step / 2) / step + 1e-6) + 1)
    return start, max(start, stop)


@dataclass
class _Tokens:
    frames: np.ndarray  # (F, D) float L2-normalised, or (F,) int64 units
    start: np.ndarray  # (N,) first frame of each token in `frames`
    length: np.ndarray  # (N,) frames per token
    phone: np.ndarray  # (N,) int codes into phones
    context: np.ndarray  # (N,) int codes into contexts
    speaker: np.ndarray  # (N,) int codes into speakers
    phones: list[str]

    def token(self, k: int) -> np.ndarray:
        return self.frames[self.start[k] : self.start[k] + self.length[k]]


def _codes(values: list) -> tuple[np.ndarray, list]:
    names = sorted(set(values))
    index = {v: i for i, v in enumerate(names)}
    return np.array([index[v] for v in values], dtype=np.int64), names


def _make_tokens(
    features: Mapping[str, np.ndarray], items: Iterable[Item], distance: Distance, frame_step: float
) -> _Tokens:
    chunks, starts, lengths, kept = [], [], [], []
    offset = 0
    dropped = 0
    # Token ids ordered by context then speaker: the token pairs of one cell then sit close together
    # in (row, col) order, so each DTW chunk touches few distinct tokens (see `_pair_distances`).
    for it in sorted(items, key=lambda it: (it.prev, it.next, it.speaker, it.phone)):
        if it.file not in features:
            raise KeyError(f"no features for file {it.file!r} named in the item list")
        feats = np.asarray(features[it.file])
        a, b = _frame_span(it.onset, it.offset, frame_step, len(feats))
        if b <= a:
            dropped += 1
            continue
        tok = feats[a:b]
        if distance == "angular":
            if tok.ndim != 2:
                raise ValueError("angular distance needs (T, D) features; use distance='unit' for units")
            tok = tok.astype(np.float64)
            # Zero frames stay zero: cos = 0 with anything, distance 1/2.
            tok = tok / np.maximum(np.linalg.norm(tok, axis=1, keepdims=True), 1e-12)
        else:
            if tok.ndim != 1 or not np.issubdtype(tok.dtype, np.integer):
                raise ValueError("unit distance needs (T,) integer units per file")
            tok = tok.astype(np.int64)
        chunks.append(tok)
        starts.append(offset)
        lengths.append(len(tok))
        offset += len(tok)
        kept.append(it)
    if dropped:
        # Debug level: the count is the same for every system scored on one item list.
        logger.debug("ABX: dropped %d items with no frame centre inside [onset, offset]", dropped)
    if not kept:
        raise NoABXCellsError("no usable ABX items (no triphone with a frame centre inside it)")
    phone, phones = _codes([it.phone for it in kept])
    context, _ = _codes([(it.prev, it.next) for it in kept])
    speaker, _ = _codes([it.speaker for it in kept])
    return _Tokens(
        np.concatenate(chunks),
        np.array(starts, dtype=np.int64),
        np.array(lengths, dtype=np.int64),
        phone,
        context,
        speaker,
        phones,
    )


# ----------------------------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class _Cell:
    a: int  # phone codes
    b: int
    context: int
    speaker: int
    x_speaker: int  # == speaker within speaker
    a_ids: np.ndarray  # token indices
    b_ids: np.ndarray
    x_ids: np.ndarray


def _build_cells(
    tok: _Tokens, mode: Mode, max_size_group: int | None, max_x_across: int | None, seed: int
) -> list[_Cell]:
    """Group tokens by (phone, context, speaker), subsample the groups, enumerate the ABX cells."""
    if mode not in ("within", "across"):
        raise ValueError(f"mode must be 'within' or 'across', got {mode!r}")
    rng = np.random.default_rng(seed)
    groups: dict[tuple[int, int, int], list[int]] = defaultdict(list)
    for k in range(len(tok.phone)):
        groups[(int(tok.phone[k]), int(tok.context[k]), int(tok.speaker[k]))].append(k)
    sub: dict[tuple[int, int, int], np.ndarray] = {}
    for key in sorted(groups):
        ids = np.array(groups[key], dtype=np.int64)
        if max_size_group is not None and len(ids) > max_size_group:
            ids = np.sort(rng.choice(ids, size=max_size_group, replace=False))
        sub[key] = ids
    # context -> speaker -> phone -> ids, all in sorted order for determinism.
    by_ctx: dict[int, dict[int, dict[int, np.ndarray]]] = defaultdict(lambda: defaultdict(dict))
    for (p, c, s), ids in sub.items():
        by_ctx[c][s][p] = ids
    cells = []
    for c in sorted(by_ctx):
        spk = by_ctx[c]
        for s in sorted(spk):
            phones = sorted(spk[s])
            for a in phones:
                for b in phones:
                    if a == b:
                        continue
                    a_ids, b_ids = spk[s][a], spk[s][b]
                    if mode == "within":
                        if len(a_ids) >= 2:
                            cells.append(_Cell(a, b, c, s, s, a_ids, b_ids, a_ids))
                        continue
                    xs = [s2 for s2 in sorted(spk) if s2 != s and a in spk[s2]]
                    if max_x_across is not None and len(xs) > max_x_across:
                        xs = sorted(rng.choice(xs, size=max_x_across, replace=False).tolist())
                    cells.extend(_Cell(a, b, c, s, s2, a_ids, b_ids, spk[s2][a]) for s2 in xs)
    return cells


# ------------------------------------------------------------------------------------------------- DTW
def dtw_batch(dist: np.ndarray, n: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Path-length-normalised DTW for a batch of padded frame-distance matrices.

    Runs the dynamic programme along anti-diagonals, all pairs at once, tracking the length of the
    chosen path next to its cost (equal to back-tracking with the same tie rule: diagonal, then
    (i-1, j), then (i, j-1)). The batch is the last, contiguous axis, so every diagonal step is a
    handful of vector operations (numpy measured 4-5x faster than the same code in torch here).

    Args:
        dist: (B, N, M) frame distances; entries beyond each pair's (n, m) are ignored.
        n, m: (B,) true lengths (>= 1).

    Returns:
        (B,) float64: accumulated cost at (n-1, m-1) divided by the number of cells on the path.
    """
    bsz, rows, cols = dist.shape
    d = np.ascontiguousarray(np.moveaxis(np.asarray(dist, dtype=np.float64), 0, -1))  # (N, M, B)
    # One row/column of +inf in front; cost[0, 0] = 0 seeds cell (0, 0) through its "diagonal".
    cost = np.full((rows + 1, cols + 1, bsz), np.inf)
    cost[0, 0] = 0.0
    plen = np.zeros((rows + 1, cols + 1, bsz), dtype=np.int64)
    for s in range(rows + cols - 1):
        i = np.arange(max(0, s - cols + 1), min(s, rows - 1) + 1)
        j = s - i
        diag, up, left = cost[i, j], cost[i, j + 1], cost[i + 1, j]
        take_diag = (diag <= up) & (diag <= left)
        take_up = ~take_diag & (up <= left)
        best = np.where(take_diag, diag, np.where(take_up, up, left))
        blen = np.where(take_diag, plen[i, j], np.where(take_up, plen[i, j + 1], plen[i + 1, j]))
        cost[i + 1, j + 1] = d[i, j] + best
        plen[i + 1, j + 1] = blen + 1
    idx = np.arange(bsz)
    n, m = np.asarray(n), np.asarray(m)
    return cost[n, m, idx] / plen[n, m, idx]


def _pair_distances(
    tok: _Tokens,
    rows: np.ndarray,
    cols: np.ndarray,
    distance: Distance,
    unit_distance: np.ndarray | None,
    *,
    chunk: int = 8192,
    max_block: int = 1 << 21,
) -> np.ndarray:
    """DTW distance for each token pair (rows[k], cols[k]).

    Every pair a cell needs lies inside one context. Pairs are taken context by context (they come
    sorted by row token, and token ids are ordered by context): the frame distances between all frames
    of a group's row tokens and col tokens are one (F_r, F_c) block (one matmul + arccos, at most
    ``max_block`` entries), from which each pair's (n, m) matrix is gathered -- far cheaper than
    gathering (n, D) features per pair, since a token takes part in many pairs. The gathered matrices
    are padded and their DTWs run ``chunk`` pairs at a time.
    """
    out = np.empty(len(rows), dtype=np.float64)
    frames = tok.frames
    udist = None if unit_distance is None else np.asarray(unit_distance, dtype=np.float64)
    pending: list[tuple[np.ndarray, np.ndarray]] = []  # (pair indices, (b, n, m) matrices)

    def flush() -> None:
        idx = np.concatenate([p[0] for p in pending])
        n_max = max(p[1].shape[1] for p in pending)
        m_max = max(p[1].shape[2] for p in pending)
        batch = np.zeros((len(idx), n_max, m_max))
        pos = 0
        for _, dm in pending:
            batch[pos : pos + len(dm), : dm.shape[1], : dm.shape[2]] = dm
            pos += len(dm)
        out[idx] = dtw_batch(batch, tok.length[rows[idx]], tok.length[cols[idx]])
        pending.clear()

    ctx = tok.context[rows]
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(ctx)) + 1, [len(rows)]])
    todo = [(int(lo), int(hi)) for lo, hi in pairwise(bounds)][::-1]
    while todo:
        lo, hi = todo.pop()
        r, c = rows[lo:hi], cols[lo:hi]
        ur, r_inv = np.unique(r, return_inverse=True)
        uc, c_inv = np.unique(c, return_inverse=True)
        r_off = np.concatenate([[0], np.cumsum(tok.length[ur])])
        c_off = np.concatenate([[0], np.cumsum(tok.length[uc])])
        if r_off[-1] * c_off[-1] > max_block and hi - lo > 1:
            mid = (lo + hi) // 2
            todo += [(mid, hi), (lo, mid)]  # pop order keeps pairs in sequence
            continue
        fr = np.concatenate([np.arange(tok.start[k], tok.start[k] + tok.length[k]) for k in ur])
        fc = np.concatenate([np.arange(tok.start[k], tok.start[k] + tok.length[k]) for k in uc])
        if distance == "angular":
            block = np.arccos(np.clip(frames[fr] @ frames[fc].T, -1.0, 1.0)) / math.pi
        elif udist is None:
            block = (frames[fr][:, None] != frames[fc][None, :]).astype(np.float64)
        else:
            block = udist[frames[fr][:, None], frames[fc][None, :]]
        n, m = tok.length[r], tok.length[c]
        # Positions of each pair's frames inside the block, padded by repeating the last frame
        # (padding cells never reach the (n-1, m-1) end cell of the DP).
        ri = r_off[r_inv][:, None] + np.minimum(np.arange(n.max()), n[:, None] - 1)
        ci = c_off[c_inv][:, None] + np.minimum(np.arange(m.max()), m[:, None] - 1)
        pending.append((np.arange(lo, hi), block[ri[:, :, None], ci[:, None, :]]))
        if sum(len(p[0]) for p in pending) >= chunk:
            flush()
    if pending:
        flush()
    return out


# --------------------------------------------------------------------------------------------- scoring
@dataclass
class ABXResult:
    """ABX error (fraction) with its per-phone-pair breakdown."""

    error: float
    mode: str
    by_pair: dict[tuple[str, str], float]  # (A, B) -> error averaged over contexts and speakers
    num_cells: int
    num_tokens: int


def _aggregate(cells: list[_Cell], errors: np.ndarray, tok: _Tokens, mode: str) -> ABXResult:
    """Mean over contexts, then speakers, then (A, B) pairs."""
    by_spk: dict[tuple, list[float]] = defaultdict(list)
    for cell, err in zip(cells, errors):
        by_spk[(cell.a, cell.b, cell.speaker, cell.x_speaker)].append(float(err))
    by_pair_lists: dict[tuple[int, int], list[float]] = defaultdict(list)
    for (a, b, _s, _sx), errs in sorted(by_spk.items()):
        by_pair_lists[(a, b)].append(float(np.mean(errs)))
    by_pair = {(tok.phones[a], tok.phones[b]): float(np.mean(v)) for (a, b), v in by_pair_lists.items()}
    if not by_pair:
        raise NoABXCellsError(
            f"no ABX cells in {mode} mode: not enough items sharing context and speaker"
            + (" (across speakers needs at least two speakers)" if mode == "across" else "")
        )
    return ABXResult(float(np.mean(list(by_pair.values()))), mode, by_pair, len(cells), len(tok.phone))


def _check_distance(distance: str, unit_distance: np.ndarray | None) -> None:
    if distance not in ("angular", "unit"):
        raise ValueError(f"distance must be 'angular' or 'unit', got {distance!r}")
    if unit_distance is not None and distance != "unit":
        raise ValueError("unit_distance needs distance='unit'")


def abx(
    features: Mapping[str, np.ndarray],
    items: ItemFile | Sequence[Item],
    *,
    mode: Mode = "within",
    distance: Distance = "angular",
    unit_distance: np.ndarray | None = None,
    frame_step: float = 0.02,
    max_size_group: int | None = 10,
    max_x_across: int | None = 5,
    seed: int = 0,
) -> ABXResult:
    """Triphone ABX error of frame features or discrete units (vectorised; see the module docstring).

    Args:
        features: file id -> (T, D) float features (``angular``) or (T,) int units (``unit``),
            computed on whole utterances, frame i centred at ``frame_step/2 + i*frame_step``.
        items: the item list (`ItemFile.read`, `items_from_alignments`).
        mode: ``within`` or ``across`` speaker.
        distance: ``angular`` (arccos of cosine / pi) or ``unit`` (0/1, or ``unit_distance``).
        unit_distance: optional (K, K) unit-to-unit frame distance for ``unit``.
        frame_step: seconds per feature frame (0.02 for DinoSR).
        max_size_group: tokens kept per (phone, context, speaker) group (None: all).
        max_x_across: X speakers sampled per (A, B, context, speaker) in across mode (None: all).
        seed: subsampling seed.

    Returns:
        `ABXResult`; ``.error`` is a fraction in [0, 1].
    """
    _check_distance(distance, unit_distance)
    tok = _make_tokens(features, items, distance, frame_step)
    cells = _build_cells(tok, mode, max_size_group, max_x_across, seed)
    if not cells:
        return _aggregate(cells, np.zeros(0), tok, mode)
    # All (row, col) token pairs any cell needs, deduplicated: an A group's d(a, x) serves every B.
    n_tok = len(tok.phone)
    keys = np.concatenate(
        [(np.concatenate([c.a_ids, c.b_ids])[:, None] * n_tok + c.x_ids[None, :]).ravel() for c in cells]
    )
    keys = np.unique(keys)
    dist = _pair_distances(tok, keys // n_tok, keys % n_tok, distance, unit_distance)
    errors = np.empty(len(cells))
    for k, c in enumerate(cells):
        d_ax = dist[np.searchsorted(keys, c.a_ids[:, None] * n_tok + c.x_ids[None, :])]  # (na, nx)
        d_bx = dist[np.searchsorted(keys, c.b_ids[:, None] * n_tok + c.x_ids[None, :])]  # (nb, nx)
        win = (d_ax[:, None, :] < d_bx[None, :, :]) + 0.5 * (d_ax[:, None, :] == d_bx[None, :, :])
        if mode == "within":  # a and x come from the same group: drop the a == x triplets
            win = win[np.broadcast_to((c.a_ids[:, None] != c.x_ids[None, :])[:, None, :], win.shape)]
        errors[k] = 1.0 - win.mean()
    return _aggregate(cells, errors, tok, mode)


def abx_error(features: Mapping[str, np.ndarray], items: ItemFile | Sequence[Item], **kwargs) -> float:
    """`abx(...).error`: the ABX error rate as a fraction (keyword arguments as `abx`)."""
    return abx(features, items, **kwargs).error


# ------------------------------------------------------------------------------------------- reference
def _dtw_reference(dmat: list[list[float]]) -> float:
    """Textbook DTW with explicit back-tracking, for the tests and the benchmark."""
    n, m = len(dmat), len(dmat[0])
    cost = [[0.0] * m for _ in range(n)]
    for i in range(n):
        for j in range(m):
            if i == 0 and j == 0:
                cost[i][j] = dmat[i][j]
            elif i == 0:
                cost[i][j] = dmat[i][j] + cost[i][j - 1]
            elif j == 0:
                cost[i][j] = dmat[i][j] + cost[i - 1][j]
            else:
                cost[i][j] = dmat[i][j] + min(cost[i - 1][j - 1], cost[i - 1][j], cost[i][j - 1])
    i, j, length = n - 1, m - 1, 1
    while i > 0 or j > 0:
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            diag, up, left = cost[i - 1][j - 1], cost[i - 1][j], cost[i][j - 1]
            if diag <= up and diag <= left:
                i, j = i - 1, j - 1
            elif up <= left:
                i -= 1
            else:
                j -= 1
        length += 1
    return cost[n - 1][m - 1] / length


def _frame_distance_reference(u, v, distance: str, unit_distance) -> float:
    if distance == "angular":
        dot = sum(float(p) * float(q) for p, q in zip(u, v))
        return math.acos(max(-1.0, min(1.0, dot))) / math.pi
    if unit_distance is None:
        return 0.0 if int(u) == int(v) else 1.0
    return float(unit_distance[int(u), int(v)])


def abx_bruteforce(
    features: Mapping[str, np.ndarray],
    items: ItemFile | Sequence[Item],
    *,
    mode: Mode = "within",
    distance: Distance = "angular",
    unit_distance: np.ndarray | None = None,
    frame_step: float = 0.02,
    max_size_group: int | None = 10,
    max_x_across: int | None = 5,
    seed: int = 0,
) -> ABXResult:
    """Slow reference of `abx`: plain loops over triplets, one textbook DTW per distance.

    Shares only the token slicing and the seeded cell sampling with `abx`.
    """
    _check_distance(distance, unit_distance)
    tok = _make_tokens(features, items, distance, frame_step)
    cells = _build_cells(tok, mode, max_size_group, max_x_across, seed)

    def token_distance(p: int, q: int) -> float:
        tp, tq = tok.token(p).tolist(), tok.token(q).tolist()
        dmat = [[_frame_distance_reference(u, v, distance, unit_distance) for v in tq] for u in tp]
        return _dtw_reference(dmat)

    errors = []
    for c in cells:
        total, count = 0.0, 0
        for x in c.x_ids.tolist():
            for a in c.a_ids.tolist():
                if a == x:
                    continue
                d_ax = token_distance(a, x)
                for b in c.b_ids.tolist():
                    d_bx = token_distance(b, x)
                    total += 1.0 if d_ax < d_bx else 0.5 if d_ax == d_bx else 0.0
                    count += 1
        errors.append(1.0 - total / count)
    return _aggregate(cells, np.array(errors), tok, mode)
