"""The same inputs give the same results on every pyspark user_spark supports (3.5 and 4.x).

The library's jobs (``connect_checks.run_jobs``: dedup on vectors and on text, clustering, the exact and IVF
joins, the embed job) and the UDF on hostile text run with the real all-MiniLM-L6-v2 weights, and their results
are checked against expectations stored under ``tests/data/expected`` (written on pyspark 4.3): embeddings and
scores to 1e-5 (another CPU's kernels round differently), everything else equal. ``.ci/run`` runs this file on
both legs with ``USER_SPARK_LEGS_DIR`` set: each leg saves its results there and compares them with the other
leg's, run on the same machine, to 1e-6.

Regenerate the expectations (after a deliberate change of results) with
``USER_SPARK_WRITE_EXPECTED=1 python -m pytest tests/spark/test_across_versions.py``.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import connect_checks
import numpy as np
import pandas as pd
import pytest
from conftest import DATA, xquad_sample

EXPECTED = os.path.join(DATA, "expected")
STORED_TOL = 1e-5
LEGS_TOL = 1e-6
# Invalid UTF-8 (a lone byte, a cut sequence, an encoded surrogate, an overlong form) next to valid text:
# Spark 4 replaces it with make_valid_utf8, 3.5 with a Java string round trip (user_spark.compat.valid_utf8).
HOSTILE_HEX = ["41FF42", "D0BFD180D0B8D0B2D0B5D182C3", "E28228D0BCD0B8D180", "EDA080D182D0B5D0BAD181D182", "C0AF41"]


def _leg_name() -> str:
    import pyspark

    return f"pyspark-{pyspark.__version__}"


def _hostile(spark: Any, model: str) -> pd.DataFrame:
    """Each hostile text's embedding (``e``) next to that of its Python-repaired twin (``e_clean``)."""
    from pyspark.sql import functions as F

    from user_spark import embed_udf

    clean = [bytes.fromhex(h).decode("utf-8", "replace") for h in HOSTILE_HEX]
    data = [(i, h, c) for i, (h, c) in enumerate(zip(HOSTILE_HEX, clean, strict=True))]
    rows = spark.createDataFrame(data, "id long, hex string, clean string")
    texts = rows.repartition(2).select("id", F.unhex("hex").cast("string").alias("text"), "clean")
    udf = embed_udf(model, role="query")
    return texts.select("id", udf("text").alias("e"), udf("clean").alias("e_clean")).toPandas()


@pytest.fixture(scope="module")
def results(spark, ru_texts, minilm_model, tmp_path_factory) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    inputs = str(tmp_path_factory.mktemp("across-versions"))
    paragraphs, questions = xquad_sample()
    connect_checks.write_inputs(inputs, ru_texts, [q for q, _ in questions[:8]], paragraphs)
    frames, facts = connect_checks.run_jobs(spark, inputs, minilm_model)
    frames["hostile"] = _hostile(spark, minilm_model)
    frames = {name: canonical(frame) for name, frame in frames.items()}
    if os.environ.get("USER_SPARK_WRITE_EXPECTED"):
        connect_checks.save(EXPECTED, frames, facts)
    return frames, facts


def _orders_rows(column: pd.Series) -> bool:
    """Whether a column is an exact sort key: no floats (they may differ in the last bits) and no arrays."""
    values = [v for v in column if v is not None]
    return not any(isinstance(v, (float, np.floating, list, tuple, np.ndarray, bytes, dict)) for v in values)


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns by name, rows sorted by every exact column (ids, ranks, labels), a plain index."""
    frame = frame[sorted(frame.columns)].copy()
    frame.attrs = {}
    keys = [c for c in frame.columns if _orders_rows(frame[c])]
    if keys:
        frame = frame.sort_values(keys, kind="stable", na_position="first")
    return frame.reset_index(drop=True)


def _load(folder: str) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    frames = {
        name[: -len(".parquet")]: pd.read_parquet(os.path.join(folder, name))
        for name in sorted(os.listdir(folder))
        if name.endswith(".parquet")
    }
    with open(os.path.join(folder, "facts.json"), encoding="utf-8") as fh:
        return frames, json.load(fh)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _same_value(a: Any, b: Any, tol: float) -> bool:
    """Equal, floats (also inside arrays and dicts) to ``tol``."""
    if _missing(a) or _missing(b):
        return _missing(a) and _missing(b)
    if isinstance(a, (list, tuple, np.ndarray)):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind == "f" or b.dtype.kind == "f":
            return a.shape == b.shape and bool(np.abs(a.astype(float) - b.astype(float)).max(initial=0) <= tol)
        return a.tolist() == b.tolist()
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k], tol) for k in a)
    if isinstance(a, (float, np.floating)):
        return abs(float(a) - float(b)) <= tol
    return bool(a == b)


def _differences(actual: dict[str, pd.DataFrame], expected: dict[str, pd.DataFrame], tol: float) -> list[str]:
    found = []
    assert sorted(actual) == sorted(expected)
    for name, frame in expected.items():
        got = actual[name]
        if list(got.columns) != list(frame.columns) or len(got) != len(frame):
            found.append(f"{name}: columns {list(got.columns)} x {len(got)} rows, expected {list(frame.columns)} x "
                         f"{len(frame)}")
            continue
        for column in frame.columns:
            bad = [i for i in range(len(frame)) if not _same_value(got[column][i], frame[column][i], tol)]
            if bad:
                found.append(f"{name}.{column}: rows {bad[:5]} differ ({got[column][bad[0]]!r} vs "
                             f"{frame[column][bad[0]]!r})")
    return found


def test_results_equal_the_stored_expectations(results):
    frames, facts = results
    expected_frames, expected_facts = _load(EXPECTED)
    assert _differences(frames, {k: canonical(v) for k, v in expected_frames.items()}, STORED_TOL) == []
    assert _same_value(json.loads(json.dumps(facts)), expected_facts, STORED_TOL)


def test_hostile_text_is_embedded_as_python_repairs_it(results):
    frames, _ = results
    hostile = frames["hostile"]
    assert len(hostile) == len(HOSTILE_HEX)
    # Each invalid UTF-8 sequence became U+FFFD as Python's decoder replaces it (the Unicode recommendation).
    for e, clean in zip(hostile["e"], hostile["e_clean"], strict=True):
        assert np.abs(np.asarray(e) - np.asarray(clean)).max() <= LEGS_TOL


@pytest.mark.skipif(not os.environ.get("USER_SPARK_LEGS_DIR"), reason="USER_SPARK_LEGS_DIR not set (.ci/run sets it)")
def test_results_equal_the_other_legs(results):
    frames, facts = results
    root = os.environ["USER_SPARK_LEGS_DIR"]
    connect_checks.save(os.path.join(root, _leg_name()), frames, facts)
    others = sorted(d for d in os.listdir(root) if d != _leg_name())
    for other in others:
        other_frames, other_facts = _load(os.path.join(root, other))
        assert _differences(frames, {k: canonical(v) for k, v in other_frames.items()}, LEGS_TOL) == [], other
        assert _same_value(json.loads(json.dumps(facts)), other_facts, LEGS_TOL), other
