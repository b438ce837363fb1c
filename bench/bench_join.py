"""Similarity joins against faiss in the same run: exact vs ``IndexFlatIP``, IVF vs ``IndexIVFFlat`` (same lists).

    PYTHONPATH=. python bench/bench_join.py exact --rows 10000 100000 --repeats 3
    PYTHONPATH=. python bench/bench_join.py ivf --rows 100000 300000 1000000
    PYTHONPATH=. python bench/bench_join.py topk          # block_topk against its own GEMM, one core

Vectors: ``bench_jobs.clustered_vectors`` (unit, 384-d, 200 topics), written once as Parquet under
``bench/results/vectors-<n>.parquet`` so Spark reads a file, as a job would. Each join is a self-join, k = 10,
its pairs written as Parquet (the time includes the write). ``--repeats R`` runs each join R times in the
session: the first run pays for starting Python workers and the JVM's first compilations (a cold
``spark-submit``), later ones are what a notebook or a pipeline's later stage sees; both are reported. Recall@10 is measured on 1,000 sampled rows
against a numpy brute force; faiss (2 threads, this process) runs the same search on the same vectors: build
and search for ``IndexFlatIP``, train + add + search for ``IndexIVFFlat`` with the same ``nlist``, ``nprobe``
and training-sample size. Prints a table and writes ``bench/results/join-<mode>.json``.

Run it with ``PYTHONPATH`` pointing at another tree (the old code) to compare versions: the faiss numbers in
each run are the common yardstick.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

if sys.argv[1:2] == ["topk"]:  # one thread, as in a Spark task; must be set before numpy loads its BLAS
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_jobs import RESULTS, clustered_vectors, session

K = 10
QUERIES = 1000


def vectors_parquet(n: int) -> tuple[str, np.ndarray]:
    """``(path, vectors)``: ``clustered_vectors(n)`` as a Parquet file of ``(id long, emb list<float>)``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = clustered_vectors(n)
    path = os.path.join(RESULTS, f"vectors-{n}.parquet")
    if not os.path.exists(path):
        offsets = pa.array(np.arange(0, (n + 1) * x.shape[1], x.shape[1], dtype=np.int32))
        emb = pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1)))
        pq.write_table(pa.table({"id": pa.array(np.arange(n, dtype=np.int64)), "emb": emb}), path,
                       row_group_size=50_000)
    return path, x


def reference(x: np.ndarray, queries: np.ndarray) -> np.ndarray:
    sims = x[queries] @ x.T
    sims[np.arange(len(queries)), queries] = -np.inf
    return np.argsort(-sims, axis=1, kind="stable")[:, :K]


def recall(found: dict[int, set[int]], queries: np.ndarray, ref: np.ndarray) -> float:
    return float(np.mean([len(found.get(int(q), set()) & set(ref[i].tolist())) / K for i, q in enumerate(queries)]))


def spark_pairs(spark, path: str, method: str, queries: np.ndarray, **kw) -> tuple[float, dict[int, set[int]]]:
    """Time a self-join written as Parquet; return the seconds and the sampled queries' matches."""
    import pyarrow.parquet as pq

    from user_spark import similarity_join

    out = tempfile.mkdtemp(prefix="bench-join-")
    shutil.rmtree(out)
    start = time.perf_counter()
    df = spark.read.parquet(path)
    similarity_join(df, left_id_col="id", left_embedding_col="emb", k=K, method=method, **kw).write.parquet(out)
    seconds = time.perf_counter() - start
    table = pq.read_table(out, columns=["id", "id_right"], filters=[("id", "in", queries.tolist())]).to_pandas()
    shutil.rmtree(out)
    return seconds, table.groupby("id")["id_right"].apply(set).to_dict()


def faiss_exact(x: np.ndarray) -> float:
    import faiss

    faiss.omp_set_num_threads(2)
    start = time.perf_counter()
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    index.search(x, K + 1)
    return time.perf_counter() - start


def faiss_ivf(x: np.ndarray, nlist: int, nprobe: int, train_rows: int, queries: np.ndarray):
    import faiss

    faiss.omp_set_num_threads(2)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    quantizer = faiss.IndexFlatIP(x.shape[1])
    index = faiss.IndexIVFFlat(quantizer, x.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(x[np.sort(rng.choice(len(x), min(train_rows, len(x)), replace=False))])
    index.add(x)
    index.nprobe = nprobe
    _, found = index.search(x, K + 1)
    seconds = time.perf_counter() - start
    matches = {int(q): {int(j) for j in found[q] if j != q and j >= 0} for q in queries}
    return seconds, matches


def bench_exact(spark, n: int, repeats: int = 1) -> dict:
    path, x = vectors_parquet(n)
    queries = np.sort(np.random.default_rng(1).choice(n, min(QUERIES, n), replace=False))
    ref = reference(x, queries)
    runs = [spark_pairs(spark, path, "exact", queries) for _ in range(repeats)]
    faiss_s = faiss_exact(x)
    times = [seconds for seconds, _ in runs]
    out = {"rows": n, "exact_s": times[0], "times_s": times, "recall@10": min(recall(f, queries, ref) for _, f in runs),
           "faiss_flat_s": faiss_s, "ratio": times[0] / faiss_s}
    if repeats > 1:
        out["warm_s"] = float(np.median(times[1:]))
        out["warm_ratio"] = out["warm_s"] / faiss_s
    return out


def bench_ivf(spark, n: int, nlist: int | None, nprobe: int | None) -> dict:
    from user_spark.ops.ivf import default_nlist, default_nprobe, default_train_rows

    path, x = vectors_parquet(n)
    nlist = nlist or default_nlist(n)
    nprobe = nprobe or default_nprobe(nlist)
    queries = np.sort(np.random.default_rng(1).choice(n, min(QUERIES, n), replace=False))
    ref = reference(x, queries)
    seconds, found = spark_pairs(spark, path, "ivf", queries, nlist=nlist, nprobe=nprobe)
    faiss_s, faiss_found = faiss_ivf(x, nlist, nprobe, default_train_rows(nlist), queries)
    return {"rows": n, "nlist": nlist, "nprobe": nprobe, "ivf_s": seconds, "recall@10": recall(found, queries, ref),
            "faiss_ivf_s": faiss_s, "faiss_recall@10": recall(faiss_found, queries, ref), "ratio": seconds / faiss_s}


def bench_topk(rows: int = 2048, cols: int = 50_000) -> dict:
    """``block_topk`` against the GEMM that makes its scores, one thread (as in a Spark task)."""
    from user_spark.ops.topk import block_topk

    x = clustered_vectors(rows + cols, seed=3)
    a, b = x[:rows], x[rows:]
    ids_a, ids_b = np.arange(rows), np.arange(cols)
    out: dict = {"rows": rows, "cols": cols}
    for name, fn in (("gemm_s", lambda: [a[s : s + 1024] @ b.T for s in range(0, rows, 1024)]),
                     ("block_topk_s", lambda: block_topk(ids_a, a, ids_b, b, K))):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        out[name] = best
    out["ratio"] = out["block_topk_s"] / out["gemm_s"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["exact", "ivf", "topk"])
    parser.add_argument("--rows", type=int, nargs="+", default=[10000])
    parser.add_argument("--nlist", type=int)
    parser.add_argument("--nprobe", type=int)
    parser.add_argument("--repeats", type=int, default=1, help="exact: runs of each join in one session")
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args(argv)
    os.makedirs(RESULTS, exist_ok=True)
    if args.mode == "topk":
        result = bench_topk()
        print(json.dumps(result))
        with open(os.path.join(RESULTS, "join-topk.json"), "w") as fh:
            json.dump(result, fh, indent=2)
        return 0
    spark = session(args.master)
    import user_spark

    results = {"mode": args.mode, "code": os.path.dirname(user_spark.__file__), "runs": []}
    for n in args.rows:
        run = bench_exact(spark, n, args.repeats) if args.mode == "exact" else bench_ivf(spark, n, args.nlist, args.nprobe)
        results["runs"].append(run)
        print(json.dumps(run), flush=True)
    spark.stop()
    if args.mode == "exact":
        print("\n| rows | user_spark exact, first run s | warm s (median) | recall@10 | faiss IndexFlatIP s | ratio first "
              "| ratio warm |\n|---|---:|---:|---:|---:|---:|---:|")
        for r in results["runs"]:
            warm = (f"{r['warm_s']:.1f} | ", f"{r['warm_ratio']:.2f}x") if "warm_s" in r else ("| ", "")
            print(f"| {r['rows']:,} | {r['exact_s']:.1f} | {warm[0]}{r['recall@10']:.3f} | {r['faiss_flat_s']:.2f} | "
                  f"{r['ratio']:.2f}x | {warm[1]} |")
    else:
        print("\n| rows | nlist | nprobe | user_spark IVF s | recall@10 | faiss IVFFlat s | faiss recall@10 | ratio |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in results["runs"]:
            print(f"| {r['rows']:,} | {r['nlist']} | {r['nprobe']} | {r['ivf_s']:.1f} | {r['recall@10']:.3f} | "
                  f"{r['faiss_ivf_s']:.1f} | {r['faiss_recall@10']:.3f} | {r['ratio']:.2f}x |")
    with open(os.path.join(RESULTS, f"join-{args.mode}.json"), "w") as fh:
        json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
