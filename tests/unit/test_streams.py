"""Blocks streamed through Arrow batches (ops/streams.py): every block arrives whole, bounds are exact."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from user_spark.ops.streams import block_bounds, whole_blocks


def _sorted_rows(keys: list[tuple[int, int]]) -> dict[str, np.ndarray]:
    keys = sorted(keys)
    return {
        "bucket": np.array([k[0] for k in keys], dtype=np.int64),
        "sub": np.array([k[1] for k in keys], dtype=np.int64),
        "row": np.arange(len(keys)),
    }


@settings(max_examples=200, deadline=None)
@given(
    keys=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 2)), max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=6),
)
def test_every_block_arrives_whole_and_every_row_once(keys, cuts):
    cols = _sorted_rows(keys)
    bounds = sorted({min(c, len(keys)) for c in cuts} | {0, len(keys)})
    batches = [{n: c[a:b] for n, c in cols.items()} for a, b in itertools.pairwise(bounds)]
    out = list(whole_blocks(batches, ["bucket", "sub"]))
    assert np.concatenate([o["row"] for o in out] or [np.zeros(0, int)]).tolist() == list(range(len(keys)))
    seen: set[tuple[int, int]] = set()
    for chunk in out:
        blocks = set(zip(chunk["bucket"].tolist(), chunk["sub"].tolist(), strict=True))
        assert not blocks & seen, "a block was split between two outputs"
        seen |= blocks


def test_empty_batches_are_skipped_and_the_held_back_block_comes_last():
    empty = {"k": np.zeros(0, dtype=np.int64)}
    out = list(whole_blocks([empty, {"k": np.array([1, 2, 2])}, empty, {"k": np.array([2])}], ["k"]))
    assert [o["k"].tolist() for o in out] == [[1], [2, 2, 2]]


def test_block_bounds_split_two_sided_blocks_at_their_second_side():
    # bucket 5: sub-blocks (0, 1) pair rows of side 0 with rows of side 1; bucket 6 is one-sided (1, 1)
    bucket = np.array([5, 5, 5, 5, 6, 6])
    left = np.array([0, 0, 0, 0, 1, 1])
    right = np.array([1, 1, 1, 1, 1, 1])
    side = np.array([0, 0, 1, 1, 1, 1])
    starts, splits = block_bounds(bucket, left, right, side)
    assert starts.tolist() == [0, 4] and splits.tolist() == [2, -1]
    starts, splits = block_bounds(*(np.zeros(0, dtype=np.int64),) * 4)
    assert starts.tolist() == [] and splits.tolist() == []
