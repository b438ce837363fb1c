"""The GPU path on a real GPU: placement and release, half precision, out-of-memory, the pipelined loop.

Skipped without CUDA. On a GPU machine (no pyspark needed): ``python -m pytest -m gpu tests/unit/test_cuda.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from user_spark.model.shipping import ModelLocation
from user_spark.model.spec import read_model_spec
from user_spark.runtime import gpu, task, worker
from user_spark.runtime.device import DeviceChoice, choose_device
from user_spark.runtime.encoder import Encoder
from user_spark.runtime.executor import EncoderTarget, embed_texts
from user_spark.runtime.task import TaskFacts

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture
def fresh_worker(monkeypatch, tmp_path):
    monkeypatch.setenv("USER_SPARK_GPU_REGISTRY", str(tmp_path))
    monkeypatch.setattr(task, "current", lambda: TaskFacts(0, ("0",), 4))
    worker.reset()
    yield
    worker.reset()


@pytest.fixture(scope="module")
def cpu_vectors(tiny_model, ru_texts):
    encoder = Encoder(read_model_spec(tiny_model), tiny_model, choose_device(task_cpus=2))
    return encoder.embed(ru_texts, "query: ").vectors


def test_the_task_gpu_holds_the_model_until_released(fresh_worker, tiny_model, ru_texts):
    target = EncoderTarget(name="tiny", spec=read_model_spec(tiny_model), location=ModelLocation("path", tiny_model))
    embed_texts(target, ru_texts, "query: ")
    embed_texts(target, ru_texts, "query: ")
    assert [e.device for e in worker.events() if e.action == "load"] == ["cuda:0"]
    assert gpu.allocated_bytes("cuda:0") > 0
    worker.release_all()
    release = next(e for e in worker.events() if e.action == "release")
    assert release.collected and release.left_bytes < (16 << 20)  # at most a cuBLAS workspace stays


def test_fp32_on_the_gpu_equals_the_cpu(tiny_model, ru_texts, cpu_vectors):
    enc = Encoder(read_model_spec(tiny_model), tiny_model, DeviceChoice("cuda:0", "float32", None, 4))
    assert np.abs(enc.embed(ru_texts, "query: ").vectors - cpu_vectors).max() < 1e-4


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_stays_close_to_fp32(tiny_model, ru_texts, cpu_vectors, dtype):
    if dtype == "bfloat16" and not gpu.cuda_devices()[0].native_bf16:
        pytest.skip("no bf16 tensor cores")
    out = Encoder(read_model_spec(tiny_model), tiny_model, DeviceChoice("cuda:0", dtype, None, 4)).embed(
        ru_texts, "query: ")
    assert np.isfinite(out.vectors).all()
    assert (out.vectors * cpu_vectors).sum(axis=1).min() > 0.999


def test_a_real_out_of_memory_is_split_and_retried(tiny_model, ru_texts, cpu_vectors):
    enc = Encoder(read_model_spec(tiny_model), tiny_model, DeviceChoice("cuda:0", "float32", None, 4))
    texts = ru_texts * 200
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_allocated(0) + (64 << 20)) / total, 0)
    try:
        out = enc.embed(texts, "query: ", batch_tokens=1 << 22)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
    assert enc.budget.out_of_memory_count >= 1
    assert np.abs(out.vectors - np.tile(cpu_vectors, (200, 1))).max() < 1e-4
