"""Connected components of an edge list, in Spark: the large-star / small-star algorithm.

Kiveris et al., "Connected Components in MapReduce and Beyond" (SoCC 2014). Both steps keep the components and
move every node's edges toward the smallest node of its component; when a round changes nothing, every node
points at that smallest node. O(log^2 n) rounds; each round is a few shuffles of the edge list (never of the
nodes' data), checkpointed locally so the lineage stays one round long. Labels are the smallest id of the
component, so the result does not depend on partitioning.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from user_spark.errors import UserSparkError
from user_spark.pipelines.frames import one_row

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = ["connected_components", "large_star", "small_star"]

logger = logging.getLogger(__name__)


def large_star(edges: DataFrame) -> DataFrame:
    """For each node u with smallest neighbourhood member m (u included): link every neighbour v > u to m."""
    from pyspark.sql import functions as F

    both = edges.select("src", "dst").union(edges.select(F.col("dst").alias("src"), F.col("src").alias("dst")))
    mins = both.groupBy("src").agg(F.least(F.min("dst"), F.col("src")).alias("m"))
    return (
        both.where(F.col("dst") > F.col("src")).join(mins, "src")
        .select(F.col("dst").alias("src"), F.col("m").alias("dst"))
        .distinct()
    )


def small_star(edges: DataFrame) -> DataFrame:
    """For each node u with smaller neighbours N: link u and every v in N to m = min(N)."""
    from pyspark.sql import functions as F

    oriented = edges.select(
        F.greatest("src", "dst").alias("u"), F.least("src", "dst").alias("v")
    ).where(F.col("u") != F.col("v"))
    mins = oriented.groupBy("u").agg(F.min("v").alias("m"))
    joined = oriented.join(mins, "u")
    linked = joined.where(F.col("v") != F.col("m")).select(F.col("v").alias("src"), F.col("m").alias("dst"))
    own = mins.select(F.col("u").alias("src"), F.col("m").alias("dst"))
    return linked.union(own).distinct()


def _fingerprint(edges: DataFrame) -> tuple[int, int]:
    from pyspark.sql import functions as F

    row = one_row(edges.agg(
        F.count(F.lit(1)).alias("n"), F.sum(F.xxhash64("src", "dst").cast("decimal(38,0)")).alias("h")
    ))
    return int(row["n"]), int(row["h"] or 0)


def connected_components(edges: DataFrame, *, max_rounds: int = 100) -> DataFrame:
    """``(node, component)`` for every node that has an edge; ``component`` is the smallest node in it.

    Args:
        edges: undirected edges ``(src, dst)`` of any orderable type (self-loops and repeats are fine).
        max_rounds: give up after this many large-star + small-star rounds (the bound is O(log^2 n)).

    Raises:
        UserSparkError: the algorithm did not converge in ``max_rounds`` rounds.

    >>> connected_components(spark.createDataFrame([(1, 2), (2, 3), (7, 8)], "src long, dst long"))  # doctest: +SKIP
    DataFrame[node: bigint, component: bigint]   # 1->1, 2->1, 3->1, 7->7, 8->7
    """
    from pyspark.sql import functions as F

    current = edges.select("src", "dst").where(F.col("src") != F.col("dst")).localCheckpoint(eager=True)
    previous = _fingerprint(current)
    for round_no in range(1, max_rounds + 1):
        nxt = small_star(large_star(current)).localCheckpoint(eager=True)
        fingerprint = _fingerprint(nxt)
        current = nxt
        if fingerprint == previous:
            logger.info("connected components converged after %d rounds (%d edges)", round_no, fingerprint[0])
            break
        previous = fingerprint
    else:
        raise UserSparkError(f"connected components did not converge in {max_rounds} rounds")
    # After convergence every edge is (node, smallest node of its component).
    roots = current.select(F.col("dst").alias("node"), F.col("dst").alias("component")).distinct()
    return current.select(F.col("src").alias("node"), F.col("dst").alias("component")).union(roots)
