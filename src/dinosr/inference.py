"""Inference on trained models: per-layer features and discrete units, batched or in long-file chunks.

Conventions (also in every docstring below):

* Layers are numbered from 1 (transformer layer l); layer 0 is the transformer input (after the
  positional conv and the encoder LayerNorm).
* ``kind="hidden"``: the post-LN residual stream after layer l, what HF ``output_hidden_states`` and
  s3prl report. ``kind="ffn"``: layer l's FFN output before the residual (and before the final
  LayerNorm), the tensor DinoSR clusters (spidr's ``get_intermediate_outputs``).
* Waveforms are raw (any scale); each utterance is standardised over its own valid samples before
  padding (spec 3.1), so the model sees what it saw in training and padding changes nothing.
* Units: ``source="codebook"`` is the nearest codeword of the teacher-side codebook of that layer (the
  teacher's FFN output instance-normalised over the utterance, exactly the training target);
  ``source="head"`` is the argmax of the student's prediction head for that layer on unmasked input.
* Long utterances (> ``chunk_seconds`` + 2 x ``context_seconds``) are encoded in windows of
  ``chunk_seconds`` of kept frames with ``context_seconds`` of audio either side, cut at frame
  boundaries, so attention memory is bounded. The CNN frames are exact; the transformer sees only the
  window, so chunked features differ slightly from whole-file ones (see docs/usage.md for measured
  tolerances). Codebook units use the instance-norm statistics of the *whole* utterance (the teacher's
  FFN outputs of all chunks are gathered on the host first, T x D floats), as in training.

Shapes: B batch, L samples, T frames, D model dim.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from dinosr.model.dinosr import DinoSR, EncoderOutput

SAMPLE_RATE = 16000
STANDARDIZE_EPS = 1e-5  # fairseq F.layer_norm(wav, wav.shape) and dinosr.data.audio.standardize

__all__ = [
    "Features",
    "Units",
    "deduplicate",
    "extract_features",
    "hidden_states",
    "map_frames",
    "pad_waveforms",
    "standardize",
    "units",
]


class Features(NamedTuple):
    """Result of :func:`extract_features`.

    features: {layer number: (B, T, D) float32}; padded frames are zero.
    lengths: (B,) int64 valid frames per utterance.
    """

    features: dict[int, Tensor]
    lengths: Tensor


class Units(NamedTuple):
    """Result of :func:`units`: one int64 tensor per utterance (unpadded).

    units: list of (T_i,) unit ids (or (N_i,) run values when de-duplicated).
    durations: list of (N_i,) run lengths in frames when de-duplicated, else None.
    """

    units: list[Tensor]
    durations: list[Tensor] | None


WaveInput = Tensor | np.ndarray | Sequence[Tensor | np.ndarray]


def pad_waveforms(waveforms: WaveInput, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(L,), (B, L) or a list of (L_i,) -> zero-padded (B, L_max) float32 and (B,) int64 lengths."""
    if isinstance(waveforms, (Tensor, np.ndarray)):
        x = torch.as_tensor(waveforms, dtype=torch.float32)
        if x.dim() == 1:
            x = x[None]
        if x.dim() != 2:
            raise ValueError(f"expected (L,) or (B, L) waveforms, got shape {tuple(x.shape)}")
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
        return x, torch.as_tensor(lengths, dtype=torch.long).cpu()
    rows = [torch.as_tensor(w, dtype=torch.float32).reshape(-1) for w in waveforms]
    if not rows:
        raise ValueError("no waveforms given")
    lens = torch.tensor([len(r) for r in rows], dtype=torch.long)
    out = rows[0].new_zeros(len(rows), int(lens.max()))
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out, lens


def standardize(waveforms: Tensor, lengths: Tensor | None = None) -> Tensor:
    """Per utterance ``(x - mean) / sqrt(var + 1e-5)`` over its valid samples; padding stays zero.

    (B, L) -> (B, L) float32; statistics in float64 so long files keep their precision.
    """
    x = waveforms.double()
    if lengths is None:
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return ((x - mean) / torch.sqrt(var + STANDARDIZE_EPS)).float()
    valid = torch.arange(x.shape[1], device=x.device)[None] < lengths.to(x.device)[:, None]
    n = valid.sum(1, keepdim=True).clamp(min=1)
    mean = (x * valid).sum(1, keepdim=True) / n
    var = ((x - mean).square() * valid).sum(1, keepdim=True) / n
    return torch.where(valid, (x - mean) / torch.sqrt(var + STANDARDIZE_EPS), 0.0).float()


@contextmanager
def _eval_no_grad(model: DinoSR) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _windows(
    num_samples: int, num_frames: int, hop: int, field: int, chunk: int, context: int
) -> Iterator[tuple[int, int, int, int]]:
    """Chunk windows: (start sample, end sample, first kept frame, end kept frame) in window frames.

    Kept frames [a, b) of the whole file are frames [a - start / hop, b - start / hop) of the window
    because windows start on a hop boundary (the CNN has no padding, so those frames are exact).
    """
    chunk_frames, context_frames = max(1, chunk // hop), context // hop
    for a in range(0, num_frames, chunk_frames):
        b = min(num_frames, a + chunk_frames)
        first = max(0, a - context_frames)
        end = min(num_samples, (b - 1) * hop + field + context_frames * hop)
        yield first * hop, end, a - first, b - first


Picker = Callable[["EncoderOutput"], dict[int, Tensor]]


def map_frames(
    model: DinoSR,
    waveforms: Tensor,
    lengths: Tensor,
    encode: Callable[[Tensor, Tensor | None], EncoderOutput],
    pick: Picker,
    *,
    chunk_seconds: float | None,
    context_seconds: float,
) -> tuple[dict[int, Tensor], Tensor]:
    """Run ``pick(encode(wav, lengths))`` over a padded batch, chunking long rows.

    ``model`` needs only ``frame_lengths`` and ``cfg`` (hop, receptive field): a DinoSR or a DinoSRForCTC
    (``dinosr transcribe`` maps CTC logits through it).

    Returns {key: (B, T_max, ...)} on the model's device with zero padding, and (B,) frame lengths.
    """
    frame_lengths = model.frame_lengths(lengths)
    t_max = int(frame_lengths.max())
    hop, field = model.cfg.hop_length, model.cfg.receptive_field
    long_rows: list[int] = []
    if chunk_seconds is not None:
        chunk, context = int(chunk_seconds * SAMPLE_RATE), int(context_seconds * SAMPLE_RATE)
        long_rows = [i for i, n in enumerate(lengths.tolist()) if n > chunk + 2 * context]
    short_rows = [i for i in range(len(lengths)) if i not in long_rows]
    out: dict[int, Tensor] = {}

    def place(rows: list[int], values: dict[int, Tensor]) -> None:
        for key, v in values.items():
            if key not in out:
                out[key] = v.new_zeros(len(lengths), t_max, *v.shape[2:])
            t = min(v.shape[1], t_max)
            out[key][rows, :t] = v[:, :t]

    if short_rows:
        idx = torch.tensor(short_rows)
        sub_len = lengths[idx]
        sub = waveforms[idx.to(waveforms.device), : int(sub_len.max())]
        # lengths=None when nothing is padded keeps the mask-free path (same numbers, faster)
        padded = bool((sub_len < sub.shape[1]).any())
        place(short_rows, pick(encode(sub, sub_len if padded else None)))
    for i in long_rows:
        n, t = int(lengths[i]), int(frame_lengths[i])
        pieces: dict[int, list[Tensor]] = {}
        for start, end, keep_a, keep_b in _windows(n, t, hop, field, chunk, context):
            for key, v in pick(encode(waveforms[i : i + 1, start:end], None)).items():
                pieces.setdefault(key, []).append(v[:, keep_a:keep_b])
        place([i], {k: torch.cat(v, dim=1) for k, v in pieces.items()})
    # zero padded frames (their values depend on the batch's padding)
    valid = torch.arange(t_max, device=frame_lengths.device)[None] < frame_lengths[:, None]
    for key, v in out.items():
        mask = valid.to(v.device).view(*valid.shape, *([1] * (v.dim() - 2)))
        out[key] = v * mask
    return out, frame_lengths


def _resolve_layers(model: DinoSR, layers: int | Sequence[int] | None, kind: str) -> list[int]:
    num_layers, first = model.cfg.num_layers, 0 if kind == "hidden" else 1
    if kind not in ("hidden", "ffn"):
        raise ValueError(f"kind must be 'hidden' or 'ffn', got {kind!r}")
    if layers is None:
        return list(range(first, num_layers + 1))
    layers = [layers] if isinstance(layers, int) else [int(x) for x in layers]
    bad = [x for x in layers if not first <= x <= num_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range {first}..{num_layers} for kind={kind!r}")
    return layers


def _prepare(
    model: DinoSR, waveforms: WaveInput, lengths: Tensor | None, normalize: bool
) -> tuple[Tensor, Tensor]:
    wav, lens = pad_waveforms(waveforms, lengths)
    device = model.mask_embedding.device
    wav = wav.to(device)
    if normalize:
        wav = standardize(wav, lens)
    return wav, lens.to(device)


def hidden_states(
    model: DinoSR,
    waveforms: Tensor,
    lengths: Tensor | None,
    *,
    layers: Sequence[int],
    kind: Literal["hidden", "ffn"] = "hidden",
    teacher: bool = False,
    chunk_seconds: float | None = None,
    context_seconds: float = 2.0,
) -> tuple[dict[int, Tensor], Tensor]:
    """Features of standardised (B, L) waveforms in the model's current mode, with autograd.

    The building block of :func:`extract_features` (which adds standardisation, eval mode and no_grad)
    and of the s3prl upstream (which may fine-tune). Returns ({layer: (B, T, D)}, (B,) frame lengths).
    """
    if lengths is None:
        lengths = torch.full((waveforms.shape[0],), waveforms.shape[1], dtype=torch.long)
    max_layer = max(max(layers), 1)

    def encode(wav: Tensor, lens: Tensor | None) -> EncoderOutput:
        return model.encode(wav, lens, teacher=teacher, max_layer=max_layer)

    def pick(enc: EncoderOutput) -> dict[int, Tensor]:
        if kind == "hidden":
            return {lay: enc.layer_input if lay == 0 else enc.residuals[lay - 1] for lay in layers}
        missing = [lay for lay in layers if enc.ffn[lay - 1] is None]
        if missing:
            raise RuntimeError(f"layers {missing} were skipped by LayerDrop (call model.eval())")
        return {lay: enc.ffn[lay - 1] for lay in layers}

    return map_frames(
        model,
        waveforms,
        lengths.cpu(),
        encode,
        pick,
        chunk_seconds=chunk_seconds,
        context_seconds=context_seconds,
    )


def extract_features(
    model: DinoSR,
    waveforms: WaveInput,
    lengths: Tensor | None = None,
    *,
    layers: int | Sequence[int] | None = None,
    kind: Literal["hidden", "ffn"] = "hidden",
    teacher: bool = False,
    normalize: bool = True,
    chunk_seconds: float | None = 20.0,
    context_seconds: float = 2.0,
) -> Features:
    """Per-layer features (eval mode, no grad).

    Args:
        waveforms: (L,), (B, L) padded with ``lengths``, or a list of (L_i,) 16 kHz waveforms.
        lengths: (B,) valid samples per row of a padded (B, L) tensor.
        layers: layer numbers; 0 = transformer input (``kind="hidden"`` only), l = transformer layer l
            (1-based). Default: all.
        kind: "hidden" = post-LN residual stream (HF/s3prl), "ffn" = FFN output before the residual
            (the tensor DinoSR clusters).
        teacher: use the EMA teacher instead of the student.
        normalize: standardise each utterance (set False only for already standardised input).
        chunk_seconds: encode utterances longer than this (+ 2 x context) in chunks; None = whole file.
        context_seconds: audio either side of each chunk.
    Returns:
        :class:`Features`: {layer: (B, T, D)} and (B,) frame lengths.
    """
    layer_list = _resolve_layers(model, layers, kind)
    with _eval_no_grad(model):
        wav, lens = _prepare(model, waveforms, lengths, normalize)
        feats, frames = hidden_states(
            model,
            wav,
            lens,
            layers=layer_list,
            kind=kind,
            teacher=teacher,
            chunk_seconds=chunk_seconds,
            context_seconds=context_seconds,
        )
    return Features(feats, frames)


def deduplicate(units: Tensor) -> tuple[Tensor, Tensor]:
    """(T,) units -> (N,) values of consecutive runs and (N,) run lengths (GSLM-style)."""
    values, counts = torch.unique_consecutive(units, return_counts=True)
    return values, counts


def units(
    model: DinoSR,
    waveforms: WaveInput,
    lengths: Tensor | None = None,
    *,
    layer: int | None = None,
    source: Literal["codebook", "head"] = "codebook",
    dedup: bool = False,
    normalize: bool = True,
    chunk_seconds: float | None = 20.0,
    context_seconds: float = 2.0,
) -> Units:
    """Discrete units (eval mode, no grad).

    Args:
        waveforms, lengths, normalize, chunk_seconds, context_seconds: as in :func:`extract_features`.
        layer: 1-based transformer layer with a codebook (``model.cfg.codebook_layers``; default the
            first, layer 5 of the base model).
        source: "codebook" = nearest teacher-side codeword of that layer's codebook (instance-normalised
            teacher FFN output over the utterance, as in training); "head" = argmax of the student's
            prediction head for that layer on unmasked input.
        dedup: merge repeated consecutive units and return their durations in frames.
    Returns:
        :class:`Units` with one (T_i,) int64 tensor per utterance (and durations if ``dedup``).
    """
    from dinosr.model.codebook import nearest_codeword
    from dinosr.model.norm import instance_norm_frames

    cb_layers = model.cfg.codebook_layers
    layer = cb_layers[0] if layer is None else int(layer)
    if layer not in cb_layers:
        raise ValueError(f"layer {layer} has no codebook; codebook layers are {list(cb_layers)}")
    if source not in ("codebook", "head"):
        raise ValueError(f"source must be 'codebook' or 'head', got {source!r}")
    k = cb_layers.index(layer)
    with _eval_no_grad(model):
        wav, lens = _prepare(model, waveforms, lengths, normalize)
        if source == "codebook":
            ffn, frames = hidden_states(
                model,
                wav,
                lens,
                layers=[layer],
                kind="ffn",
                teacher=True,
                chunk_seconds=chunk_seconds,
                context_seconds=context_seconds,
            )
            valid = torch.arange(ffn[layer].shape[1], device=frames.device)[None] < frames[:, None]
            z = instance_norm_frames(ffn[layer], ~valid.to(ffn[layer].device))
            codes = nearest_codeword(z, model.codebooks.centroids()[k])  # as in training
        else:
            intermediate = model.cfg.head_placement == "intermediate"
            read = layer if intermediate else model.cfg.num_layers
            feats, frames = hidden_states(
                model,
                wav,
                lens,
                layers=[read],
                kind="ffn" if intermediate else "hidden",
                chunk_seconds=chunk_seconds,
                context_seconds=context_seconds,
            )
            codes = model.heads[k](feats[read]).argmax(-1)
    per_utt = [codes[i, : int(n)].cpu() for i, n in enumerate(frames.tolist())]
    if not dedup:
        return Units(per_utt, None)
    runs = [deduplicate(u) for u in per_utt]
    return Units([r[0] for r in runs], [r[1] for r in runs])
