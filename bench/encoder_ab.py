"""The encoder of two source trees, A/B, on the same texts: whether a change made the CPU path slower.

    git archive 36e8ab5 | tar -x -C /tmp/before
    python bench/encoder_ab.py --before /tmp/before --after . --rounds 3

Each round runs ``Encoder.embed`` (what the UDF calls per Arrow batch, without Spark) once per tree, each in a
fresh process with one torch thread (what Spark gives a task), the trees alternating so that a noisy neighbour
hits both alike; a run is the best of two passes after a warm-up. USER-base's architecture (random weights), real
Russian texts (``bench/gpu_bench.load_texts``). Prints medians and after/before time ratios, writes
bench/results/encoder-ab.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

RUN = r'''
import json, sys, time
sys.path.insert(0, sys.argv[4])
import gpu_bench
from user_spark.model.spec import read_model_spec
from user_spark.runtime.device import choose_device
from user_spark.runtime.encoder import Encoder
model, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
texts, _ = gpu_bench.load_texts(n)
enc = Encoder(read_model_spec(model), model, choose_device(precision=mode, task_cpus=1, cpu_bf16=True))
enc.embed(texts[:20], "query: ")
best = float("inf")
for _ in range(2):
    start = time.perf_counter()
    enc.embed(texts, "query: ")
    best = min(best, time.perf_counter() - start)
print(json.dumps({"seconds": best}))
'''


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="source tree (its user_spark/ is imported)")
    parser.add_argument("--after", default=ROOT)
    parser.add_argument("--modes", default="fp32,fast")
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    from user_spark.testing import build_random_model

    model = build_random_model(os.path.join(ROOT, "tests", "data", "USER-base"), tempfile.mkdtemp(prefix="ab-"))
    times: dict[str, list[float]] = {}
    for mode in args.modes.split(","):
        for _ in range(args.rounds):
            for name, tree in (("before", args.before), ("after", args.after)):
                env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), OMP_NUM_THREADS="1")
                proc = subprocess.run([sys.executable, "-c", RUN, model, mode, str(args.texts), HERE], env=env,
                                      capture_output=True, text=True, check=True)
                seconds = json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]
                times.setdefault(f"{mode}/{name}", []).append(seconds)
                print(f"{mode:5} {name:6} {seconds:7.2f} s", flush=True)
    medians = {k: statistics.median(v) for k, v in times.items()}
    ratios = {mode: medians[f"{mode}/after"] / medians[f"{mode}/before"] for mode in args.modes.split(",")}
    for mode, ratio in ratios.items():
        print(f"{mode}: before {medians[f'{mode}/before']:.2f} s, after {medians[f'{mode}/after']:.2f} s, "
              f"after/before time {ratio:.3f}")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "encoder-ab.json"), "w") as fh:
        json.dump({"times": times, "medians": medians, "after_over_before": ratios}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
