"""What differs between pyspark versions, decided in ``user_spark.compat``: each path checked on the leg that
runs it (``.ci/run`` runs this file on pyspark 4.x and 3.5)."""

from __future__ import annotations

import random

import pytest
from conftest import needs_arrow_udf
from pyspark.sql import functions as F
from pyspark.sql.utils import AnalysisException

from user_spark import OptionError, embed_udf
from user_spark.compat import error_condition, has_arrow_udf, replace_invalid_utf8, valid_utf8

# Lone continuation bytes, cut sequences, overlong forms, encoded surrogates, code points past U+10FFFF, and
# valid Cyrillic and emoji around them.
CASES = [
    "41FF42", "C3", "C328", "E282", "E28228", "F0908C", "F09028BC", "EDA080", "EDA080EDB080", "C0AF", "F4908080",
    "FE", "80BF", "E0808F", "F8888080AF", "41C3A9E282AC", "", "F0", "D0BFD180D0B8D0B2D0B5D182", "F09F9882C3",
]


def _random_bytes(n: int, seed: int = 0) -> list[str]:
    """Short byte strings dense in lead and continuation bytes, where the replacement rules matter."""
    rng = random.Random(seed)
    pool = [*range(0x00, 0x80, 9), *range(0x80, 0x100)]
    return [bytes(rng.choice(pool) for _ in range(rng.randint(1, 10))).hex().upper() for _ in range(n)]


@pytest.mark.parametrize("repair", [valid_utf8, replace_invalid_utf8], ids=["valid_utf8", "regex"])
def test_invalid_utf8_becomes_what_python_decodes_with_replacement(spark, repair):
    cases = CASES + _random_bytes(400)
    df = spark.createDataFrame([(c,) for c in cases], "hex string")
    rows = df.select("hex", F.hex(repair(F.unhex("hex").cast("string")).cast("binary")).alias("out")).collect()
    got = {r.hex: r.out for r in rows}
    # Python's decoder replaces each maximal invalid subpart with one U+FFFD, as the Unicode standard recommends.
    assert got == {c: bytes.fromhex(c).decode("utf-8", "replace").encode().hex().upper() for c in cases}


def test_the_embedding_udf_is_arrow_native_exactly_where_pyspark_has_arrow_udf(spark, tiny_model):
    from pyspark.rdd import PythonEvalType

    kind = embed_udf(tiny_model).evalType
    arrow_kind = getattr(PythonEvalType, "SQL_SCALAR_ARROW_UDF", None)
    assert kind == (arrow_kind if has_arrow_udf() else PythonEvalType.SQL_SCALAR_PANDAS_UDF)
    assert embed_udf(tiny_model, udf_type="pandas").evalType == PythonEvalType.SQL_SCALAR_PANDAS_UDF


@pytest.mark.skipif(has_arrow_udf(), reason="this pyspark has arrow_udf")
def test_arrow_udf_type_without_arrow_udf_names_the_version(spark, tiny_model):
    with pytest.raises(OptionError, match=r"udf_type='arrow' needs pyspark >= 4\.1 \(arrow_udf\), this is 3\.5"):
        embed_udf(tiny_model, udf_type="arrow")


@needs_arrow_udf
def test_arrow_udf_type_is_accepted_where_pyspark_has_it(spark, tiny_model):
    assert embed_udf(tiny_model, udf_type="arrow").evalType == embed_udf(tiny_model).evalType


def test_error_condition_of_a_missing_path(spark, tmp_path):
    with pytest.raises(AnalysisException) as info:
        spark.read.parquet(str(tmp_path / "missing")).schema  # noqa: B018
    assert error_condition(info.value) == "PATH_NOT_FOUND"
