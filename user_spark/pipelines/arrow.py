"""Vectors between Arrow and numpy without a Python object per row (executor and driver side).

A ``list<float>`` column becomes one ``(rows, dim)`` float32 matrix (:func:`vector_matrix`); a ``binary`` column
of float16 vectors too; a frame comes to the driver as one Arrow table (:func:`collect_arrow`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    from pyspark.sql import DataFrame

__all__ = ["batch_columns", "collect_arrow", "vector_matrix"]


def vector_matrix(values: Any) -> np.ndarray:
    """An Arrow ``list<float>``/``list<double>`` or float16 ``binary`` array (no nulls) as a ``(rows, dim)``
    float32 matrix.

    Raises:
        ValueError: vectors of different lengths.
    """
    import numpy as np
    import pyarrow as pa

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], type=values.type)
    rows = len(values)
    if pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type):
        from user_spark.embedding.storage import float16_to_arrow_list

        values = float16_to_arrow_list(values)
    flat = values.flatten().to_numpy(zero_copy_only=False)
    dim = len(flat) // max(rows, 1)
    offsets = values.offsets.to_numpy()
    if dim * rows != len(flat) or np.any(np.diff(offsets) != dim):
        raise ValueError("embedding vectors have different lengths; all must be equally long")
    matrix: np.ndarray = np.asarray(flat, dtype=np.float32).reshape(rows, dim)
    return matrix


def batch_columns(batch: pa.RecordBatch, names: Sequence[str], vector: str) -> dict[str, np.ndarray]:
    """``names`` of an Arrow batch as numpy arrays, and ``vector`` as one ``(rows, dim)`` float32 matrix."""
    cols = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in names}
    cols[vector] = vector_matrix(batch.column(vector))
    return cols


def collect_arrow(df: DataFrame) -> pa.Table:
    """``df`` on the driver as one Arrow table: ``toArrow`` (pyspark >= 4.0, classic and Connect), else Spark's
    Arrow collection that ``toPandas`` uses (pyspark 3.5)."""
    import pyarrow as pa

    to_arrow = getattr(df, "toArrow", None)
    if to_arrow is not None:
        table: pa.Table = to_arrow()
        return table
    batches = getattr(df, "_collect_as_arrow")()  # noqa: B009 - private, on classic pyspark 3.5 only
    schema = batches[0].schema if batches else None
    return pa.Table.from_batches(batches, schema=schema) if batches else pa.table({c: [] for c in df.columns})
