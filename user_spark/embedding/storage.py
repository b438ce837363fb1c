"""How embeddings are stored in a column: ``float32`` (``array<float>``) or ``float16`` (``binary``, half the bytes).

Spark SQL has no half-precision type, so ``float16`` vectors are stored as one little-endian IEEE 754 binary16
buffer per row (``dim * 2`` bytes). :func:`decode_float16` turns such a column back into ``array<float>``, and
the jobs (``dedup``, ``cluster``, ``similarity_join``) accept either form as ``embedding_col``. Outside Spark:
``np.frombuffer(value, dtype="<f2")``.

The vector conversions (:func:`to_arrow`, :func:`to_python`, :func:`float16_to_arrow_list`) are numpy/pyarrow
only, shared by the embedding UDF and the decoder; :func:`decode_float16` wraps them in a Spark UDF.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from user_spark.errors import OptionError, check_choice

if TYPE_CHECKING:
    import numpy as np
    from pyspark.sql import Column
    from pyspark.sql.types import DataType

__all__ = ["STORAGES", "Storage", "check_storage", "decode_float16", "spark_type", "to_arrow", "to_python"]

Storage = Literal["float32", "float16"]
STORAGES: tuple[Storage, ...] = ("float32", "float16")
FLOAT16 = "<f2"


def check_storage(storage: str) -> Storage:
    """``storage`` if it is ``float32`` (``array<float>``) or ``float16`` (``binary``, half the bytes)."""
    return check_choice("storage", storage, STORAGES)


def spark_type(storage: Storage) -> DataType:
    """The column type vectors are stored as."""
    from pyspark.sql.types import ArrayType, BinaryType, FloatType

    return BinaryType() if storage == "float16" else ArrayType(FloatType(), containsNull=False)


def _offsets(valid: np.ndarray, width: int) -> np.ndarray:
    import numpy as np

    offsets = np.zeros(len(valid) + 1, dtype=np.int32)
    np.cumsum(np.where(valid, width, 0), out=offsets[1:])
    return offsets


def _half(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` in float16; refuses values beyond its range rather than storing infinities."""
    import numpy as np

    half = vectors.astype(FLOAT16)
    if not np.isfinite(half).all():
        from user_spark.errors import EmbeddingError

        raise EmbeddingError(
            "a vector has values beyond float16's range (65504); store this model's vectors as float32"
        )
    return half


def to_arrow(vectors: np.ndarray, valid: np.ndarray, storage: Storage) -> Any:
    """``[rows, dim]`` float32 vectors -> one Arrow array (a row per vector, null where ``valid`` is False).

    The values go to Arrow as one contiguous buffer with offsets: no Python object per row.
    """
    import numpy as np
    import pyarrow as pa

    kept = np.ascontiguousarray(vectors[valid])
    mask = None if valid.all() else pa.array(~valid)
    if storage == "float32":
        flat = pa.array(kept.reshape(-1), type=pa.float32())
        return pa.ListArray.from_arrays(pa.array(_offsets(valid, vectors.shape[1])), flat, mask=mask)
    data = _half(kept).tobytes()
    bitmap = None if mask is None else pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())
    return pa.Array.from_buffers(
        pa.binary(), len(valid), [bitmap, pa.py_buffer(_offsets(valid, vectors.shape[1] * 2).tobytes()),
                                  pa.py_buffer(data)],
        null_count=int((~valid).sum()),
    )


def to_python(vectors: np.ndarray, valid: np.ndarray, storage: Storage) -> list[Any]:
    """The same as :func:`to_arrow`, as one Python value per row (for pandas UDFs)."""
    if storage == "float32":
        return [vectors[i] if ok else None for i, ok in enumerate(valid)]
    half = _half(vectors)
    return [half[i].tobytes() if ok else None for i, ok in enumerate(valid)]


def float16_to_arrow_list(values: Any) -> Any:
    """An Arrow binary array of float16 vectors -> ``list<float>`` (nulls kept); raises on a ragged buffer."""
    import numpy as np
    import pyarrow as pa

    values = values.cast(pa.binary()) if values.type != pa.binary() else values
    valid = ~np.asarray(values.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    buffers = values.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32)[values.offset : values.offset + len(values) + 1]
    sizes = np.diff(offsets)[valid]
    if len(sizes) and (sizes.min() != sizes.max() or sizes[0] % 2):
        raise OptionError(
            f"a float16 embedding column must hold equally long buffers of 2-byte values; found {int(sizes.min())} "
            f"to {int(sizes.max())} bytes"
        )
    width = int(sizes[0]) // 2 if len(sizes) else 0
    vectors = np.zeros((len(values), width), dtype=np.float32)
    if width:
        raw = np.frombuffer(buffers[2], dtype=np.uint8)
        starts = offsets[:-1][valid]
        if int(starts[-1] - starts[0]) == (len(starts) - 1) * 2 * width:  # back to back (nulls take no bytes)
            rows = raw[starts[0] : starts[0] + len(starts) * 2 * width].view(FLOAT16).reshape(-1, width)
        else:
            rows = raw[starts[:, None] + np.arange(width * 2)].view(FLOAT16)  # a row of 2*width bytes each
        vectors[valid] = rows.astype(np.float32)
    return to_arrow(vectors, valid, "float32")


def decode_float16(column: str | Column) -> Column:
    """A ``float16`` (binary) embedding column as ``array<float>``, null where it is null.

    >>> df.select(decode_float16("body_embedding"))  # doctest: +SKIP
    DataFrame[body_embedding: array<float>]
    """
    from pyspark.sql import functions as F

    col = F.col(column) if isinstance(column, str) else column
    name = column if isinstance(column, str) else None
    out: Column = _decode_udf()(col)
    return out.alias(name) if name else out


def _decode_udf() -> Any:
    from user_spark.compat import has_arrow_udf, scalar_udf

    # No type hints on the UDF bodies: pyspark would infer a UDF kind from them.
    if has_arrow_udf():

        def decode(values):  # type: ignore[no-untyped-def]
            return float16_to_arrow_list(values)

        return scalar_udf(decode, spark_type("float32"), arrow=True)

    def decode_pandas(values):  # type: ignore[no-untyped-def]
        import pyarrow as pa

        return float16_to_arrow_list(pa.array(values, type=pa.binary())).to_pandas()

    return scalar_udf(decode_pandas, spark_type("float32"), arrow=False)
