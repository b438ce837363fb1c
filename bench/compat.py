"""What differs between pyspark 3.5 and 4.x, measured: how the UDF hands vectors back, and the UTF-8 repair.

    python bench/compat.py                       # in the 4.x virtualenv, then again in the 3.5 one
    python bench/compat.py --rows 20000 --texts 200000 --repeats 3

Three measurements, each against a baseline in the same run:
- ``convert``: one Arrow batch of vectors (10,000 rows, 768 and 384 floats) back to Spark, no Spark involved:
  the Arrow-native UDF builds one ``list<float>`` array from a contiguous buffer (``storage.to_arrow``); a
  pandas UDF returns a Series of one numpy array per row, which pyspark converts with
  ``pa.Array.from_pandas`` (its serializer's call). Microseconds per row, best of 5.
- ``udf``: the embedding UDF on ``local[2]`` with a zero-layer USER-base (real tokenizer, 768-d output: Spark,
  Arrow, tokenisation, pooling and conversion only, where the output path weighs most), ``--rows`` short
  texts to the ``noop`` sink, as ``udf_type="pandas"`` and, where pyspark has ``arrow_udf``, ``"arrow"``.
- ``utf8``: the JVM-side repair of invalid UTF-8 the UDF wrapper applies to every text, over ``--texts`` real
  Russian sentences to the ``noop`` sink: none (baseline), ``make_valid_utf8`` (4.x) and the regular expression
  3.5 uses (:func:`user_spark.compat.replace_invalid_utf8`, runnable on 4.x too).
Timed runs alternate between the variants (medians of ``--repeats``), since the machine is shared.
Results go to bench/results/compat-pyspark-<version>.json.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import statistics
import tempfile
import time
from collections.abc import Callable

# embed.py's setup: the checkout on sys.path, the hub offline, this Python for Spark's workers.
from embed import ROOT, SHARED, _best


def sentences(n: int) -> list[str]:
    """n real Russian prose sentences (../shared/data), repeated if n is larger than the file."""
    with lzma.open(os.path.join(SHARED, "ru_prose_sentences.tsv.xz"), "rt", encoding="utf-8") as fh:
        next(fh)
        rows = [line.rstrip("\n").split("\t", 1)[1] for line in fh]
    return [rows[i % len(rows)] for i in range(n)]


def _best_us_per_row(fn: Callable[[], object], rows: int) -> float:
    return _best(fn) / rows * 1e6


def convert(rows: int = 10_000) -> list[dict]:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from user_spark.embedding.storage import to_arrow, to_python

    out = []
    for dim in (768, 384):
        vectors = np.random.default_rng(0).standard_normal((rows, dim)).astype(np.float32)
        valid = np.ones(rows, dtype=bool)
        list_type = pa.list_(pa.float32())

        def pandas_path(v=vectors, ok=valid, t=list_type) -> object:
            series = pd.Series(to_python(v, ok, "float32"), dtype=object)
            return pa.Array.from_pandas(series, type=t)

        def arrow_path(v=vectors, ok=valid) -> object:
            return to_arrow(v, ok, "float32")

        pandas_us = _best_us_per_row(pandas_path, rows)
        arrow_us = _best_us_per_row(arrow_path, rows)
        out.append({"dim": dim, "rows": rows, "pandas_us_per_row": pandas_us, "arrow_us_per_row": arrow_us,
                    "ratio": pandas_us / arrow_us})
    return out


def _spark():
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.master("local[2]")
        .appName("bench-compat")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _interleaved(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    for action in variants.values():
        action()  # warm-up: Python workers, model loads, JIT
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, action in variants.items():
            times[name].append(_timed(action))
    return {name: statistics.median(values) for name, values in times.items()}


def udf(spark, rows: int, repeats: int) -> dict:
    from user_spark import embed_udf
    from user_spark.compat import has_arrow_udf
    from user_spark.testing import build_random_model

    model = build_random_model(os.path.join(ROOT, "tests", "data", "USER-base"),
                               tempfile.mkdtemp(prefix="bench-compat-"), num_hidden_layers=0)
    texts = [s[:80] for s in sentences(rows)]
    df = spark.createDataFrame(list(enumerate(texts)), "id long, text string").repartition(2).cache()
    df.count()
    kinds = ["pandas", "arrow"] if has_arrow_udf() else ["pandas"]

    def run(kind: str) -> Callable[[], object]:
        embed = embed_udf(model, udf_type=kind)
        return lambda: df.select("id", embed("text").alias("e")).write.format("noop").mode("overwrite").save()

    seconds = _interleaved({kind: run(kind) for kind in kinds}, repeats)
    return {"rows": rows, "seconds": seconds, "rows_per_s": {k: rows / v for k, v in seconds.items()}}


def utf8(spark, texts: int, repeats: int) -> dict:
    from pyspark.sql import functions as F

    from user_spark.compat import has_make_valid_utf8, replace_invalid_utf8

    df = spark.createDataFrame([(t,) for t in sentences(texts)], "text string").repartition(2).cache()
    df.count()
    mb = sum(len(t.encode()) for t in sentences(texts)) / 1e6
    repairs = {"none": F.col("text"), "regex (3.5 path)": replace_invalid_utf8(F.col("text"))}
    if has_make_valid_utf8():
        repairs["make_valid_utf8 (4.x path)"] = F.make_valid_utf8("text")

    def run(col) -> Callable[[], object]:
        return lambda: df.select(col.alias("t")).write.format("noop").mode("overwrite").save()

    seconds = _interleaved({name: run(col) for name, col in repairs.items()}, repeats)
    extra = {name: (s - seconds["none"]) / texts * 1e6 for name, s in seconds.items()}
    return {"texts": texts, "mb": mb, "seconds": seconds, "extra_us_per_text": extra}


def report(result: dict) -> None:
    print(f"\npyspark {result['pyspark']}, numpy {result['numpy']}, pyarrow {result['pyarrow']}")
    print("\n| vectors back to Spark | dim | pandas UDF us/row | Arrow-native us/row | ratio |\n|---|---:|---:|---:|---:|")
    for c in result["convert"]:
        print(f"| one batch of {c['rows']:,} rows | {c['dim']} | {c['pandas_us_per_row']:.2f} | "
              f"{c['arrow_us_per_row']:.2f} | {c['ratio']:.1f}x |")
    u = result["udf"]
    print(f"\n| embedding UDF, zero-layer USER-base, {u['rows']:,} rows | seconds | rows/s |\n|---|---:|---:|")
    for kind, s in u["seconds"].items():
        print(f"| udf_type={kind} | {s:.2f} | {u['rows_per_s'][kind]:,.0f} |")
    t = result["utf8"]
    print(f"\n| UTF-8 repair, {t['texts']:,} texts ({t['mb']:.1f} MB) | seconds | extra us/text |\n|---|---:|---:|")
    for name, s in t["seconds"].items():
        print(f"| {name} | {s:.2f} | {t['extra_us_per_text'][name]:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="texts for the UDF measurement")
    parser.add_argument("--texts", type=int, default=200_000, help="texts for the UTF-8 repair measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import numpy as np
    import pyarrow as pa
    import pyspark

    result = {"pyspark": pyspark.__version__, "numpy": np.__version__, "pyarrow": pa.__version__,
              "convert": convert()}
    spark = _spark()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        result["udf"] = udf(spark, args.rows, args.repeats)
        result["utf8"] = utf8(spark, args.texts, args.repeats)
    finally:
        spark.stop()
    report(result)
    out = args.out or os.path.join(ROOT, "bench", "results", f"compat-pyspark-{pyspark.__version__}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(f"\n-> {out}")


if __name__ == "__main__":
    main()
