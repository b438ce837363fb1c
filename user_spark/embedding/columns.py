"""Driver-side schema checks on the columns an embedding reads (no job runs)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from user_spark.errors import ColumnError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

__all__ = ["check_text_column", "column", "is_string_type", "with_named_column"]


def column(name: str) -> Column:
    """``F.col`` of a column *name*, dots and backticks included (``"body.text"`` is one column, not a field)."""
    from pyspark.sql import functions as F

    return F.col("`" + name.replace("`", "``") + "`")


def is_string_type(data_type: Any) -> bool:
    """Spark's string types: ``string``, ``varchar(n)``, ``char(n)``."""
    from pyspark.sql.types import CharType, StringType, VarcharType

    return isinstance(data_type, (StringType, VarcharType, CharType))


def check_text_column(df: DataFrame, name: str, what: str = "text") -> None:
    """Raise :class:`ColumnError` unless ``df`` has a string column ``name``.

    >>> check_text_column(df, "body")  # doctest: +SKIP
    ColumnError: Column 'body' not found; available: ['id', 'text']
    """
    fields = {f.name: f for f in df.schema.fields}
    if name not in fields:
        raise ColumnError(f"Column {name!r} not found; available: {list(fields)}")
    if not is_string_type(fields[name].dataType):
        raise ColumnError(
            f"Column {name!r} is {fields[name].dataType.simpleString()}, but the {what} column must be a string; "
            f"cast it first: df.withColumn({name!r}, F.col({name!r}).cast('string'))"
        )


def with_named_column(df: DataFrame, name: str, col: Column, metadata: dict[str, Any]) -> DataFrame:
    """``df`` with ``col`` as column ``name`` (dots allowed) carrying ``metadata``, replacing a column of that name.

    ``withMetadata`` parses its argument as a column path and Spark Connect's ``withColumn`` drops an alias's
    metadata, so the column gets a plain temporary name, its metadata, then its own name (a rename keeps it).
    """
    temp = "__user_spark_column"
    out = df.withColumn(temp, col).withMetadata(temp, metadata)
    if name in df.columns:  # in its place, as withColumn would
        out = out.select(*[out[temp] if c == name else column(c) for c in df.columns])
    return out.withColumnRenamed(temp, name)
