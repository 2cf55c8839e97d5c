"""ABX: item files, slicing, DTW and the vectorised scorer against brute-force and hand-computed values."""

import numpy as np
import pytest

from dinosr.evaluate.abx import (
    ITEM_HEADER,
    Item,
    ItemFile,
    _dtw_reference,
    _frame_span,
    abx,
    abx_bruteforce,
    abx_error,
    dtw_batch,
    items_from_alignments,
)


def _random_corpus(seed, *, speakers=3, utts=3, phones="abcd", dim=6, num_units=5):
    """Random alignments (durations multiple of 20 ms), features and units per utterance."""
    rng = np.random.default_rng(seed)
    align, feats, units = {}, {}, {}
    for s in range(speakers):
        for u in range(utts):
            utt = f"spk{s}-{u}"
            t, segs = 0.0, []
            for _ in range(25):
                d = 0.02 * int(rng.integers(1, 6))
                segs.append((round(t, 2), round(t + d, 2), str(rng.choice(list(phones)))))
                t += d
            align[utt] = segs
            n = round(t / 0.02)
            feats[utt] = rng.normal(size=(n, dim))
            units[utt] = rng.integers(0, num_units, size=n)
    return items_from_alignments(align), feats, units


def test_item_file_round_trip(tmp_path):
    items = ItemFile(
        [Item("u1", 0.1, 0.25, "AH", "B", "SIL", "spk"), Item("u2", 1.0, 1.5, "K", "S", "T", "x")]
    )
    path = tmp_path / "dev.item"
    items.write(path)
    lines = path.read_text().splitlines()
    assert lines[0] == ITEM_HEADER == "#file onset offset #phone prev-phone next-phone speaker"
    assert lines[1] == "u1 0.1 0.25 AH B SIL spk"
    assert ItemFile.read(path).items == items.items


def test_items_from_alignments_and_tsv(tmp_path):
    segs = [
        (0.0, 0.1, "sil"),
        (0.1, 0.2, "a"),
        (0.2, 0.3, "b"),
        (0.3, 0.35, "sil"),
        (0.35, 0.5, "c"),
        (0.5, 0.6, "d"),
    ]
    items = items_from_alignments({"19-198-0001": segs})
    assert [(it.phone, it.prev, it.next, it.speaker) for it in items] == [
        ("a", "sil", "b", "19"),
        ("b", "a", "sil", "19"),
        ("c", "sil", "d", "19"),
    ]
    tsv = tmp_path / "alignments.tsv"
    tsv.write_text(
        "utt\tstart\tend\tphone\n" + "".join(f"utt1\t{s}\t{e}\t{p}\n" for s, e, p in reversed(segs))
    )
    spk = tmp_path / "speakers.tsv"
    spk.write_text("utt1\tanna\n")
    items2 = ItemFile.from_alignments_file(tsv, spk)
    assert [(it.onset, it.offset, it.phone, it.speaker) for it in items2] == [
        (0.1, 0.2, "a", "anna"),
        (0.2, 0.3, "b", "anna"),
        (0.35, 0.5, "c", "anna"),
    ]


def test_frame_span_uses_frame_centres():
    # 20 ms frames centred at 10, 30, 50, 70, 90 ms.
    assert _frame_span(0.0, 0.05, 0.02, 100) == (0, 3)
    assert _frame_span(0.05, 0.09, 0.02, 100) == (2, 5)
    assert _frame_span(0.011, 0.029, 0.02, 100) == (1, 1)  # no centre inside: empty
    assert _frame_span(0.05, 9.0, 0.02, 10) == (2, 10)  # clipped to the utterance


def test_dtw_hand_examples():
    d = np.array([[[0.0, 1.0], [1.0, 0.0]]])
    assert dtw_batch(d, np.array([2]), np.array([2]))[0] == 0.0  # diagonal path, 2 cells
    d = np.array([[[1.0, 2.0, 3.0]]])
    assert dtw_batch(d, np.array([1]), np.array([3]))[0] == pytest.approx(6 / 3)
    # 2x3: best path (0,0) (1,1) (1,2) costs 0 + 0 + 0 over 3 cells.
    d = np.array([[[0.0, 5.0, 5.0], [5.0, 0.0, 0.0]]])
    assert dtw_batch(d, np.array([2]), np.array([3]))[0] == 0.0
    assert _dtw_reference([[0.0, 5.0, 5.0], [5.0, 1.0, 1.0]]) == pytest.approx(2 / 3)


@pytest.mark.parametrize("ties", [False, True])
def test_dtw_batch_matches_reference_with_padding(ties):
    rng = np.random.default_rng(1 if ties else 2)
    bsz, rows, cols = 40, 7, 6
    # Small integer costs make many exact ties, which exercise the path-length tie rule.
    dist = rng.integers(0, 3, size=(bsz, rows, cols)).astype(float) if ties else rng.random((bsz, rows, cols))
    n = rng.integers(1, rows + 1, size=bsz)
    m = rng.integers(1, cols + 1, size=bsz)
    got = dtw_batch(dist, n, m)
    want = [_dtw_reference(dist[b, : n[b], : m[b]].tolist()) for b in range(bsz)]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", ["within", "across"])
@pytest.mark.parametrize("distance", ["angular", "unit", "matrix"])
def test_vectorised_equals_bruteforce(mode, distance):
    items, feats, units = _random_corpus(3)
    kw = {"mode": mode, "max_size_group": 3, "max_x_across": 1, "seed": 5}
    if distance == "angular":
        fast, slow = abx(feats, items, **kw), abx_bruteforce(feats, items, **kw)
    else:
        udist = None
        if distance == "matrix":
            rng = np.random.default_rng(0)
            udist = rng.integers(0, 4, size=(5, 5)).astype(float)  # asymmetric, tie-prone
        kw.update(distance="unit", unit_distance=udist)
        fast, slow = abx(units, items, **kw), abx_bruteforce(units, items, **kw)
    assert fast.num_cells == slow.num_cells > 20
    assert fast.error == slow.error
    assert fast.by_pair == slow.by_pair


def test_unit_distance_equals_one_hot_angular():
    items, _, units = _random_corpus(4)
    one_hot = {k: np.eye(5)[u] for k, u in units.items()}
    for mode in ("within", "across"):
        assert abx_error(units, items, mode=mode, distance="unit") == abx_error(one_hot, items, mode=mode)


def test_hand_computed_aggregation_order():
    # One-frame tokens of units; each token is its own file. Context/speaker layout:
    #   s1, c1: A=[0],[0], B=[1]   -> cell (A,B): error 0
    #   s1, c2: A=[0],[1], B=[1]   -> x=[0]: d(a,x)=1 = d(b,x)=1 tie (1/2); x=[1]: 1 > 0 wrong -> error 0.75
    #   s2, c1: A=[0],[0], B=[1],[1] -> cells (A,B) and (B,A): error 0
    # (A,B): s1 = mean(0, 0.75) = 0.375, s2 = 0 -> 0.1875; (B,A): 0 -> overall 0.09375.
    # (A flat mean over the 4 cells would give 0.1875, a mean over s1's cells first 0.25 for (A,B).)
    layout = [
        ("s1", ("x", "y"), "A", 0),
        ("s1", ("x", "y"), "A", 0),
        ("s1", ("x", "y"), "B", 1),
        ("s1", ("x", "z"), "A", 0),
        ("s1", ("x", "z"), "A", 1),
        ("s1", ("x", "z"), "B", 1),
        ("s2", ("x", "y"), "A", 0),
        ("s2", ("x", "y"), "A", 0),
        ("s2", ("x", "y"), "B", 1),
        ("s2", ("x", "y"), "B", 1),
    ]
    items, units = [], {}
    for k, (spk, (prev, nxt), phone, unit) in enumerate(layout):
        items.append(Item(f"f{k}", 0.0, 0.02, phone, prev, nxt, spk))
        units[f"f{k}"] = np.array([unit])
    res = abx(units, items, distance="unit", max_size_group=None)
    assert res.num_cells == 4
    assert res.by_pair == {("A", "B"): pytest.approx(0.1875), ("B", "A"): 0.0}
    assert res.error == pytest.approx(0.09375)
    assert abx_bruteforce(units, items, distance="unit", max_size_group=None).error == res.error


def test_separable_and_indistinguishable_phones():
    items, feats, _ = _random_corpus(6, phones="ab", dim=8)
    rng = np.random.default_rng(0)
    centres = {"a": rng.normal(size=8) * 5, "b": rng.normal(size=8) * 5}
    sep = {k: np.zeros_like(v) for k, v in feats.items()}
    for it in items:
        a, b = _frame_span(it.onset, it.offset, 0.02, len(sep[it.file]))
        sep[it.file][a:b] = centres[it.phone] + rng.normal(size=(b - a, 8)) * 0.1
    for mode in ("within", "across"):
        assert abx_error(sep, items, mode=mode) == 0.0
        noise = abx_error(feats, items, mode=mode, max_size_group=None)
        assert 0.35 < noise < 0.65


def test_subsampling_is_seeded_and_bounded():
    items, feats, _ = _random_corpus(7, speakers=5)
    r1 = abx(feats, items, mode="across", max_size_group=2, max_x_across=1, seed=3)
    r2 = abx(feats, items, mode="across", max_size_group=2, max_x_across=1, seed=3)
    full = abx(feats, items, mode="across", max_size_group=2, max_x_across=None, seed=3)
    assert r1.error == r2.error
    assert r1.num_cells < full.num_cells


def test_bad_inputs_raise():
    items, feats, units = _random_corpus(8)
    with pytest.raises(KeyError, match="no features"):
        abx({}, items)
    with pytest.raises(ValueError, match="distance='unit'"):
        abx(units, items)
    with pytest.raises(ValueError, match="mode"):
        abx(feats, items, mode="both")


def test_chunked_pair_distances_match_single_batch():
    from dinosr.evaluate.abx import _make_tokens, _pair_distances

    items, feats, _ = _random_corpus(9)
    tok = _make_tokens(feats, items, "angular", 0.02)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, len(tok.phone), size=300)
    cols = rng.integers(0, len(tok.phone), size=300)
    big = _pair_distances(tok, rows, cols, "angular", None)
    small = _pair_distances(tok, rows, cols, "angular", None, chunk=7, max_block=50)
    np.testing.assert_allclose(big, small, rtol=1e-12)  # matmul blocking changes only the last ulp
    ref = [
        _dtw_reference((np.arccos(np.clip(tok.token(r) @ tok.token(c).T, -1, 1)) / np.pi).tolist())
        for r, c in zip(rows[:30], cols[:30])
    ]
    np.testing.assert_allclose(big[:30], ref, rtol=1e-12)
