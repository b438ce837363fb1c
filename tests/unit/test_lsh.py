"""Pure numpy logic of the jobs: LSH banding math, threshold pairs, IVF lists, text keys."""

from __future__ import annotations

import numpy as np
import pytest

from user_spark.ops.blocks import sort_by_id, unit_rows
from user_spark.ops.forest import threshold_pairs
from user_spark.ops.ivf import default_nlist, default_nprobe
from user_spark.ops.lsh import band_keys, candidate_probability, choose_bands, collision_probability, hyperplanes
from user_spark.ops.textnorm import normalize_text, text_key


def unit(rng, n, d):
    return unit_rows(rng.standard_normal((n, d)))


@pytest.mark.parametrize("threshold", [0.8, 0.85, 0.9, 0.92, 0.95, 0.98])
def test_chosen_bands_find_pairs_at_the_threshold_with_995_percent(threshold):
    bands, rows = choose_bands(threshold)
    assert bands <= 128
    assert candidate_probability(threshold, bands, rows) >= 0.995
    # the next wider band would need more than 128 bands
    assert candidate_probability(threshold, 128, rows + 1) < 0.995
    small_bands, small_rows = choose_bands(threshold, max_bands=64)
    assert (
        small_bands <= 64 and small_rows < rows and candidate_probability(threshold, small_bands, small_rows) >= 0.995
    )
    # many rows fill buckets faster: from 200k rows the cap is 192 bands, so the bands are at least as wide
    assert choose_bands(threshold, rows=199_999) == (bands, rows)
    many_bands, many_rows = choose_bands(threshold, rows=1_000_000)
    assert many_bands <= 192 and many_rows >= rows and candidate_probability(threshold, many_bands, many_rows) >= 0.995
    assert candidate_probability(threshold, 192, many_rows + 1) < 0.995


def test_collision_probability_matches_random_hyperplanes():
    rng = np.random.default_rng(0)
    d, planes = 48, hyperplanes(48, 4000, seed=3)
    a = unit(rng, 1, d)[0]
    noise = unit(rng, 1, d)[0]
    noise -= (noise @ a) * a
    noise /= np.linalg.norm(noise)
    b = 0.9 * a + np.sqrt(1 - 0.81) * noise  # cosine 0.9 exactly
    same = np.mean(((a @ planes) >= 0) == ((b @ planes) >= 0))
    assert abs(same - collision_probability(0.9)) < 0.02


def test_band_keys_equal_for_equal_vectors_and_seeded():
    rng = np.random.default_rng(1)
    x = unit(rng, 5, 16)
    planes = hyperplanes(16, 3 * 10, seed=9)
    keys = band_keys(np.vstack([x, x[:1]]), planes, 3, 10)
    assert keys.shape == (6, 3) and keys.dtype == np.int64
    assert (keys[0] == keys[5]).all()
    assert (keys >= 0).all() and (keys < 2**10).all()
    assert np.array_equal(hyperplanes(16, 30, seed=9), planes)
    with pytest.raises(ValueError, match="need 40 hyperplanes"):
        band_keys(x, planes, 4, 10)


def test_threshold_pairs_equal_brute_force():
    rng = np.random.default_rng(4)
    x = unit(rng, 50, 3)  # 3-d: many pairs above 0.9
    ids = np.arange(100, 150)[::-1].copy()
    ids, x = sort_by_id(ids, x)
    s, d, _sc = threshold_pairs(ids, x, None, None, 0.9, chunk_rows=7)
    sims = x @ x.T
    ref = {(ids[i], ids[j]) for i in range(50) for j in range(i + 1, 50) if sims[i, j] >= 0.9}
    assert set(zip(s.tolist(), d.tolist(), strict=False)) == ref and len(s) == len(ref) and (s < d).all()
    s2, d2, _ = threshold_pairs(ids[:20], x[:20], ids[20:], x[20:], 0.9)
    ref2 = {(min(ids[i], ids[j]), max(ids[i], ids[j])) for i in range(20) for j in range(20, 50) if sims[i, j] >= 0.9}
    assert set(zip(s2.tolist(), d2.tolist(), strict=False)) == ref2


def test_unit_rows_checks_lengths():
    with pytest.raises(ValueError, match=r"different lengths \[2, 3\]"):
        unit_rows([[1.0, 0.0], [1.0, 0.0, 0.0]])
    assert np.allclose(unit_rows([[3.0, 4.0], [0.0, 0.0]]), [[0.6, 0.8], [0.0, 0.0]])


def test_ivf_defaults_grow_the_lists_and_keep_the_probes():
    # lists grow with the rows (4 sqrt(n), at least 256 rows each), probes stay 16 (all lists when fewer)
    assert (default_nlist(1500), default_nlist(100_000), default_nlist(10**7), default_nlist(10**12)) == (
        5, 390, 12649, 65536)
    assert (default_nprobe(4), default_nprobe(400), default_nprobe(4000)) == (4, 16, 16)


def test_text_key_normalises_unicode_case_and_spaces():
    assert normalize_text("  Ёлка\u00a0И \t ЁЛКА\n") == "ёлка и ёлка"
    assert text_key("Привет,  МИР") == text_key("привет, мир ") != text_key("привет мир")
    assert text_key("ﬁ") == text_key("fi")  # NFKC ligature
    assert text_key(None) is None


@pytest.mark.parametrize("string_ids", [False, True])
@pytest.mark.parametrize("small", [64, 3])  # 3: most blocks take the per-block GEMM path instead of batched matmuls
def test_blocks_forest_has_the_components_of_all_pairs_in_few_edges(string_ids, small):
    from user_spark.ops.forest import blocks_forest

    rng = np.random.default_rng(5)
    pool = unit(rng, 90, 3)  # 3-d: dense, chained groups
    raw = np.arange(90) * 37 % 1000  # as strings of 1 to 3 digits, "10" < "9" unlike the numbers
    pool_ids = raw.astype(str).astype(object) if string_ids else raw
    # blocks of 1 to 12 rows drawn from the pool, so an id meets others in several blocks; every third block
    # has two sides and only pairs across them count
    ids, vecs, starts, splits, pairs = [], [], [], [], []
    pos = 0
    for b in range(40):
        rows = rng.choice(90, rng.integers(1, 13), replace=False)
        starts.append(pos)
        pos += len(rows)
        ids.extend(pool_ids[rows])
        vecs.append(pool[rows])
        if b % 3 == 2 and len(rows) > 1:
            mid = len(rows) // 2
            splits.append(starts[-1] + mid)
            src, dst, _ = threshold_pairs(
                *sort_by_id(pool_ids[rows[:mid]], pool[rows[:mid]]),
                *sort_by_id(pool_ids[rows[mid:]], pool[rows[mid:]]),
                0.95,
            )
        else:
            splits.append(-1)
            src, dst, _ = threshold_pairs(*sort_by_id(pool_ids[rows], pool[rows]), None, None, 0.95)
        pairs.extend(zip(src.tolist(), dst.tolist(), strict=False))
    roots, members = blocks_forest(
        np.array(ids), np.vstack(vecs), np.array(starts), np.array(splits), 0.95, small=small, chunk_rows=2
    )
    expected = components(pairs)
    assert len(set(expected.values())) >= 3  # several groups, not one blob
    got = {m: r for r, m in zip(roots.tolist(), members.tolist(), strict=False)}
    got.update({r: r for r in roots.tolist()})
    assert got == expected
    assert len(members) == len(expected) - len(set(expected.values()))  # one edge per non-root member
    assert len(members) < len(pairs)  # fewer edges than pairs


def components(pairs) -> dict:
    """node -> smallest node of its component, by a plain dictionary union-find."""
    parent: dict = {}

    def find(n):
        while parent.setdefault(n, n) != n:
            n = parent[n]
        return n

    for i, j in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return {n: find(n) for n in parent}


def test_shards_group_neighbouring_lists_and_stay_balanced():
    from user_spark.ops.ivf import shard_lists

    rng = np.random.default_rng(3)
    topics = unit(rng, 4, 32)
    centroids = unit_rows(np.repeat(topics, 25, axis=0) + 0.05 * rng.standard_normal((100, 32)))
    weights = rng.integers(50, 150, 100)
    shards = shard_lists(centroids, weights, 4, seed=1)
    load = np.bincount(shards, weights=weights, minlength=4)
    assert load.max() <= 1.15 * weights.sum() / 4 + weights.max()
    # the lists of one topic mostly share a shard
    same = [np.bincount(shards[t * 25 : (t + 1) * 25]).max() for t in range(4)]
    assert min(same) >= 20
    assert shard_lists(centroids, weights, 1).tolist() == [0] * 100


def test_route_probes_sends_one_copy_per_shard_with_its_lists():
    from user_spark.ops.ivf import route_probes

    shard_of = np.array([0, 1, 1, 0, 2])
    lists = np.array([[4, 1, 2], [0, 3, 1]])
    rows, shards, offsets, probes = route_probes(lists, shard_of)
    pairs = enumerate(zip(rows.tolist(), shards.tolist(), strict=True))
    copies = {(r, s): probes[offsets[i] : offsets[i + 1]].tolist() for i, (r, s) in pairs}
    assert copies == {(0, 1): [1, 2], (0, 2): [4], (1, 0): [0, 3], (1, 1): [1]}
