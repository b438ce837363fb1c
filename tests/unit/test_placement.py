"""Which GPU a Python worker embeds on: Spark's assignment, the node registry's spread, release before a move.

CUDA is faked at its seam (``user_spark.runtime.gpu``, ``USER_SPARK_TEST_FAKE_GPUS``): the worker believes it has
two GPUs and computes on the CPU, so the real executor code path (``embed_texts``) runs here.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from user_spark.errors import OptionError
from user_spark.model.shipping import ModelLocation
from user_spark.model.spec import read_model_spec
from user_spark.runtime import gpu, task, worker
from user_spark.runtime.executor import EncoderTarget, embed_texts
from user_spark.runtime.gpu import GpuInfo
from user_spark.runtime.placement import ENV_REGISTRY, GpuRegistry, least_used
from user_spark.runtime.task import TaskFacts

GPUS = [GpuInfo(i, "test GPU", f"GPU-{i}", 80 << 30, (9, 0)) for i in range(2)]


def test_least_used_prefers_fewest_workers_then_lowest_index():
    assert least_used([0, 0]) == 0
    assert least_used([1, 0, 0]) == 1
    assert least_used([2, 3, 2]) == 0
    with pytest.raises(ValueError, match="no GPUs"):
        least_used([])


def test_claims_take_the_lowest_free_slot_and_are_counted(tmp_path):
    registry = GpuRegistry(str(tmp_path))
    claims = [registry.claim(GPUS[0]) for _ in range(3)]
    assert [os.path.basename(c.path) for c in claims] == ["GPU-0.0", "GPU-0.1", "GPU-0.2"]
    assert registry.holders(GPUS[0]) == 3 and registry.holders(GPUS[1]) == 0
    claims[1].release()
    assert registry.holders(GPUS[0]) == 2
    assert os.path.basename(registry.claim(GPUS[0]).path) == "GPU-0.1"


def test_workers_without_an_assignment_spread_over_the_gpus(tmp_path):
    registry = GpuRegistry(str(tmp_path))
    picks = [registry.claim_least_used(GPUS).gpu.ordinal for _ in range(5)]
    assert picks == [0, 1, 0, 1, 0]


def test_a_killed_worker_leaves_no_claim_behind(tmp_path):
    code = (
        "import sys, time\n"
        "from user_spark.runtime.gpu import GpuInfo\n"
        "from user_spark.runtime.placement import GpuRegistry\n"
        f"claim = GpuRegistry({str(tmp_path)!r}).claim(GpuInfo(0, 'g', 'GPU-0', 1, (9, 0)))\n"
        "print('claimed', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "claimed"
        assert GpuRegistry(str(tmp_path)).holders(GPUS[0]) == 1
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert GpuRegistry(str(tmp_path)).holders(GPUS[0]) == 0


@pytest.fixture
def two_fake_gpus(monkeypatch, tmp_path):
    monkeypatch.setenv(gpu.ENV_FAKE, "2")
    monkeypatch.setenv(ENV_REGISTRY, str(tmp_path / "registry"))
    worker.reset()
    yield GpuRegistry(str(tmp_path / "registry"))
    worker.reset()


@pytest.fixture(scope="module")
def target(tiny_model):
    return EncoderTarget(name="tiny", spec=read_model_spec(tiny_model), location=ModelLocation("path", tiny_model))


def run_task(monkeypatch, target, texts, addresses=(), partition=0):
    monkeypatch.setattr(task, "current", lambda: TaskFacts(partition, tuple(addresses), 2))
    return embed_texts(target, texts, "query: ")


def test_a_worker_follows_its_tasks_gpu_and_releases_the_old_copy_before_loading(
    two_fake_gpus, monkeypatch, target, ru_texts
):
    vectors = []
    for address in ["0", "0", "1", "1", "0"]:
        vectors.append(run_task(monkeypatch, target, ru_texts[:6], [address]).vectors)
        assert len(worker._encoders) == 1  # one model per worker, whatever GPU it last served
        assert worker._device == f"cuda:{address}"
    steps = [(e.action, e.device) for e in worker.events() if e.action != "claim"]
    assert steps == [("load", "cuda:0"), ("release", "cuda:0"), ("load", "cuda:1"), ("release", "cuda:1"),
                     ("load", "cuda:0")]
    assert all(e.collected for e in worker.events() if e.action == "release")  # nothing kept the old model alive
    assert all(np.array_equal(v, vectors[0]) for v in vectors)


def test_without_a_spark_gpu_a_worker_takes_the_least_used_one_and_keeps_it(
    two_fake_gpus, monkeypatch, target, ru_texts, caplog
):
    other_worker = two_fake_gpus.claim(gpu.cuda_devices()[0])  # another worker of the node already works on GPU 0
    with caplog.at_level(logging.WARNING, logger="user_spark.runtime.worker"):
        run_task(monkeypatch, target, ru_texts[:4])
        other_worker.release()
        run_task(monkeypatch, target, ru_texts[:4])
    assert worker._device == "cuda:1"
    assert [e.device for e in worker.events() if e.action == "load"] == ["cuda:1"]  # stayed: no reload
    said = [r.getMessage() for r in caplog.records if "assigned no GPU" in r.getMessage()]
    assert len(said) == 1 and "uses cuda:1" in said[0]  # said once per worker


def test_workers_sharing_a_gpu_are_counted(two_fake_gpus, monkeypatch, target, ru_texts):
    others = [two_fake_gpus.claim(gpu.cuda_devices()[1]) for _ in range(2)]
    run_task(monkeypatch, target, ru_texts[:2], ["1"])
    assert worker.gpu_sharers() == 3
    others[0].release()
    assert worker.gpu_sharers() == 2


def test_several_addresses_for_one_task_use_the_first_and_say_so(two_fake_gpus, monkeypatch, target, ru_texts, caplog):
    with caplog.at_level(logging.WARNING, logger="user_spark.runtime.worker"):
        run_task(monkeypatch, target, ru_texts[:2], ["1", "0"])
        run_task(monkeypatch, target, ru_texts[:2], ["1", "0"])
    assert worker._device == "cuda:1"
    assert sum("assigned 2 GPUs" in r.getMessage() for r in caplog.records) == 1


def test_a_gpu_that_spark_assigned_but_torch_cannot_see_fails_before_any_load(monkeypatch, target, ru_texts):
    monkeypatch.delenv(gpu.ENV_FAKE, raising=False)
    monkeypatch.setattr(gpu, "cuda_devices", lambda: ())
    worker.reset()
    with pytest.raises(OptionError, match=r"Spark assigned GPU \['0'\] .* sees no CUDA device"):
        run_task(monkeypatch, target, ru_texts[:2], ["0"])
    assert worker.load_events() == []


def test_a_fake_gpu_computes_on_the_cpu_exactly(two_fake_gpus, monkeypatch, target, ru_texts, tiny_model):
    from user_spark.runtime.device import choose_device
    from user_spark.runtime.encoder import Encoder

    on_gpu = run_task(monkeypatch, target, ru_texts, ["1"])
    on_cpu = Encoder(read_model_spec(tiny_model), tiny_model, choose_device(task_cpus=1)).embed(ru_texts, "query: ")
    encoder = next(iter(worker._encoders.values()))
    assert encoder.pipelined and encoder.choice.dtype == "bfloat16" and str(encoder.device) == "cpu"
    cosine = (on_gpu.vectors * on_cpu.vectors).sum(axis=1)
    assert cosine.min() > 0.99  # bf16 (the GPU default where it is native) against exact fp32


def test_an_unusable_registry_does_not_stop_the_work(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    registry = GpuRegistry(str(blocker / "registry"))
    claim = registry.claim(GPUS[1])
    assert claim.gpu == GPUS[1] and not claim.held
    assert registry.claim_least_used(GPUS).gpu in GPUS
    assert registry.holders(GPUS[0]) == 0
