"""Top-k by dot product: the running top-k and the blocked GEMM equal a brute force, ties to the smaller id."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from user_spark.ops.blocks import sort_by_id, unit_rows
from user_spark.ops.topk import RunningTopK, block_topk


def brute_topk(lids, left, rids, right, k, min_score=None, exclude=False):
    out = []
    scores = left @ right.T
    for i, lid in enumerate(lids):
        cand = [
            (-scores[i, j], rids[j])
            for j in range(len(rids))
            if not (exclude and rids[j] == lid) and (min_score is None or scores[i, j] >= min_score)
        ]
        out += [(lid, rid, -neg) for neg, rid in sorted(cand)[:k]]
    return out


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 30),
    m=st.integers(1, 40),
    k=st.integers(1, 12),
    seed=st.integers(0, 10_000),
    chunk=st.sampled_from([1, 3, 1024]),
    cols=st.sampled_from([1, 2, 5, 4096]),
    min_score=st.sampled_from([None, 0.0, 1.0]),
    exclude=st.booleans(),
)
def test_block_topk_equals_brute_force_with_ties_by_id(n, m, k, seed, chunk, cols, min_score, exclude):
    rng = np.random.default_rng(seed)
    # small integer vectors: exact dot products (any GEMM order) and many equal scores
    left = rng.integers(-1, 2, (n, 4)).astype(np.float32)
    right = rng.integers(-1, 2, (m, 4)).astype(np.float32)
    lids = rng.permutation(60)[:n]  # the left side in any order
    rids, right = sort_by_id(rng.permutation(60)[:m], right)
    got = block_topk(lids, left, rids, right, k, min_score=min_score, exclude_same_id=exclude, chunk_rows=chunk,
                     block_cols=cols)
    ref = sorted(brute_topk(lids, left, rids, right, k, min_score, exclude), key=lambda t: list(lids).index(t[0]))
    assert [(a, b) for a, b, _ in ref] == list(zip(got[0].tolist(), got[1].tolist(), strict=True))
    np.testing.assert_allclose(got[2], [s for *_, s in ref], atol=1e-6)


def test_block_topk_does_not_depend_on_block_boundaries_on_real_sized_vectors():
    rng = np.random.default_rng(3)
    x = unit_rows(rng.standard_normal((300, 64)))
    ids = np.arange(300)
    whole = block_topk(ids, x, ids, x, 7, exclude_same_id=True, chunk_rows=300, block_cols=300)
    cut = block_topk(ids, x, ids, x, 7, exclude_same_id=True, chunk_rows=37, block_cols=23)
    assert np.array_equal(whole[0], cut[0]) and np.array_equal(whole[1], cut[1])
    np.testing.assert_allclose(whole[2], cut[2], atol=1e-6)  # a GEMM's last bit depends on its shape
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    assert np.array_equal(whole[1].reshape(300, 7)[:, 0], sims.argmax(axis=1))


def test_running_topk_over_row_subsets_merges_like_one_block():
    """The IVF use: each block scores only the rows that probe a list, against that list's columns."""
    rng = np.random.default_rng(9)
    scores = rng.standard_normal((20, 50)).astype(np.float32)
    top = RunningTopK(20, 4)
    lists = [np.arange(0, 50, 3), np.arange(1, 50, 3), np.arange(2, 50, 3)]
    for cols in lists:
        rows = np.flatnonzero(rng.random(20) < 0.7)
        top.update(scores[np.ix_(rows, cols)], cols, rows)
        seen = np.full_like(scores, -np.inf) if cols is lists[0] else seen  # noqa: F821
        seen[np.ix_(rows, cols)] = scores[np.ix_(rows, cols)]
    rows, cols, vals = top.result()
    for r in range(20):
        want = [c for c in np.argsort(-seen[r], kind="stable")[:4] if seen[r, c] > -np.inf]
        assert cols[rows == r].tolist() == want
        assert np.array_equal(vals[rows == r], seen[r, want])


def test_string_ids_work_in_block_math():
    x = unit_rows(np.eye(3, dtype=np.float32))
    ids, x = sort_by_id(np.array(["c", "a", "b"], dtype=object), x)
    got = block_topk(ids, x, ids, x, 1, exclude_same_id=True)
    assert got[0].tolist() == ["a", "b", "c"] and got[2].tolist() == [0.0, 0.0, 0.0]
    assert got[1].tolist() == ["b", "a", "a"]  # all ties: smallest other id


def test_running_topk_refuses_k_below_one():
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        RunningTopK(3, 0)


def test_ivf_scan_equals_brute_force_over_the_probed_lists():
    from user_spark.ops.ivf import ListIndex, scan_lists

    rng = np.random.default_rng(4)
    right = unit_rows(rng.standard_normal((120, 8)))
    lists = rng.integers(0, 6, 120)
    left = unit_rows(rng.standard_normal((30, 8)))
    probes = np.stack([rng.choice(6, 2, replace=False) for _ in range(30)])
    index = ListIndex(lists)
    rows, cols, scores = scan_lists(left, probes, right[index.order], index, 3, chunk_rows=7)
    sims = left @ right.T
    for i in range(30):
        allowed = np.flatnonzero(np.isin(lists, probes[i]))
        want = allowed[np.lexsort((allowed, -sims[i, allowed]))][:3]
        assert cols[rows == i].tolist() == want.tolist()
        np.testing.assert_allclose(scores[rows == i], sims[i, want], atol=1e-6)


def test_ivf_scan_leaves_out_the_own_id_and_unprobed_lists():
    from user_spark.ops.ivf import ListIndex, scan_lists

    x = unit_rows(np.eye(4, dtype=np.float32) + 0.1)
    index = ListIndex(np.array([0, 0, 1, 1]))
    ids = np.array([10, 11, 12, 13])
    probes = np.array([[0, -1], [1, 0], [5, -1], [1, -1]])  # -1 and 5: no such list
    rows, cols, _ = scan_lists(x, probes, x[index.order], index, 2, exclude=(ids, ids))
    got = {r: cols[rows == r].tolist() for r in range(4)}
    assert got[0] == [1] and 1 not in got[1] and len(got[1]) == 2 and 2 not in rows and got[3] == [2]
