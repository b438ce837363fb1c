"""The sections of ``bench/gpu_check.py`` (see its docstring), their child processes, and the targets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import gpu_bench
import numpy as np

PREFIX = "query: "
GPU0 = "cuda:0"


def spawn(kind: str, params: dict[str, Any], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu_check.py")
    return subprocess.Popen([sys.executable, script, "--child", kind, "--child-args", json.dumps(params)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def collect(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"returncode": proc.returncode, "stderr": err[-2000:]}
    return json.loads(lines[-1])


def compare(got: np.ndarray, want: np.ndarray) -> dict[str, Any]:
    """Cosine and absolute differences of two ``[rows, dim]`` arrays of (normalised) vectors."""
    finite = np.isfinite(got).all(axis=1)
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1)
    cosine = (got * want).sum(axis=1) / np.maximum(norms, 1e-12)
    return {"rows": len(got), "nonfinite_rows": int((~finite).sum()), "mean_cosine": float(cosine[finite].mean()),
            "min_cosine": float(cosine[finite].min()), "max_abs_diff": float(np.abs(got - want)[finite].max())}


def _events() -> dict[str, list[Any]]:
    from user_spark.runtime import worker

    out: dict[str, list[Any]] = {}
    for e in worker.events():
        out.setdefault(e.action, []).append({"device": e.device, "seconds": round(e.seconds, 2),
                                             "collected": e.collected, "left_bytes": e.left_bytes})
    return out


def placement(check: Any) -> dict[str, Any]:
    from user_spark.runtime import gpu, worker

    model, texts = check.models["user-base"], check.texts[:256]
    worker.reset()
    free_before = gpu.free_bytes(GPU0)
    with gpu_bench.fake_task(("0",), check.cpus):
        for _ in range(3):  # three tasks of the same worker on the GPU Spark assigned
            gpu_bench.udf_vectors(model, texts, "auto", 128)
    loaded = {"events": _events(), "allocated_gib": gpu.allocated_bytes(GPU0) / 2**30,
              "driver_free_drop_gib": (free_before - gpu.free_bytes(GPU0)) / 2**30}
    worker.release_all()
    released = {"events": _events().get("release"), "allocated_bytes": gpu.allocated_bytes(GPU0),
                "driver_free_recovered_gib": (gpu.free_bytes(GPU0) - free_before) / 2**30}
    worker.reset()
    with gpu_bench.fake_task((), check.cpus):  # Spark assigned no GPU
        gpu_bench.udf_vectors(model, texts[:16], "auto", 16)
        unassigned = {"claims": [e["device"] for e in _events().get("claim", [])], "sharers": worker.gpu_sharers()}
    worker.reset()
    invisible = collect(spawn("invisible", {"model": model},
                              {"CUDA_VISIBLE_DEVICES": "", "USER_SPARK_TEST_FAKE_GPUS": ""}), 180)
    return {"loads_in_three_tasks": len(loaded["events"].get("load", [])), "loaded": loaded, "released": released,
            "unassigned": unassigned, "assigned_but_invisible": invisible}


def child_invisible(params: dict[str, Any]) -> dict[str, Any]:
    """A task that Spark gave GPU 0, in a process where torch sees no GPU."""
    try:
        with gpu_bench.fake_task(("0",), 1):
            gpu_bench.udf_vectors(params["model"], ["Спарк выдал задаче GPU."], "auto", 1)
    except Exception as exc:
        return {"error_type": type(exc).__name__, "message": str(exc)}
    return {"error_type": None, "message": "embedded without a visible GPU"}


def st_reference(model: str, texts: list[str], device: str) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model, device=device)
    vectors: np.ndarray = st.encode(texts, prompt=PREFIX, batch_size=64, convert_to_numpy=True)
    del st
    return vectors.astype(np.float32)


def parity(check: Any) -> dict[str, Any]:
    from user_spark.runtime import worker

    out: dict[str, Any] = {}
    for name, model in check.models.items():
        texts = check.texts[: check.n_parity]
        reference = st_reference(model, texts, check.device)
        modes: dict[str, Any] = {}
        ours_fp32 = None
        for precision in ("fp32", "fp16", "bf16"):
            worker.reset()
            try:
                with gpu_bench.fake_task(("0",), check.cpus):
                    vectors, counts = gpu_bench.udf_vectors(model, texts, precision, 10000)
            except Exception as exc:
                modes[precision] = {"error": repr(exc)}
                continue
            ours_fp32 = vectors if precision == "fp32" else ours_fp32
            modes[precision] = {"vs_sentence_transformers_fp32": compare(vectors, reference),
                                "recomputed_rows": counts["recomputed"]}
            if ours_fp32 is not None and precision != "fp32":
                modes[precision]["vs_user_spark_fp32"] = compare(vectors, ours_fp32)
        out[name] = modes
        worker.reset()
    return out


def batch_company(check: Any) -> dict[str, Any]:
    """Each of a sample of texts embedded alone, against the same text embedded among all the others."""
    from user_spark.runtime import worker

    model, texts = check.models["user-base"], check.texts[: check.n_parity]
    sample = list(range(0, len(texts), max(1, len(texts) // (8 if check.smoke else 64))))
    out: dict[str, Any] = {}
    for precision in ("fp32", "fp16", "bf16"):
        worker.reset()
        try:
            with gpu_bench.fake_task(("0",), check.cpus):
                together, _ = gpu_bench.udf_vectors(model, texts, precision, 10000)
                alone = np.concatenate([gpu_bench.udf_vectors(model, [texts[i]], precision, 1)[0] for i in sample])
        except Exception as exc:
            out[precision] = {"error": repr(exc)}
            continue
        out[precision] = compare(alone, together[sample])
    worker.reset()
    return out


def _limit_memory(check: Any, encoder: Any, headroom: int) -> Any:
    """Let this process allocate only ``headroom`` bytes beyond what it holds now; returns the undo function."""
    import torch

    if check.cuda:
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_allocated(0) + headroom) / total, 0)
        return lambda: torch.cuda.set_per_process_memory_fraction(1.0, 0)
    module = encoder.runner.loaded.module  # smoke: a batch over 2,048 padded tokens "runs out of memory"
    real = module.forward_packed

    def forward_packed(flat_ids: Any, positions: Any, scatter: Any, key_mask: Any, batch: int, length: int) -> Any:
        if batch * length > 2048:
            raise torch.cuda.OutOfMemoryError("out of memory (smoke: more than 2,048 padded tokens)")
        return real(flat_ids, positions, scatter, key_mask, batch, length)

    module.forward_packed = forward_packed
    return lambda: delattr(module, "forward_packed")


def oom(check: Any) -> dict[str, Any]:
    """One batch of about a million tokens with 2 GiB to spare: split and retried until it fits."""
    from user_spark.runtime import worker

    model = check.models["user-base"]
    long_texts = [t for t in check.texts if len(t) > 400]
    texts = (long_texts * (1 + (64 if check.smoke else 3000) // max(1, len(long_texts))))[: 64 if check.smoke else 3000]
    worker.reset()
    with gpu_bench.fake_task(("0",), check.cpus):
        reference, _ = gpu_bench.udf_vectors(model, texts, "fp16", len(texts))
        encoder = gpu_bench.current_encoder()
        undo = _limit_memory(check, encoder, 2 << 30)
        try:
            start = time.perf_counter()
            vectors, _ = gpu_bench.udf_vectors(model, texts, "fp16", len(texts), batch_tokens=1 << 21)
            seconds = time.perf_counter() - start
        finally:
            undo()
    result = {"texts": len(texts), "batch_tokens": 1 << 21, "out_of_memory_errors": encoder.budget.out_of_memory_count,
              "budget_cap_after": encoder.budget.cap, "seconds": round(seconds, 2),
              "vs_unsplit": compare(vectors, reference)}
    worker.reset()
    return result


def tokenizer(check: Any) -> dict[str, Any]:
    from user_spark.model.spec import read_model_spec
    from user_spark.runtime.tokens import TextTokenizer, tokenizer_folder

    model = check.models["user-base"]
    spec = read_model_spec(model)
    tok = TextTokenizer(tokenizer_folder(model, spec), spec)
    texts = [PREFIX + t for t in check.texts[: 500 if check.smoke else 8000]]
    tokens = sum(len(x) for x in tok.tokenize(texts)[0])
    rates = {}
    for threads in [t for t in (1, 2, 4, 8, 16, 32) if t <= check.cpus]:
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            tok.tokenize(texts, threads)
            best = min(best, time.perf_counter() - start)
        rates[str(threads)] = {"rows_per_s": round(len(texts) / best), "tokens_per_s": round(tokens / best),
                               "us_per_row_per_thread": round(best * threads / len(texts) * 1e6, 1)}
    return {"rows": len(texts), "tokens": tokens, "threads": rates,
            "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM")}


def sharing(check: Any) -> dict[str, Any]:
    """1, 2 and 4 worker processes embedding on GPU 0 at once, as Spark runs them with a fractional GPU amount."""
    out: dict[str, Any] = {}
    n_texts = 100 if check.smoke else 20000
    for workers in (1, 2) if check.smoke else (1, 2, 4):
        ready = tempfile.mkdtemp(prefix="gpu_check-ready-")
        params = {"model": check.models["user-base"], "texts": n_texts, "data": check.args.data, "workers": workers,
                  "cpus": max(1, check.cpus // workers), "ready": ready}
        procs = [spawn("share", params) for _ in range(workers)]
        results = [collect(p, 300) for p in procs]
        ok = [r for r in results if "seconds" in r]
        total = sum(r["tokens"] for r in ok) / max((r["seconds"] for r in ok), default=float("inf"))
        out[str(workers)] = {"workers": results, "total_tokens_per_s": round(total)}
    return out


def child_share(params: dict[str, Any]) -> dict[str, Any]:
    """One of several workers on GPU 0: load, wait for the others, embed, report time and memory."""
    import torch

    from user_spark.runtime import gpu, worker
    from user_spark.runtime.budget import default_batch_tokens

    texts, _ = gpu_bench.load_texts(params["texts"], params.get("data"))
    cuda = torch.cuda.is_available()
    with gpu_bench.fake_task(("0",), params["cpus"]):
        run, embedder = gpu_bench.udf_batches(params["model"], texts, "auto", 10000)
        gpu_bench.udf_vectors(params["model"], texts[:64], "auto", 64)  # load the model
        open(os.path.join(params["ready"], str(os.getpid())), "w").close()
        deadline = time.time() + 120
        while len(os.listdir(params["ready"])) < params["workers"] and time.time() < deadline:
            time.sleep(0.05)
        if cuda:
            torch.cuda.reset_peak_memory_stats(0)
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        encoder = gpu_bench.current_encoder()
        sharers = worker.gpu_sharers()
    return {"pid": os.getpid(), "seconds": round(seconds, 3), "tokens": embedder.metrics.as_dict()["tokens"],
            "sharers_seen": sharers, "budget_tokens": encoder.budget.limit(default_batch_tokens(True),
                                                                           encoder._memory_cap(sharers)),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved(0) / 2**30, 2) if cuda else None,
            "process_gpu_memory_gib": _process_gpu_memory(), "free_gib_after": round(gpu.free_bytes(GPU0) / 2**30, 1)}


def _process_gpu_memory() -> float | None:
    """This process's GPU memory as the driver counts it (its CUDA context included), from NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                return round(proc.usedGpuMemory / 2**30, 2)
    except Exception:
        return None
    return None


def benchmark(check: Any) -> dict[str, Any]:
    result = gpu_bench.benchmark(
        check.models["user-base"], check.texts, device=check.device, precisions=("auto", "fp16"),
        repeats=1 if check.smoke else 3, arrow_batch=100 if check.smoke else 10000, cpus=check.cpus,
        st_batch_sizes=(16,) if check.smoke else (64, 128, 256, 512), uuid=check.uuid,
    )
    result["table"] = gpu_bench.table(result)
    print(result["table"], flush=True)
    return result


# (name, function, seconds it needs on the GPU machine): most telling first, in case time runs short.
PLAN = [
    ("placement", placement, 40),
    ("benchmark", benchmark, 150),
    ("parity", parity, 60),
    ("oom", oom, 40),
    ("batch_company", batch_company, 40),
    ("tokenizer", tokenizer, 30),
    ("sharing", sharing, 90),
]


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """Issue 12's bars against what the sections measured (``None`` where a section did not run)."""
    sections = result["sections"]
    out: dict[str, Any] = {}
    auto = next((p for p in sections.get("benchmark", {}).get("paths", []) if p["precision"] == "auto"), None)
    if auto:
        out["udf_vs_sentence_transformers_fp16 >= 2"] = {"value": auto["vs_sentence_transformers"],
                                                         "met": auto["vs_sentence_transformers"] >= 2}
        out["udf_of_forward_only_ceiling >= 0.70"] = {"value": auto["of_ceiling"], "met": auto["of_ceiling"] >= 0.7}
    par = sections.get("parity", {})
    model = "minilm" if "minilm" in par else "user-base"
    for precision in ("fp16", "bf16"):
        stats = par.get(model, {}).get(precision, {}).get("vs_user_spark_fp32")
        if stats:
            out[f"{precision}_mean_cosine_to_fp32 >= 0.9999 ({model})"] = {
                "value": stats["mean_cosine"], "met": stats["mean_cosine"] >= 0.9999}
    nonfinite = [m["vs_sentence_transformers_fp32"]["nonfinite_rows"] for modes in par.values() if isinstance(modes, dict)
                 for m in modes.values() if isinstance(m, dict) and "vs_sentence_transformers_fp32" in m]
    if nonfinite:
        out["no NaN"] = {"value": sum(nonfinite), "met": sum(nonfinite) == 0}
    place = sections.get("placement", {})
    if "loads_in_three_tasks" in place:
        out["one model per GPU per worker"] = {"value": place["loads_in_three_tasks"],
                                               "met": place["loads_in_three_tasks"] == 1}
    return out
