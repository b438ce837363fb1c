"""Peak memory of a Python worker embedding the worst case: every row at max_seq_length (512) tokens.

Each configuration runs in a fresh process, as a Spark Python worker would: load the encoder (one torch thread,
as Spark sets OMP_NUM_THREADS=1 per task), reset the kernel's peak-RSS counter (``/proc/self/clear_refs``),
embed ``batches`` full model batches of worst-case rows at a token budget, and read the peak back (VmHWM).
``peak - loaded`` is what embedding adds to the loaded model; the token budget should bound it whatever the
number of rows, so ``8192x1`` and ``8192x3`` should match, and it should grow with the budget.

    python bench/memory.py                                  # USER-base architecture (built with random weights)
    python bench/memory.py --model DIR --configs 2048x2,8192x1,8192x3,16384x1 --out bench/results/memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_CONFIGS = "2048x2,8192x1,8192x3,16384x1"


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def worst_case_texts(rows: int) -> list[str]:
    """Distinct real Russian texts of ~8,000 characters each: far over 512 tokens, so every row is truncated."""
    path = os.path.join(ROOT, "tests", "data", "ru_prose_sentences_300.tsv")
    with open(path, encoding="utf-8") as fh:
        sentences = [line.rstrip("\n").split("\t", 1)[1] for line in fh.readlines()[1:]]
    corpus = " ".join(sentences * 3)
    return [corpus[(i * 997) % 20_000 :][:8_000] for i in range(rows)]


def measure(model_dir: str, budget: int, batches: int, threads: int) -> dict:
    """Run in a fresh process: load, reset the peak, embed worst-case rows, return the numbers (MiB)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, ROOT)
    from user_spark.model.spec import read_model_spec
    from user_spark.runtime.device import choose_device
    from user_spark.runtime.encoder import Encoder

    spec = read_model_spec(model_dir)
    encoder = Encoder(spec, model_dir, choose_device(task_cpus=threads), name=model_dir)
    rows = batches * max(1, budget // spec.max_seq_length)
    texts = worst_case_texts(rows)
    encoder.embed(texts[:1], "passage: ", batch_tokens=budget)  # first-call allocations belong to "loaded"
    loaded = _status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets VmHWM (peak RSS) to the current RSS
    start = time.perf_counter()
    out = encoder.embed(texts, "passage: ", batch_tokens=budget)
    seconds = time.perf_counter() - start
    peak = _status_mib("VmHWM")
    assert out.truncated == rows, "every row must be a worst-case (truncated) row"
    return {
        "model": model_dir, "budget": budget, "batches": batches, "rows": rows, "tokens": out.tokens,
        "threads": threads, "loaded_mib": round(loaded, 1), "peak_mib": round(peak, 1),
        "embedding_mib": round(peak - loaded, 1), "seconds": round(seconds, 2),
    }


def measure_tokenize(model_dir: str, rows: int) -> dict:
    """Peak memory of tokenizing one whole Arrow batch of worst-case rows (the default is 10,000 rows)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, ROOT)
    from user_spark.model.spec import read_model_spec
    from user_spark.runtime.device import choose_device
    from user_spark.runtime.encoder import Encoder

    encoder = Encoder(read_model_spec(model_dir), model_dir, choose_device(task_cpus=1), name=model_dir)
    texts = ["passage: " + t for t in worst_case_texts(rows)]
    loaded = _status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    ids, truncated = encoder.tokenize(texts)
    return {"tokenize_rows": rows, "tokens": int(sum(map(len, ids))), "truncated": int(truncated.sum()),
            "tokenize_peak_mib": round(_status_mib("VmHWM") - loaded, 1)}


def run(model_dir: str, configs: list[tuple[int, int]], threads: int) -> list[dict]:
    results = []
    for budget, batches in configs:
        proc = subprocess.run(
            [sys.executable, __file__, "--measure", model_dir, str(budget), str(batches), str(threads)],
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"budget {budget} x {batches} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def parse_configs(text: str) -> list[tuple[int, int]]:
    return [(int(b), int(n)) for b, n in (item.split("x") for item in text.split(","))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: USER-base's architecture, random weights)")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="BUDGETxBATCHES,... (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "memory.json"))
    parser.add_argument("--tokenize-rows", type=int, default=10_000,
                        help="also measure tokenizing one Arrow batch of this many worst-case rows (0: skip)")
    parser.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--measure-tokenize", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        model_dir, budget, batches, threads = args.measure
        print(json.dumps(measure(model_dir, int(budget), int(batches), int(threads))))
        return 0
    if args.measure_tokenize:
        print(json.dumps(measure_tokenize(args.measure_tokenize[0], int(args.measure_tokenize[1]))))
        return 0
    with tempfile.TemporaryDirectory(prefix="user_spark-bench-") as tmp:
        model_dir = args.model
        if model_dir is None:
            sys.path.insert(0, ROOT)
            from user_spark.testing import build_random_model

            model_dir = build_random_model(os.path.join(ROOT, "tests", "data", "USER-base"), os.path.join(tmp, "m"))
        results = run(model_dir, parse_configs(args.configs), args.threads)
        tokenize = None
        if args.tokenize_rows:
            proc = subprocess.run([sys.executable, __file__, "--measure-tokenize", model_dir, str(args.tokenize_rows)],
                                  capture_output=True, text=True, check=True)
            tokenize = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{'budget':>7} {'batches':>7} {'rows':>5} {'tokens':>7} {'loaded MiB':>10} {'peak MiB':>9} "
          f"{'embedding MiB':>13} {'s':>6}")
    for r in results:
        print(f"{r['budget']:>7} {r['batches']:>7} {r['rows']:>5} {r['tokens']:>7} {r['loaded_mib']:>10} "
              f"{r['peak_mib']:>9} {r['embedding_mib']:>13} {r['seconds']:>6}")
    if tokenize:
        print(f"tokenizing one Arrow batch of {tokenize['tokenize_rows']} worst-case rows ({tokenize['tokens']} "
              f"tokens): peak +{tokenize['tokenize_peak_mib']} MiB over the texts themselves")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(
            {
                "command": " ".join(["python", "bench/memory.py", *(argv or sys.argv[1:])]),
                "results": results,
                "tokenize": tokenize,
            },
            fh,
            indent=2,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
