"""What the installed pyspark can do, for the few places where versions differ (a leaf: imports nothing of
user_spark but its error types, so every layer may use it).

user_spark runs on pyspark 3.5.x and 4.x; each difference is decided here, at run time, from what the
installed pyspark has (a feature test, not a version number, wherever a feature can be tested):

- ``arrow_udf`` (4.1+): the embedding UDF hands vectors back as one Arrow buffer; older: a pandas UDF.
- ``make_valid_utf8`` (4.0+): invalid UTF-8 becomes U+FFFD on the JVM; 3.5: the same replacement by a regular
  expression over the bytes (:func:`replace_invalid_utf8`).
- error classes: ``getCondition()`` (4.0+) or ``getErrorClass()`` (3.5).
- pyarrow and numpy: pyspark 3.5's extras pin ``numpy<2`` while pyarrow >= 26 needs numpy 2; pyspark then says
  "PyArrow >= 4.0.0 must be installed" although it is. :func:`require_arrow` names the real cause.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import Column
    from pyspark.sql.types import DataType

__all__ = [
    "error_condition",
    "has_arrow_udf",
    "has_make_valid_utf8",
    "pyspark_version",
    "replace_invalid_utf8",
    "require_arrow",
    "scalar_udf",
    "valid_utf8",
]


@functools.cache
def pyspark_version() -> tuple[int, int]:
    """``(major, minor)`` of the installed pyspark, e.g. ``(3, 5)``; for messages and test skips only."""
    import pyspark

    major, minor = pyspark.__version__.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def has_arrow_udf() -> bool:
    """pyspark >= 4.1 has ``arrow_udf``: Arrow batches in and out, without pandas in between."""
    try:
        from pyspark.sql.pandas.functions import arrow_udf  # noqa: F401
    except ImportError:
        return False
    return True


def has_make_valid_utf8() -> bool:
    """pyspark >= 4.0 has ``make_valid_utf8`` (a Catalyst expression; Spark Connect has it too)."""
    from pyspark.sql import functions as F

    return hasattr(F, "make_valid_utf8")


def valid_utf8(col: Column) -> Column:
    """``col``, a string column, with each invalid UTF-8 sequence replaced by U+FFFD.

    Spark strings are bytes and may hold invalid UTF-8 (a Parquet file written by another tool, a binary cast to
    string); Arrow then fails the whole task before a Python UDF sees the batch. Spark >= 4.0 has
    ``make_valid_utf8``; on 3.5, :func:`replace_invalid_utf8` does the same on the JVM. Both replace each maximal
    invalid subpart with one U+FFFD, as Python's ``bytes.decode("utf-8", "replace")`` does.
    """
    from pyspark.sql import functions as F

    if has_make_valid_utf8():
        out: Column = F.make_valid_utf8(col)
        return out
    return replace_invalid_utf8(col)


# Well-formed UTF-8 (Unicode Table 3-7) and the maximal subparts of ill-formed sequences, longest first, over a
# Latin-1 view of the bytes (one char per byte). A Java string round trip (decode(encode(c))) is no stand-in:
# its decoder turns an encoded surrogate (ED A0 80) into one U+FFFD, make_valid_utf8 and Python into three.
_CONT = r"[\x80-\xBF]"
_WELL_FORMED = (
    rf"[\x00-\x7F]|[\xC2-\xDF]{_CONT}|\xE0[\xA0-\xBF]{_CONT}|[\xE1-\xEC\xEE\xEF]{_CONT}{{2}}|\xED[\x80-\x9F]{_CONT}"
    rf"|\xF0[\x90-\xBF]{_CONT}{{2}}|[\xF1-\xF3]{_CONT}{{3}}|\xF4[\x80-\x8F]{_CONT}{{2}}"
)
_ILL_FORMED = (
    rf"\xF0[\x90-\xBF]{_CONT}|[\xF1-\xF3]{_CONT}{{2}}|\xF4[\x80-\x8F]{_CONT}"
    rf"|\xE0[\xA0-\xBF]|[\xE1-\xEC\xEE\xEF]{_CONT}|\xED[\x80-\x9F]|\xF0[\x90-\xBF]|[\xF1-\xF3]{_CONT}|\xF4[\x80-\x8F]"
    r"|[\x80-\xFF]"
)
# From where the last match ended: a run of well-formed sequences, then one ill-formed part -> the run, U+FFFD.
_REPAIR = rf"\G((?:{_WELL_FORMED})*+)(?:{_ILL_FORMED})"
_FFFD_AS_LATIN1 = "\u00ef\u00bf\u00bd"  # U+FFFD's UTF-8 bytes EF BF BD, one Latin-1 char each


def replace_invalid_utf8(col: Column) -> Column:
    """:func:`valid_utf8` from functions every supported Spark has (3.5 included): the bytes as Latin-1 text, a
    regular expression that replaces each maximal ill-formed part with U+FFFD's bytes, and back. Valid text passes
    unchanged; it costs one regex scan per value on the JVM (``bench/compat.py`` measures it)."""
    from pyspark.sql import functions as F

    latin1 = F.decode(col.cast("binary"), "ISO-8859-1")
    repaired = F.regexp_replace(latin1, _REPAIR, "$1" + _FFFD_AS_LATIN1)
    return F.encode(repaired, "ISO-8859-1").cast("string")


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


def require_arrow() -> None:
    """Import pyarrow, or raise a :class:`~user_spark.errors.UserSparkError` that says why it cannot load.

    ``pip install "pyspark[sql]==3.5.*"`` (or ``[connect]``) pins ``numpy<2``, while pyarrow >= 26 needs numpy 2
    without declaring it, so pip installs a pair that cannot be imported; pyspark then reports a missing pyarrow.
    """
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        from user_spark.errors import UserSparkError

        reason = str(exc)
        if "NumPy" in reason or "numpy" in reason:
            raise UserSparkError(
                f"pyarrow cannot be imported: {reason}. pyspark {'.'.join(map(str, pyspark_version()))}'s extras "
                "pin numpy<2 on 3.5; install a pyarrow that supports this numpy (pip install 'pyarrow<26') or "
                "numpy>=2 (pip install 'numpy>=2' without pyspark's [sql]/[connect] extras)"
            ) from None
        raise UserSparkError(f"pyarrow cannot be imported ({reason}); pip install 'pyarrow>=15'") from None


def scalar_udf(func: Callable[..., Any], return_type: DataType, *, arrow: bool) -> Any:
    """A scalar vectorized UDF of ``func``: ``arrow_udf`` (Arrow arrays in and out, pyspark >= 4.1) or
    ``pandas_udf`` (pandas Series). ``func`` carries no type hints, so pyspark infers no other kind from them."""
    if arrow:
        from pyspark.sql.pandas.functions import arrow_udf

        return arrow_udf(func, returnType=return_type)  # type: ignore[call-overload]
    from pyspark.sql.pandas.functions import pandas_udf

    return pandas_udf(func, returnType=return_type)  # type: ignore[call-overload]
