"""GPU throughput of user_spark's executor code path against ``SentenceTransformer.encode`` on the same GPU.

A library for ``bench/embed.py --device cuda`` and ``bench/gpu_check.py``; it needs no pyspark (the GPU machines
these run on have none). Three paths on the same texts, model, GPU and precision:

- ``SentenceTransformer.encode`` as users run it on a GPU: the model in fp16 (``model.half()``), ``encode``'s own
  length sorting, the batch size tuned for this GPU (the best of a few on a sample);
- the UDF's executor side: the function the Arrow UDF calls on every Arrow batch (``_BatchEmbedder.arrow``: Arrow
  strings in, an Arrow list column out, metrics counted), fed Arrow batches of ``spark.sql.execution.arrow.
  maxRecordsPerBatch`` rows, with ``TaskContext`` faked at its seam (:mod:`user_spark.runtime.task`) as a task
  that Spark gave GPU ``0`` and ``cpus`` cores;
- the forward-only ceiling: the same model and batches, tokenized and packed beforehand, run back to back with
  one batch in flight (no tokenizing, no Arrow, nothing else on the host).

Each run reports tokens/s, and GPU utilisation sampled from NVML (or ``nvidia-smi``) while it runs.
"""

from __future__ import annotations

import contextlib
import json
import lzma
import os
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS_DATA = os.path.join(ROOT, "tests", "data")


def data_dirs(explicit: str | None) -> list[str]:
    """Where to look for the real Russian data: ``--data``, ../shared/data, bench/data (in that order)."""
    found = [explicit] if explicit else []
    found += [os.path.join(os.path.dirname(ROOT), "shared", "data"), os.path.join(ROOT, "bench", "data")]
    return [d for d in found if d and os.path.exists(os.path.join(d, "xquad.ru.json"))]


def load_texts(n: int, data_dir: str | None = None) -> tuple[list[str], str]:
    """``n`` real Russian texts: 90% prose sentences, 10% XQuAD paragraphs, interleaved (a natural mix of lengths),
    and where they came from. The 240 paragraphs repeat beyond 2,400 texts; without the shared data the suite's
    samples (300 sentences, 12 paragraphs) stand in, repeated."""
    dirs = data_dirs(data_dir)
    if dirs:
        with open(os.path.join(dirs[0], "xquad.ru.json"), encoding="utf-8") as fh:
            articles = json.load(fh)["data"]
        with lzma.open(os.path.join(dirs[0], "ru_prose_sentences.tsv.xz"), "rt", encoding="utf-8") as fh:
            next(fh)
            pool = [line.rstrip("\n").split("\t", 1)[1] for _, line in zip(range(n), fh, strict=False)]
        source = dirs[0]
    else:
        with open(os.path.join(TESTS_DATA, "xquad_ru_12.json"), encoding="utf-8") as fh:
            articles = json.load(fh)["data"]
        with open(os.path.join(TESTS_DATA, "ru_prose_sentences_300.tsv"), encoding="utf-8") as fh:
            pool = [line.rstrip("\n").split("\t", 1)[1] for line in fh.readlines()[1:]]
        source = TESTS_DATA + " (repeated)"
    every = [p["context"].lstrip("\ufeff") for a in articles for p in a["paragraphs"]]
    n_par = max(1, n // 10)
    paragraphs = (every * (n_par // len(every) + 1))[:n_par]
    sentences = [pool[i % len(pool)] for i in range(n - len(paragraphs))]
    step = max(1, len(sentences) // max(1, len(paragraphs)))
    out = []
    for i, sentence in enumerate(sentences):
        out.append(sentence)
        if i % step == 0 and paragraphs:
            out.append(paragraphs.pop())
    return out + paragraphs, source


class GpuSampler:
    """Samples GPU utilisation (%) and memory used every ``interval`` seconds in a thread, via NVML or nvidia-smi."""

    def __init__(self, uuid: str | None = None, interval: float = 0.05) -> None:
        self.uuid, self.interval = uuid, interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.source = "none"

    def _nvml_reader(self) -> Callable[[], tuple[float, float]] | None:
        try:
            import pynvml

            pynvml.nvmlInit()
            uuid = self.uuid or ""
            uuid = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
            try:
                handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
            except Exception:
                handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:
            return None
        self.source = "nvml"

        def read() -> tuple[float, float]:
            return (float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                    float(pynvml.nvmlDeviceGetMemoryInfo(handle).used) / 2**30)

        return read

    def _smi_reader(self) -> Callable[[], tuple[float, float]] | None:
        if shutil.which("nvidia-smi") is None:
            return None
        self.source = "nvidia-smi"

        def read() -> tuple[float, float]:
            line = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,"
                                   "nounits", "-i", "0"], capture_output=True, text=True, timeout=5).stdout.strip()
            util, mem = (float(x) for x in line.split(",")[:2])
            return util, mem / 1024

        return read

    def _run(self, read: Callable[[], tuple[float, float]]) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.samples.append(read())
            self._stop.wait(self.interval)

    def __enter__(self) -> GpuSampler:
        read = self._nvml_reader() or self._smi_reader()
        if read is not None:
            self._thread = threading.Thread(target=self._run, args=(read,), daemon=True, name="gpu-sampler")
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"source": self.source, "samples": 0}
        utils = [u for u, _ in self.samples]
        return {"source": self.source, "samples": len(utils), "util_mean": round(statistics.fmean(utils), 1),
                "util_median": statistics.median(utils), "memory_gib_max": round(max(m for _, m in self.samples), 2)}


def timed(fn: Callable[[], object], repeats: int, sampler_uuid: str | None, cuda: bool) -> dict[str, Any]:
    """Median seconds of ``repeats`` runs of ``fn`` (after one warm-up), with GPU utilisation over the timed runs."""
    import torch

    fn()
    times = []
    with GpuSampler(sampler_uuid) as sampler:
        for _ in range(repeats):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "runs": [round(t, 4) for t in times], "gpu": sampler.summary()}


def sentence_transformers_gpu(model_dir: str, texts: list[str], prefix: str, device: str, repeats: int,
                              batch_sizes: tuple[int, ...], half: bool, uuid: str | None) -> dict[str, Any]:
    """``SentenceTransformer.encode`` in fp16 (``model.half()``) with the best batch size of ``batch_sizes``."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device=device)
    if half:
        model.half()
    sample = texts[: max(1, min(len(texts), 4000))]
    tuning = {}
    for size in batch_sizes:
        model.encode(sample[:size], prompt=prefix, batch_size=size)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        model.encode(sample, prompt=prefix, batch_size=size)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        tuning[size] = time.perf_counter() - start
    best = min(tuning, key=lambda s: tuning[s])
    result = timed(lambda: model.encode(texts, prompt=prefix, batch_size=best), repeats, uuid,
                   device.startswith("cuda"))
    result.update(batch_size=best, tuning_seconds={str(k): round(v, 4) for k, v in tuning.items()},
                  dtype="float16" if half else "float32")
    return result


@contextlib.contextmanager
def fake_task(addresses: tuple[str, ...], cpus: int) -> Iterator[None]:
    """Make the executor code believe it runs in a Spark task with these GPU addresses and cores."""
    from user_spark.runtime import task

    real = task.current
    task.current = lambda: task.TaskFacts(0, addresses, cpus)  # type: ignore[assignment]
    try:
        yield
    finally:
        task.current = real  # type: ignore[assignment]


def udf_batches(model_dir: str, texts: list[str], precision: str, arrow_batch: int,
                batch_tokens: int | None = None) -> tuple[Callable[[], list[Any]], Any]:
    """A function that pushes ``texts`` through the Arrow UDF's executor side, one Arrow batch at a time, and returns
    its Arrow outputs; and the UDF's batch embedder (its ``metrics`` count what it did)."""
    import pyarrow as pa

    from user_spark.embedding.udf import _BatchEmbedder
    from user_spark.model.shipping import ModelLocation
    from user_spark.model.spec import read_model_spec
    from user_spark.runtime.executor import EncoderTarget

    target = EncoderTarget(name=model_dir, spec=read_model_spec(model_dir), location=ModelLocation("path", model_dir),
                           precision=precision, batch_tokens=batch_tokens)  # type: ignore[arg-type]
    embedder = _BatchEmbedder(target, "query", "float32", _Counters())
    arrays = [pa.array(texts[i : i + arrow_batch], pa.large_string()) for i in range(0, len(texts), arrow_batch)]

    def run() -> list[Any]:
        return [embedder.arrow(array, None) for array in arrays]

    return run, embedder


class _Counters:
    """EmbedMetrics' interface without Spark accumulators: the counts the UDF would add to them."""

    def __init__(self) -> None:
        self.counts = {"rows": 0, "nulls": 0, "tokens": 0, "truncated": 0, "recomputed": 0}

    def add(self, **counts: int) -> None:
        for name, value in counts.items():
            self.counts[name] += value

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)


def udf_vectors(model_dir: str, texts: list[str], precision: str, arrow_batch: int,
                batch_tokens: int | None = None) -> tuple[Any, dict[str, int]]:
    """``[rows, dim]`` vectors of ``texts`` through the UDF path (one pass), and the UDF's counts."""
    import numpy as np

    run, embedder = udf_batches(model_dir, texts, precision, arrow_batch, batch_tokens)
    outputs = run()
    dim = embedder.target.spec.dimension
    vectors = np.concatenate([np.asarray(a.flatten(), dtype=np.float32).reshape(-1, dim) for a in outputs])
    return vectors, embedder.metrics.as_dict()


def ceiling_batches(encoder: Any, texts: list[str], prefix: str, budget: int) -> tuple[list[Any], int]:
    """The encoder's own batches for ``texts``, tokenized and packed beforehand (all texts planned at once)."""
    import numpy as np

    from user_spark.runtime.batching import Batch, plan_batches

    ids, _ = encoder.tokenizer.tokenize([prefix + t for t in texts], encoder._tokenize_threads)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    batches = [encoder.runner.prepare(Batch(index, [ids[i] for i in index.tolist()]))
               for index in plan_batches(lengths, budget, None, max_padding=encoder._padding)]
    return batches, int(lengths.sum())


def forward_only(encoder: Any, batches: list[Any]) -> Callable[[], None]:
    """Run prepared batches through the model with one in flight, as the encoder's loop does, and nothing else."""
    runner = encoder.runner

    def run() -> None:
        pending = None
        for batch in batches:
            launched = runner.launch(batch)
            if pending is not None:
                runner.wait(pending)
            pending = launched
        if pending is not None:
            runner.wait(pending)

    return run


def tokenizer_rates(encoder: Any, texts: list[str], prefix: str, threads: tuple[int, ...]) -> dict[str, float]:
    """Rows per second that ``TextTokenizer.tokenize`` reaches with each thread count (best of 2)."""
    full = [prefix + t for t in texts]
    rates = {}
    for t in threads:
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            encoder.tokenizer.tokenize(full, t)
            best = min(best, time.perf_counter() - start)
        rates[str(t)] = round(len(full) / best, 1)
    return rates


def current_encoder() -> Any:
    """The encoder this process's worker cache holds (the one the UDF path just used)."""
    from user_spark.runtime import worker

    return next(iter(worker._encoders.values()))


def benchmark(model_dir: str, texts: list[str], *, device: str, precisions: tuple[str, ...], repeats: int,
              arrow_batch: int, cpus: int, st_batch_sizes: tuple[int, ...], prefix: str = "query: ",
              uuid: str | None = None) -> dict[str, Any]:
    """sentence-transformers, the UDF path and the forward-only ceiling on the same texts (see the module doc)."""
    from user_spark.runtime import worker
    from user_spark.runtime.budget import default_batch_tokens

    cuda = device.startswith("cuda")
    st = sentence_transformers_gpu(model_dir, texts, prefix, device, repeats, st_batch_sizes, cuda, uuid)
    out: dict[str, Any] = {"texts": len(texts), "sentence_transformers": st, "paths": []}
    with fake_task(("0",), cpus):
        for precision in precisions:
            run, embedder = udf_batches(model_dir, texts, precision, arrow_batch)
            udf = timed(run, repeats, uuid, cuda)
            encoder = current_encoder()
            batches, tokens = ceiling_batches(encoder, texts, prefix, default_batch_tokens(True))
            ceiling = timed(forward_only(encoder, batches), repeats, uuid, cuda)
            out["tokens"] = tokens
            out["paths"].append({
                "precision": precision, "dtype": encoder.choice.dtype, "backend": encoder.backend,
                "udf": udf, "ceiling": ceiling, "ceiling_batches": len(batches),
                "udf_tokens_per_s": round(tokens / udf["seconds"]), "ceiling_tokens_per_s":
                round(tokens / ceiling["seconds"]), "vs_sentence_transformers": round(st["seconds"] / udf["seconds"], 3),
                "of_ceiling": round(ceiling["seconds"] / udf["seconds"], 3),
                "recomputed_rows": embedder.metrics.as_dict()["recomputed"],
            })
            worker.release_all()
    st["tokens_per_s"] = round(out.get("tokens", 0) / st["seconds"])
    return out


def table(result: dict[str, Any]) -> str:
    """The benchmark as a Markdown table."""
    st = result["sentence_transformers"]
    rows = [f"| `SentenceTransformer.encode` ({st['dtype']}, batch {st['batch_size']}) | {st['tokens_per_s']:,} | "
            f"1.00x | | {st['gpu'].get('util_mean', '')} |"]
    for p in result["paths"]:
        rows.append(f"| user_spark UDF path, precision={p['precision']} ({p['dtype']}) | {p['udf_tokens_per_s']:,} | "
                    f"{p['vs_sentence_transformers']:.2f}x | {p['of_ceiling']:.0%} | {p['udf']['gpu'].get('util_mean', '')} |")
        rows.append(f"| forward only ({p['dtype']}, pre-packed) | {p['ceiling_tokens_per_s']:,} | "
                    f"{st['seconds'] / p['ceiling']['seconds']:.2f}x | 100% | {p['ceiling']['gpu'].get('util_mean', '')} |")
    head = "| path | tokens/s | vs sentence-transformers | of the ceiling | GPU util % |\n|---|---:|---:|---:|---:|"
    return "\n".join([head, *rows])


def batch_fill(model_dir: str, texts: list[str], budget: int = 32768, prefix: str = "query: ") -> dict[str, Any]:
    """How full the GPU loop's model batches are under each padding rule (pure planning, no model run).

    The texts are tokenized in the GPU loop's waves and planned as the encoder plans them, with the CPU's rule
    (padding <= 10% of the longest row) and the packed path's attention-cost rule
    (:func:`user_spark.runtime.batching.attention_padding`, USER-base's sizes).
    """
    import numpy as np

    from user_spark.model.spec import read_model_spec
    from user_spark.runtime.batching import FIRST_WAVE_ROWS, attention_padding, plan_batches, wave_rows
    from user_spark.runtime.tokens import TextTokenizer, tokenizer_folder

    spec = read_model_spec(model_dir)
    ids, _ = TextTokenizer(tokenizer_folder(model_dir, spec), spec).tokenize([prefix + t for t in texts], os.cpu_count() or 1)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    hidden, inter = 768, 3072
    linear_per_token = 2 * (4 * hidden * hidden + 2 * hidden * inter)
    out: dict[str, Any] = {"texts": len(texts), "tokens": int(lengths.sum()), "budget": budget}
    for name, rule in (("max_padding=0.1 (CPU, transformers path)", 0.1),
                       ("attention cost (packed path on GPU)", attention_padding(hidden, inter))):
        real, padded, waste, start, size = [], [], 0.0, 0, FIRST_WAVE_ROWS
        while start < len(lengths):
            wave = lengths[start : start + size]
            for index in plan_batches(wave, budget, None, max_padding=rule):
                rows = wave[index]
                real.append(int(rows.sum()))
                padded.append(len(rows) * int(rows.max()))
                waste += 4 * hidden * float(len(rows) * int(rows.max()) ** 2 - (rows.astype(np.float64) ** 2).sum())
            start += len(wave)
            size = wave_rows(budget, float(wave.mean()))
        useful = float(lengths.sum()) * linear_per_token + 4 * hidden * float((lengths.astype(np.float64) ** 2).sum())
        out[name] = {"batches": len(real), "mean_real_tokens": round(float(np.mean(real))),
                     "median_real_tokens": int(np.median(real)), "padding": round(1 - sum(real) / sum(padded), 3),
                     "attention_waste_of_useful_flops": round(waste / useful, 4),
                     "batches_under_half_budget": int(sum(r < budget / 2 for r in real))}
    return out


if __name__ == "__main__":
    import argparse
    import sys

    sys.path.insert(0, ROOT)
    parser = argparse.ArgumentParser(description="How full the GPU loop's batches are (CPU only, no model run)")
    parser.add_argument("what", choices=["batching"])
    parser.add_argument("--texts", type=int, default=40000)
    parser.add_argument("--budget", type=int, default=32768)
    cli = parser.parse_args()
    from user_spark.testing import build_random_model

    folder = build_random_model(os.path.join(TESTS_DATA, "USER-base"), os.path.join(__import__("tempfile").mkdtemp(), "m"),
                                hidden_size=64, num_hidden_layers=1, num_attention_heads=4, intermediate_size=128)
    texts, source = load_texts(cli.texts)
    result = {"texts_from": source, **batch_fill(folder, texts, cli.budget)}
    print(json.dumps(result, indent=2))
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "gpu-batch-fill.json"), "w") as fh:
        json.dump(result, fh, indent=2)
