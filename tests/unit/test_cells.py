"""Dedup inside k-means cells (ops/cells.py): core rows, the block plan, the role-masked forest."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from user_spark.ops.blocks import sort_by_id, unit_rows
from user_spark.ops.cells import (
    CORE,
    PRIMARY,
    SECONDARY,
    cells_forest,
    core_cosine,
    expand,
    pair_distance,
    plan_blocks,
    roles,
)
from user_spark.ops.forest import BlockCounts
from user_spark.ops.streams import block_bounds


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 10_000), threshold=st.sampled_from([0.5, 0.8, 0.9, 0.92, 0.97]))
def test_two_core_rows_of_a_cell_are_always_duplicates(seed, threshold):
    rng = np.random.default_rng(seed)
    centroid = unit_rows(rng.standard_normal((1, 12)))[0]
    core = core_cosine(threshold)
    # rows exactly at the core cosine from the centroid, in random directions (the worst case: opposite sides)
    side = rng.standard_normal((50, 12))
    side = unit_rows(side - np.outer(side @ centroid, centroid))
    rows = core * centroid + np.sqrt(1 - core**2) * side
    sims = rows.astype(np.float64) @ rows.T.astype(np.float64)
    assert sims.min() >= threshold - 1e-9
    assert abs(pair_distance(threshold) - np.sqrt(2 - 2 * threshold)) < 1e-12


def test_roles_and_block_counts():
    cells = np.array([0, 0, 1, 1, 0])
    got = roles(cells, np.array([0, 0, 0, 1, 1]), np.array([0.99, 0.5, 0.99, 0.99, 0.99]), 0.98,
                np.array([True, False]))
    assert got.tolist() == [CORE, PRIMARY, PRIMARY, SECONDARY, SECONDARY]  # cell 1 has no leader: no core rows
    s_o, s_c = plan_blocks(np.array([0, 10, 11]), np.array([0, 0, 30]), 10)
    assert s_o.tolist() == [1, 1, 2] and s_c.tolist() == [0, 0, 3]


@settings(max_examples=150, deadline=None)
@given(
    copies=st.lists(st.tuples(st.integers(0, 2), st.sampled_from([CORE, PRIMARY, SECONDARY]),
                              st.integers(0, 2**63)), min_size=1, max_size=30),
    s_o=st.lists(st.integers(1, 3), min_size=3, max_size=3),
    s_c=st.lists(st.integers(0, 3), min_size=3, max_size=3),
)
def test_every_needed_pair_of_a_cell_meets_in_exactly_one_block(copies, s_o, s_c):
    cells = np.array([c for c, _, _ in copies])
    role = np.array([r for _, r, _ in copies], dtype=np.int8)
    hashes = np.array([h for _, _, h in copies], dtype=np.uint64)
    s_c_arr = np.array(s_c, dtype=np.int32)
    role[(role == CORE) & (s_c_arr[cells] == 0)] = PRIMARY  # the plan gives core rows a sub-block
    copy, lo, hi, side = expand(cells, role, hashes, np.array(s_o, dtype=np.int32), s_c_arr)
    blocks: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
    for c, a, b, sd in zip(copy.tolist(), lo.tolist(), hi.tolist(), side.tolist(), strict=True):
        assert a <= b and (sd == 0 or a != b)  # a one-sided block has one side
        blocks.setdefault((int(cells[c]), a, b), []).append((c, sd))
    met: dict[tuple[int, int], int] = {}
    for (_, a, b), members in blocks.items():
        for (i, si), (j, sj) in itertools.combinations(members, 2):
            if a == b or si != sj:  # pairs of a block: within a one-sided block, across the sides of another
                key = (min(i, j), max(i, j))
                met[key] = met.get(key, 0) + 1
    for i, j in itertools.combinations(range(len(copies)), 2):
        if cells[i] != cells[j]:
            continue
        if role[i] == CORE and role[j] == CORE:
            assert (i, j) not in met  # linked by the star, never compared
        else:
            assert met.get((i, j)) == 1
    # each core copy has exactly one block with lo == 0 (where its star edge is made)
    for i in np.flatnonzero(role == CORE):
        assert int(((copy == i) & (lo == 0)).sum()) == 1


def brute_masked_components(ids, x, role, blocks, threshold):
    """node -> smallest node, from every pair of every block at or above the threshold but core-core and
    secondary-secondary pairs."""
    parent = {}

    def find(n):
        while parent.setdefault(n, n) != n:
            n = parent[n]
        return n

    for rows, two_sided in blocks:
        for i, j in itertools.combinations(rows, 2):
            if two_sided and (i in two_sided) == (j in two_sided):
                continue
            if role[i] == role[j] and role[i] in (CORE, SECONDARY):
                continue
            if float(x[i] @ x[j]) >= threshold:
                a, b = find(ids[i]), find(ids[j])
                parent[max(a, b)] = min(a, b)
    return {n: find(n) for n in list(parent)}


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_cells_forest_has_the_components_of_the_role_masked_pairs(seed):
    rng = np.random.default_rng(seed)
    pool = unit_rows(rng.standard_normal((40, 3)))  # 3-d: many pairs above 0.9
    pool_role = rng.choice([CORE, PRIMARY, SECONDARY], 40)
    ids, vecs, roles_out, starts, splits, blocks = [], [], [], [], [], []
    pos = 0
    for _ in range(6):
        size = int(rng.integers(1, 12))
        rows = rng.choice(40, size, replace=False)
        two = size > 1 and rng.random() < 0.5
        sides = [rows[: size // 2], rows[size // 2 :]] if two else [rows]
        starts.append(pos)
        for part in sides:  # each side sorted by role then id, as the Spark sort delivers it
            order = np.lexsort((part, pool_role[part]))
            part = part[order]
            ids.extend(part.tolist())
            vecs.append(pool[part])
            roles_out.extend(pool_role[part].tolist())
        splits.append(pos + len(sides[0]) if two else -1)
        blocks.append((list(range(pos, pos + size)), set(range(pos, pos + len(sides[0]))) if two else None))
        pos += size
    ids_arr, x, role = np.array(ids), np.vstack(vecs), np.array(roles_out, dtype=np.int8)
    counts = BlockCounts()
    roots, members = cells_forest(ids_arr, x, role, np.array(starts), np.array(splits), 0.9, counts)
    got = {m: r for r, m in zip(roots.tolist(), members.tolist(), strict=True)}
    got.update({r: r for r in roots.tolist()})
    expected = brute_masked_components(ids_arr, x, role, blocks, 0.9)
    assert got == expected
    assert counts.copies == len(ids_arr) and counts.found >= len(members)


def test_block_bounds_read_the_copies_sides():
    lo, hi = np.array([0, 0, 0, 0, 1]), np.array([0, 1, 1, 1, 1])
    side_sub = np.where(np.array([0, 0, 1, 1, 0]) == 0, lo, hi)
    starts, splits = block_bounds(np.zeros(5, dtype=int), lo, hi, side_sub)
    assert starts.tolist() == [0, 1, 4] and splits.tolist() == [-1, 2, -1]
    assert sort_by_id(np.array([3, 1]), np.array([[1.0], [2.0]]))[0].tolist() == [1, 3]
