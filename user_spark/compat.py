"""What the installed pyspark can do, for the few places where versions differ (a leaf: imports nothing of
user_spark, so every layer may use it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql.types import DataType

__all__ = ["error_condition", "has_arrow_udf", "scalar_udf"]


def has_arrow_udf() -> bool:
    """pyspark >= 4.1 has ``arrow_udf``: Arrow batches in and out, without pandas in between."""
    try:
        from pyspark.sql.pandas.functions import arrow_udf  # noqa: F401
    except ImportError:
        return False
    return True


def error_condition(exc: BaseException) -> str | None:
    """The error class of a Spark exception (``PATH_NOT_FOUND``, ...): ``getCondition()`` on pyspark >= 4.0,
    ``getErrorClass()`` on 3.5; ``None`` when it has none."""
    for name in ("getCondition", "getErrorClass"):
        method = getattr(exc, name, None)
        if method is None:
            continue
        try:
            value = method()
        except Exception:  # a Py4J call on a dead gateway, or a server that sent no class
            continue
        if value:
            return str(value)
    return None


def scalar_udf(func: Callable[..., Any], return_type: DataType, *, arrow: bool) -> Any:
    """A scalar vectorized UDF of ``func``: ``arrow_udf`` (Arrow arrays in and out, pyspark >= 4.1) or
    ``pandas_udf`` (pandas Series). ``func`` carries no type hints, so pyspark infers no other kind from them."""
    if arrow:
        from pyspark.sql.pandas.functions import arrow_udf

        return arrow_udf(func, returnType=return_type)  # type: ignore[call-overload]
    from pyspark.sql.pandas.functions import pandas_udf

    return pandas_udf(func, returnType=return_type)  # type: ignore[call-overload]
