"""IVF top-k on Spark: coarse lists trained on a bounded sample, the right side moved once, left rows routed.

1. Centroids: spherical k-means (:mod:`user_spark.pipelines.kmeans`, shared with clustering) on a sample of
   the right side chosen by id hash (at most ``max_train_rows`` rows, collected as one Arrow table, never as
   Python lists); from 1,024 lists a two-level index, so routing a row costs ``O(sqrt(nlist))`` similarities.
2. Shards: the lists are grouped into shards of neighbouring lists, each about one task's worth of right rows
   (:func:`user_spark.ops.ivf.shard_lists`), so a left row's probed lists mostly sit in one or two shards.
3. Routing (one Arrow UDF pass per side): each right row goes to the shard of its nearest list, once; each
   left row to every shard that holds one of its ``nprobe`` nearest lists, carrying the lists to scan there.
   A self-join routes each row once for both roles (its nearest list is its first probe). Float16 vectors
   stay float16 on the wire.
4. Each task scans its shard's lists for the left rows routed to it (:func:`user_spark.ops.ivf.scan_lists`:
   exact scores, one GEMM per list); candidates from several shards are merged per left row.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from user_spark.pipelines.knn import LID, LIST, PROBES, RID, SIDE, TILE, TopkSpec, tile_topk
from user_spark.pipelines.vectors import ID, VEC

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    from pyspark.sql import DataFrame

    from user_spark.ops.kmeans import Centroids, KMeansFit

__all__ = ["TWO_LEVEL_LISTS", "ivf_topk", "train_centroids"]

logger = logging.getLogger(__name__)


#: From this many lists the coarse centroids are a two-level index (about ``sqrt(nlist)`` cells, 4 searched per
#: row): routing a row then costs about ``5 sqrt(nlist)`` similarities instead of ``nlist``.
TWO_LEVEL_LISTS = 1024


def train_centroids(rvec: DataFrame, n_right: int, nlist: int, seed: int, max_train_rows: int) -> KMeansFit:
    """Spherical k-means of a bounded sample of the right side (:func:`user_spark.pipelines.kmeans.fit_kmeans`):
    one seeding and at most 25 Lloyd steps, as faiss trains its coarse quantizer (the lists need a good
    partition, not the best clustering), two-level from :data:`TWO_LEVEL_LISTS` lists."""
    from user_spark.pipelines.kmeans import fit_kmeans

    return fit_kmeans(rvec, nlist, seed=seed, sample_rows=max_train_rows, total=n_right, restarts=1, max_iter=25,
                      two_level_from=TWO_LEVEL_LISTS)


def _route(batch: pa.RecordBatch, centroids: Centroids, shard_of: np.ndarray, nprobe: int, right: bool,
           left: bool) -> Iterator[pa.RecordBatch]:
    """The rows :func:`user_spark.pipelines.knn.tile_topk` takes, for one batch of ``(_id, _vec)``: as right
    rows, each to the shard of its nearest list; as left rows, a copy per shard holding one of its probes."""
    import numpy as np
    import pyarrow as pa

    from user_spark.ops.blocks import unit_rows
    from user_spark.ops.ivf import route_probes
    from user_spark.pipelines.arrow import vector_matrix

    n, ids, vecs = batch.num_rows, batch.column(ID), batch.column(VEC)
    lists = centroids.nearest(unit_rows(vector_matrix(vecs)), nprobe if left else 1)[0].astype(np.int32)
    if right:
        yield pa.RecordBatch.from_arrays([
            pa.array(shard_of[lists[:, 0]]), pa.array(np.zeros(n, np.int8)), pa.nulls(n, batch.schema.field(ID).type),
            ids, vecs, pa.array(lists[:, 0]), pa.nulls(n, pa.list_(pa.int32())),
        ], names=[TILE, SIDE, LID, RID, VEC, LIST, PROBES])
    if left:
        rows, shards, offsets, probes = route_probes(lists, shard_of)
        take = pa.array(rows)
        m = len(rows)
        yield pa.RecordBatch.from_arrays([
            pa.array(shards), pa.array(np.ones(m, np.int8)), ids.take(take),
            pa.nulls(m, batch.schema.field(ID).type), vecs.take(take), pa.nulls(m, pa.int32()),
            pa.ListArray.from_arrays(pa.array(offsets), pa.array(probes)),
        ], names=[TILE, SIDE, LID, RID, VEC, LIST, PROBES])


def _routed(vec: DataFrame, centroids: Centroids, shard_of: np.ndarray, nprobe: int, spec: TopkSpec, *,
            right: bool, left: bool) -> DataFrame:
    from pyspark.sql.types import ArrayType, ByteType, IntegerType, StructField, StructType

    from user_spark.pipelines.kmeans import ship

    schema = StructType([
        StructField(TILE, IntegerType(), False), StructField(SIDE, ByteType(), False),
        StructField(LID, spec.left_id_type, True), StructField(RID, spec.right_id_type, True),
        StructField(VEC, vec.schema[VEC].dataType, False), StructField(LIST, IntegerType(), True),
        StructField(PROBES, ArrayType(IntegerType(), False), True),
    ])

    shipped = ship(vec.sparkSession, (centroids, shard_of))

    def run(batches: Iterable[Any]) -> Iterator[Any]:
        index, shards = shipped()
        for batch in batches:
            if batch.num_rows:
                yield from _route(batch, index, shards, nprobe, right, left)

    return vec.select(ID, VEC).mapInArrow(run, schema)


def ivf_topk(lvec: DataFrame, rvec: DataFrame, sizes: tuple[int, int, int], spec: TopkSpec, *,
             nlist: int | None, nprobe: int | None, seed: int, max_train_rows: int | None, shard_bytes: int,
             parallelism: int, self_join: bool) -> DataFrame:
    """``(_lid, _rid, score, rank)`` by IVF: see the module docstring.

    ``shard_bytes``: most float32 right vectors a task holds; ``parallelism``: tasks to keep busy.
    """
    import numpy as np

    from user_spark.ops.ivf import default_nlist, default_nprobe, default_train_rows, shard_lists

    _, n_right, dim = sizes
    lists = min(nlist or default_nlist(n_right), n_right)
    train_rows = max_train_rows or default_train_rows(lists)
    fit = train_centroids(rvec, n_right, lists, seed, train_rows)
    centroids = fit.centroids
    probes = min(nprobe or default_nprobe(centroids.k), centroids.k)
    shards = min(centroids.k, max(parallelism, math.ceil(n_right * dim * 4 / shard_bytes)))
    shard_of = shard_lists(centroids.vectors, fit.sizes, shards, seed=seed).astype(np.int32)
    spec = replace(spec, final=shards == 1)
    logger.info("IVF join: %d lists (trained on %d rows), %d probed per left row, %d shard(s)", centroids.k,
                int(fit.sizes.sum()), probes, shards)
    if self_join:
        rows = _routed(lvec, centroids, shard_of, probes, spec, right=True, left=True)
    else:
        rows = _routed(rvec, centroids, shard_of, probes, spec, right=True, left=False).unionByName(
            _routed(lvec, centroids, shard_of, probes, spec, right=False, left=True))
    return tile_topk(rows, shards, spec)
