"""Deduplication: exact duplicates by normalised-text hash, near duplicates by exact cosine inside k-means cells,
groups as connected components of the duplicate graph, one representative per group.

Steps, all in Spark (counts, a bounded sample and the centroids reach the driver):

1. rows whose normalised text (:func:`user_spark.ops.textnorm.normalize_text`) is equal form exact groups; only the
   best row of each (by the representative rule) is embedded;
2. candidates (``method="kmeans"``, the default): spherical k-means trained on a sample cuts the vectors into cells
   of about ``cell_rows`` rows; each row goes to its nearest cell and to the cells whose boundary is within
   ``margin`` times the distance of a pair at the threshold, and pairs inside a cell with cosine ``>= threshold``
   become edges (:mod:`user_spark.pipelines.cells`). Work per row does not grow with the rows.
   ``method="lsh"``: random-hyperplane LSH buckets, one per band (:func:`user_spark.pipelines.blocks.bucket_pairs`);
   its buckets fill as the rows grow, so its work per row grows with them;
3. connected components of the edges (:mod:`user_spark.pipelines.components`) join exact groups into duplicate groups,
   so duplicates that never shared a cell still end up together.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from user_spark.embedding.columns import column
from user_spark.embedding.metrics import EmbedMetrics
from user_spark.embedding.options import EmbedOptions, coerce_options
from user_spark.errors import ColumnError, OptionError
from user_spark.ops.lsh import MAX_ROWS_PER_BAND, choose_bands
from user_spark.pipelines.vectors import (
    ID,
    VEC,
    check_unique_ids,
    check_vector_source,
    prepare_vectors,
    require_vectors,
    vector_frame,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame
    from pyspark.sql.types import DataType

__all__ = ["DEFAULT_THRESHOLD", "DedupResult", "dedup"]

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.92
#: Defaults of the k-means candidate step (docs/BENCHMARKS.md measures them; docs/SCALING.md models their cost).
DEFAULT_MARGIN = 0.1
DEFAULT_CELL_ROWS = 4096
DEFAULT_MAX_CELLS = 4
#: Rows one block holds at most: a bigger cell is split into sub-blocks (k-means) or a bigger LSH bucket.
DEFAULT_BLOCK_ROWS = {"kmeans": 16384, "lsh": 4096}
#: From this many cells, the cells are a two-level index (a row is compared with ~sqrt(cells) centroids).
CELLS_TWO_LEVEL_FROM = 1024
Representative = Literal["smallest_id", "longest_text"]
Method = Literal["kmeans", "lsh"]


@dataclass
class DedupResult:
    """What :func:`dedup` found.

    Attributes:
        kept: the input rows kept (every original column): rows in no group, and each group's representative.
        groups: one row per member of a duplicate group (two or more rows): ``<id_col>, group_id`` (smallest
            id in the group), ``representative_id``, ``similarity`` (cosine to the representative, 1.0 for it
            and its exact duplicates).
        summary: ``rows_in``, ``exact_duplicates``, ``near_duplicates`` (rows dropped by each step),
            ``rows_kept``, ``groups``; and the work done: ``vector_rows`` (rows compared by vector: one per exact
            group), ``vector_copies_per_row`` (vectors shuffled per vector row), ``pairs_scored_per_row``
            (similarities computed per vector row), ``pairs_found`` (pairs at or above the threshold, counted
            once per block that found them), ``star_edges`` (core rows linked to their cell's leader unscored),
            ``cells`` (k-means; 0 for LSH). From counts the job has anyway.
        bands, rows_per_band: the LSH parameters used (``None`` for k-means).
        method: ``"kmeans"`` or ``"lsh"``.
    """

    kept: DataFrame
    groups: DataFrame
    summary: dict[str, Any]
    bands: int | None
    rows_per_band: int | None
    method: Method = "kmeans"


def _rule_key(rule: str, id_col: str, text_col: str | None) -> Column:
    """A struct whose minimum is the preferred row: smallest id, or longest text then smallest id."""
    from pyspark.sql import functions as F

    if rule == "longest_text" and text_col is not None:
        return F.struct((-F.coalesce(F.length(text_col), F.lit(-1))).alias("_len"), F.col(id_col).alias("_id"))
    return F.struct(F.col(id_col).alias("_id"))


def _text_key_udf() -> Any:
    from pyspark.sql.types import StringType

    from user_spark.compat import scalar_udf

    def keys(texts):  # type: ignore[no-untyped-def]
        from user_spark.ops.textnorm import text_key

        return texts.map(text_key)

    return scalar_udf(keys, StringType(), arrow=False)


def _signatures(vectors: DataFrame, dim_seed: int, bands: int, rows: int, id_type: Any) -> DataFrame:
    """``(_id, _bucket)``, one row per (row, band): the band's LSH key hashed with the band number."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import IntegerType, LongType, StructField, StructType

    schema = StructType(
        [
            StructField(ID, id_type, False),
            StructField("_band", IntegerType(), False),
            StructField("_key", LongType(), False),
        ]
    )

    def sign(batches):  # type: ignore[no-untyped-def]
        import numpy as np
        import pandas as pd

        from user_spark.ops.blocks import unit_rows
        from user_spark.ops.lsh import band_keys, hyperplanes

        planes = None
        for pdf in batches:
            if pdf.empty:
                continue
            vecs = unit_rows(pdf[VEC].tolist())
            if planes is None or planes.shape[0] != vecs.shape[1]:
                planes = hyperplanes(vecs.shape[1], bands * rows, dim_seed)
            keys = band_keys(vecs, planes, bands, rows)
            yield pd.DataFrame(
                {
                    ID: np.repeat(pdf[ID].to_numpy(), bands),
                    "_band": np.tile(np.arange(bands, dtype=np.int32), len(pdf)),
                    "_key": keys.reshape(-1),
                }
            )

    from user_spark.pipelines.blocks import BUCKET

    return vectors.mapInPandas(sign, schema).select(ID, F.xxhash64("_band", "_key").alias(BUCKET))


@dataclass(frozen=True)
class _Candidates:
    """How near-duplicate candidates are found (validated options of :func:`dedup`)."""

    method: Method
    threshold: float
    seed: int
    block_rows: int
    bands: int | None = None
    rows_per_band: int | None = None
    margin: float = DEFAULT_MARGIN
    cell_rows: int = DEFAULT_CELL_ROWS
    max_cells: int = DEFAULT_MAX_CELLS


def _check_options(threshold: float, representative: str, text_col: str | None, embedding_col: str | None) -> None:
    if not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
        raise OptionError(f"threshold must be a cosine in (0, 1), got {threshold!r}")
    if representative not in ("smallest_id", "longest_text"):
        raise OptionError(f"representative must be 'smallest_id' or 'longest_text', got {representative!r}")
    require_vectors(text_col, embedding_col, "dedup")
    if representative == "longest_text" and text_col is None:
        raise OptionError("representative='longest_text' needs text_col=")


def _candidates(
    method: str | None, threshold: float, seed: int, block_rows: int | None, bands: int | None,
    rows_per_band: int | None, margin: float, cell_rows: int, max_cells: int,
) -> _Candidates:
    """The candidate step's options, checked; ``method=None`` is LSH when bands are given, else k-means."""
    lsh_given = bands is not None or rows_per_band is not None
    chosen = method or ("lsh" if lsh_given else "kmeans")
    if chosen not in ("kmeans", "lsh"):
        raise OptionError(f"method must be 'kmeans' or 'lsh', got {method!r}")
    if chosen == "kmeans" and lsh_given:
        raise OptionError("bands= and rows_per_band= are settings of method='lsh'; leave them out for k-means")
    rows = DEFAULT_BLOCK_ROWS[chosen] if block_rows is None else block_rows
    if rows < 2:
        raise OptionError(f"block_rows must be >= 2, got {rows}")
    if chosen == "lsh":
        if (bands is None) != (rows_per_band is None):
            raise OptionError(
                "give both bands= and rows_per_band=, or neither (chosen from the threshold and the rows)"
            )
        if bands is not None and (bands < 1 or rows_per_band is None or not 1 <= rows_per_band <= MAX_ROWS_PER_BAND):
            raise OptionError(
                f"need bands >= 1 and 1 <= rows_per_band <= {MAX_ROWS_PER_BAND}, got {bands}, {rows_per_band}"
            )
        return _Candidates("lsh", float(threshold), seed, rows, bands, rows_per_band)
    if not 0.0 <= margin <= 1.0 or cell_rows < 2 or max_cells < 1:
        raise OptionError(
            f"need 0 <= margin <= 1, cell_rows >= 2 and max_cells >= 1; got {margin}, {cell_rows}, {max_cells}"
        )
    return _Candidates("kmeans", float(threshold), seed, rows, margin=margin, cell_rows=cell_rows, max_cells=max_cells)


# dedup's internal names for the id, text and embedding columns (a user's may hold dots)
_ROW_ID, _ROW_TEXT, _ROW_VEC = "_row_id", "_row_text", "_row_vec"


def _check_input(df: DataFrame, id_col: str, text_col: str | None, embedding_col: str | None) -> None:
    check_vector_source(df, id_col, text_col, embedding_col)
    if id_col in ("group_id", "representative_id", "similarity"):
        raise ColumnError(f"Id column may not be named {id_col!r} (an output column of dedup); rename it")


def _exact_groups(rows: DataFrame, id_col: str, text_col: str | None, rule: Column) -> DataFrame:
    """``rows`` plus ``_exact_rep``: the preferred row with the same normalised text (itself without text)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if text_col is None:
        return rows.withColumn("_exact_rep", F.col(id_col))
    # A window, not an aggregate joined back: the Python UDF then runs once per row, not once per branch.
    # A null text is its own group (keyed by its id; text keys are hex digests, so no key can collide).
    key = _text_key_udf()(F.col(text_col))
    group = F.coalesce(F.col("_key"), F.concat(F.lit("\u0000id:"), F.col(id_col).cast("string")))
    return (
        rows.withColumn("_key", key)
        .select(*rows.columns, F.min(rule).over(Window.partitionBy(group))["_id"].alias("_exact_rep"))
        .localCheckpoint(eager=True)
    )


def _near_edges(
    vecs: DataFrame, vector_rows: int, options: _Candidates, id_type: DataType
) -> tuple[DataFrame, dict[str, Any], _Candidates]:
    """``(src, dst)`` edges whose components are those of the candidate pairs at ``>= threshold``, the candidate
    step's counts, and its options with the LSH bands filled in."""
    from dataclasses import replace

    from pyspark.sql import functions as F

    from user_spark.pipelines.blocks import bucket_pairs
    from user_spark.pipelines.cells import cell_edges, plan_cells

    if vector_rows == 0:  # nothing to compare (an empty input, or every vector null)
        return vecs.select(F.col(ID).alias("src"), F.col(ID).alias("dst")), {"cells": 0}, options
    if options.method == "kmeans":
        plan = plan_cells(
            vecs, vector_rows, threshold=options.threshold, margin=options.margin, cell_rows=options.cell_rows,
            block_rows=options.block_rows, max_cells=options.max_cells, seed=options.seed,
            two_level_from=CELLS_TWO_LEVEL_FROM,
        )
        edges, counts = cell_edges(vecs, plan, id_type=id_type, seed=options.seed)
        return edges, {**counts, "cells": plan.centroids.k}, options
    if options.bands is None or options.rows_per_band is None:
        bands, rows = choose_bands(options.threshold, rows=vector_rows)
        options = replace(options, bands=bands, rows_per_band=rows)
    assert options.bands is not None and options.rows_per_band is not None
    sigs = _signatures(vecs, options.seed, options.bands, options.rows_per_band, id_type)
    # Only the components matter here, so each block sends a spanning forest of its pairs, not every pair.
    edges, counts = bucket_pairs(
        sigs, vecs, threshold=options.threshold, block_rows=options.block_rows, id_type=id_type,
        signature_rows=vector_rows * options.bands,
    )
    return edges, {**counts, "cells": 0}, options


def _groups(mapped: DataFrame, edges: DataFrame, vecs: DataFrame, id_col: str, rule: Column) -> DataFrame:
    """Members of groups of 2+ rows: components over exact representatives, every row through its own."""
    from pyspark.sql import functions as F

    from user_spark.pipelines.components import connected_components

    comp = connected_components(edges)
    member = (
        mapped.join(comp.withColumnRenamed("node", "_exact_rep"), "_exact_rep", "left")
        .withColumn("_root", F.coalesce(F.col("component"), F.col("_exact_rep")))
        .withColumn("_rule", rule)
    )
    per_group = (
        member.groupBy("_root")
        .agg(F.count(F.lit(1)).alias("_size"), F.min(id_col).alias("group_id"), F.min("_rule").alias("_best"))
        .where(F.col("_size") > 1)
        .select("_root", "group_id", F.col("_best._id").alias("representative_id"))
    )
    grouped = member.join(per_group, "_root").select(id_col, "_exact_rep", "group_id", "representative_id")
    return _similarities(grouped, vecs, id_col).localCheckpoint(eager=True)


def _summary(groups: DataFrame, id_col: str, rows_in: int, vector_rows: int, work: dict[str, Any]) -> dict[str, Any]:
    """The counts of :attr:`DedupResult.summary`, by one small job over the (checkpointed) groups, and the work
    the candidate step counted."""
    from pyspark.sql import functions as F

    removed = F.col(id_col) != F.col("representative_id")
    exact = removed & (F.col(id_col) != F.col("_exact_rep"))
    row = groups.agg(
        F.count(F.when(exact, 1)).alias("exact"),
        F.count(F.when(removed & ~exact, 1)).alias("near"),
        F.countDistinct("group_id").alias("groups"),
    ).first()
    assert row is not None
    exact_n, near_n = int(row["exact"]), int(row["near"])
    per_row = max(vector_rows, 1)
    return {
        "rows_in": rows_in,
        "exact_duplicates": exact_n,
        "near_duplicates": near_n,
        "rows_kept": rows_in - exact_n - near_n,
        "groups": int(row["groups"]),
        "vector_rows": vector_rows,
        "cells": int(work.get("cells", 0)),
        "vector_copies_per_row": round(work.get("copies", 0) / per_row, 3),
        "pairs_scored_per_row": round(work.get("scored", 0) / per_row, 1),
        "pairs_found": int(work.get("found", 0)),
        "star_edges": int(work.get("stars", 0)),
    }


def dedup(
    df: DataFrame,
    *,
    id_col: str,
    text_col: str | None = None,
    embedding_col: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    representative: Representative = "smallest_id",
    exact: bool = True,
    model: str | None = None,
    method: Method | None = None,
    margin: float = DEFAULT_MARGIN,
    cell_rows: int = DEFAULT_CELL_ROWS,
    max_cells: int = DEFAULT_MAX_CELLS,
    bands: int | None = None,
    rows_per_band: int | None = None,
    seed: int = 17,
    block_rows: int | None = None,
    check_ids: bool = True,
    embed_options: EmbedOptions | Mapping[str, Any] | None = None,
    metrics: EmbedMetrics | None = None,
) -> DedupResult:
    """Find exact and near-duplicate rows; keep one per group.

    Args:
        df: the rows, with a unique id column.
        id_col: unique id (integer or string); ties and ``smallest_id`` use its order.
        text_col: text to hash for exact duplicates and, without ``embedding_col``, to embed (role ``query``).
        embedding_col: existing vectors (``array<float>``, ``array<double>`` or float16 ``binary``) instead of
            embedding ``text_col``.
        threshold: cosine at or above which two rows are near duplicates, in (0, 1).
        representative: ``"smallest_id"`` (default) or ``"longest_text"`` (ties: smallest id).
        exact: find exact duplicates of the normalised text first (needs ``text_col``).
        model: model for ``text_col`` (default ``deepvk/USER-base``); overrides ``embed_options.model``.
        method: how candidate pairs are found: ``"kmeans"`` (default; cells of about ``cell_rows`` rows, work
            per row independent of the rows) or ``"lsh"`` (random-hyperplane bands; the default when ``bands``
            is given).
        margin: k-means: a row also joins the cells whose boundary is within ``margin x sqrt(2 - 2 threshold)``
            (that many times the distance of a pair at the threshold); 1 finds every pair at the threshold for
            sure (if no row needs more than ``max_cells`` cells), 0 only pairs in one cell.
        cell_rows: k-means: rows per cell (the cells are ``rows / cell_rows``); a row is compared with about
            ``copies x cell_rows`` rows.
        max_cells: k-means: cells a row is copied into at most.
        bands, rows_per_band: LSH banding; default from ``threshold`` and the number of rows so that a pair at
            the threshold is a candidate with probability >= 99.5% (:func:`user_spark.ops.lsh.choose_bands`).
        seed: seed of the k-means sample and sub-blocks, or of the LSH hyperplanes.
        block_rows: rows one block holds at most (a task's memory): a bigger cell or bucket is split into
            sub-blocks; default 16384 (k-means), 4096 (LSH).
        check_ids: check that ids are unique and not null (one pass over the id column).
        embed_options: an :class:`~user_spark.EmbedOptions` for embedding ``text_col`` (the role is ``query``).
        metrics: counters of the texts embedded.

    Returns:
        :class:`DedupResult` with ``kept``, ``groups`` and ``summary``.

    Raises:
        ColumnError: a missing id/text/embedding column, a column of the wrong type, duplicate ids.
        OptionError: a threshold outside (0, 1), an unknown rule or method, neither text nor embeddings.

    >>> res = dedup(df, id_col="id", text_col="text", threshold=0.92)  # doctest: +SKIP
    >>> res.groups   # DataFrame[id: bigint, group_id: bigint, representative_id: bigint, similarity: float]
    >>> res.summary  # {'rows_in': 1000, 'exact_duplicates': 12, 'near_duplicates': 31, 'rows_kept': 957, ...}
    """
    from pyspark.sql import functions as F

    _check_options(threshold, representative, text_col, embedding_col)
    candidates = _candidates(method, threshold, seed, block_rows, bands, rows_per_band, margin, cell_rows, max_cells)
    options = coerce_options(embed_options, model=model).replace(role="query")
    _check_input(df, id_col, text_col, embedding_col)
    prepared = prepare_vectors(df.sparkSession, options, embeds=embedding_col is None)
    rows_in = check_unique_ids(df, id_col) if check_ids else None
    # The work runs on the three columns it needs under internal names: a user's names may hold dots.
    names = [(id_col, _ROW_ID), (text_col, _ROW_TEXT), (embedding_col, _ROW_VEC)]
    rows = df.select(*[column(c).alias(n) for c, n in names if c is not None])
    uid, utext, uvec = _ROW_ID, _ROW_TEXT if text_col else None, _ROW_VEC if embedding_col else None
    rule = _rule_key(representative, uid, utext)
    mapped = _exact_groups(rows, uid, utext if exact else None, rule)
    reps = mapped.where(F.col(uid) == F.col("_exact_rep")).drop("_exact_rep")
    vecs = vector_frame(reps, uid, text_col=utext, embedding_col=uvec, options=prepared, metrics=metrics)
    vector_rows = vecs.count()  # vecs is checkpointed: the count runs no model
    id_type = df.schema[id_col].dataType
    edges, work, candidates = _near_edges(vecs, vector_rows, candidates, id_type)
    groups = _groups(mapped, edges, vecs, uid, rule)
    removed = groups.where(F.col(uid) != F.col("representative_id")).select(uid)
    summary = _summary(groups, uid, rows_in if rows_in is not None else df.count(), vector_rows, work)
    return DedupResult(
        kept=df.join(removed, column(id_col) == F.col(uid), "left_anti"),
        groups=groups.drop("_exact_rep").withColumnRenamed(uid, id_col),
        summary=summary,
        bands=candidates.bands,
        rows_per_band=candidates.rows_per_band,
        method=candidates.method,
    )


def _cosine(a: str, b: str) -> Column:
    from pyspark.sql import functions as F

    dot = F.aggregate(F.zip_with(a, b, lambda x, y: x * y), F.lit(0.0).cast("double"), lambda acc, v: acc + v)
    na = F.sqrt(F.aggregate(a, F.lit(0.0).cast("double"), lambda acc, v: acc + v * v))
    nb = F.sqrt(F.aggregate(b, F.lit(0.0).cast("double"), lambda acc, v: acc + v * v))
    return F.when((na > 0) & (nb > 0), dot / (na * nb)).otherwise(F.lit(0.0))


def _similarities(grouped: DataFrame, vecs: DataFrame, id_col: str) -> DataFrame:
    """Cosine of each member's (exact representative's) vector to the group representative's vector."""
    from pyspark.sql import functions as F

    mine = vecs.select(F.col(ID).alias("_exact_rep"), F.col(VEC).alias("_a"))
    theirs = vecs.select(F.col(ID).alias("representative_id"), F.col(VEC).alias("_b"))
    joined = grouped.join(mine, "_exact_rep", "left").join(theirs, "representative_id", "left")
    same = F.col("_exact_rep") == F.col("representative_id")
    sim = (
        F.when(same, F.lit(1.0))
        .when(F.col("_a").isNull() | F.col("_b").isNull(), F.lit(None))
        .otherwise(_cosine("_a", "_b"))
    )
    return joined.select(id_col, "group_id", "representative_id", sim.cast("float").alias("similarity"), "_exact_rep")
