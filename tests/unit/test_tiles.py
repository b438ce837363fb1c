"""How a top-k join is cut into tasks: tile plans, and keys that Spark hash-partitions one per partition."""

from __future__ import annotations

import numpy as np
import pytest

from user_spark.ops.tiles import partition_keys, plan_tiles, spark_hash_int


def test_spark_hash_matches_values_spark_computes():
    # F.hash(F.lit(v).cast("int")) on Spark 4.3 for these values (tests/spark/test_similarity_join.py checks
    # the partitioning itself on a live session)
    values = np.array([0, 1, -1, 2**31 - 1, -(2**31), 123456, 7])
    want = [933211791, -559580957, -1604776387, 133916647, 723455942, 1905992991, 1079293707]
    assert spark_hash_int(values).tolist() == want


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000])
def test_partition_keys_land_one_per_partition(n):
    keys = partition_keys(n)
    assert len(set(keys)) == n and min(keys) >= 0
    assert (spark_hash_int(np.array(keys)).astype(np.int64) % n).tolist() == list(range(n))


def test_partition_keys_refuse_zero():
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        partition_keys(0)


def test_one_shard_when_the_right_side_fits_a_task():
    plan = plan_tiles(100_000, 100_000, 384, 2, 256 << 20)
    assert (plan.right_shards, plan.left_tiles, plan.tiles) == (1, 2, 2)
    assert plan.copies == 100_000 + 2 * 100_000


def test_small_joins_use_one_task_and_big_right_sides_several_shards():
    assert plan_tiles(1000, 1000, 384, 8, 256 << 20).tiles == 1  # 0.8 GFLOP: Spark's fixed cost dominates
    plan = plan_tiles(10**6, 10**6, 384, 16, 256 << 20)
    assert plan.right_shards >= 6  # 1.5 GB of right vectors in shards of 256 MiB at most
    assert plan.tiles >= 16
    # a huge left side with a small right side: the right side is copied, not the left
    plan = plan_tiles(10**9, 10**5, 384, 1000, 256 << 20)
    assert plan.right_shards == 1 and plan.left_tiles == 1000


def test_plan_minimises_copies_among_plans_that_fill_the_cluster():
    for n_left, n_right, cores in [(5_000, 800_000, 8), (800_000, 5_000, 8), (300_000, 300_000, 12)]:
        plan = plan_tiles(n_left, n_right, 384, cores, 64 << 20)
        fewest = -(-n_right * 384 * 4 // (64 << 20))
        assert plan.right_shards >= fewest and plan.tiles >= cores
        for shards in range(fewest, cores + fewest + 1):
            tiles = -(-cores // shards)
            assert plan.copies <= n_left * shards + n_right * tiles
