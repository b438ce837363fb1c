from __future__ import annotations

import pytest

from user_spark.errors import OptionError
from user_spark.runtime.device import DeviceChoice, choose_device


def test_cpu_uses_task_cores_and_fp32():
    assert choose_device(task_cpus=3) == DeviceChoice("cpu", "float32", 3)


def test_explicit_threads_win_over_task_cores():
    assert choose_device(task_cpus=4, threads=1).threads == 1


def test_assigned_gpu_is_used_in_fp16():
    assert choose_device(gpu_addresses=["1"], cuda_device_count=4) == DeviceChoice("cuda:1", "float16", None)


def test_assigned_gpu_is_renumbered_inside_visible_devices():
    # YARN/Kubernetes: the process sees only physical GPUs 2 and 3, as cuda:0 and cuda:1.
    choice = choose_device(gpu_addresses=["3"], cuda_device_count=2, visible_devices="2,3")
    assert choice.device == "cuda:1"


def test_single_visible_gpu_takes_any_address():
    assert choose_device(gpu_addresses=["5"], cuda_device_count=1).device == "cuda:0"


def test_unmappable_address_is_a_clear_error():
    with pytest.raises(OptionError, match="discovery script"):
        choose_device(gpu_addresses=["7"], cuda_device_count=2, visible_devices="0,1")


def test_visible_gpu_without_spark_assignment():
    assert choose_device(cuda_device_count=1).device == "cuda:0"


def test_no_gpu_falls_back_to_cpu():
    assert choose_device(gpu_addresses=["0"], cuda_device_count=0).device == "cpu"


@pytest.mark.parametrize(("precision", "dtype"), [("fp32", "float32"), ("bf16", "bfloat16"), ("fp16", "float16")])
def test_precision_on_gpu(precision, dtype):
    assert choose_device(precision=precision, cuda_device_count=1).dtype == dtype


def test_bf16_on_cpu_is_allowed_but_fp16_is_not():
    assert choose_device(precision="bf16").dtype == "bfloat16"
    with pytest.raises(OptionError, match="fp16' needs a GPU"):
        choose_device(precision="fp16")


def test_forced_cpu_ignores_gpus():
    assert choose_device(requested="cpu", gpu_addresses=["0"], cuda_device_count=1).device == "cpu"


def test_cuda_requested_without_gpu_is_an_error():
    with pytest.raises(OptionError, match="no CUDA device"):
        choose_device(requested="cuda")


def test_explicit_ordinal_is_range_checked():
    assert choose_device(requested="cuda:1", cuda_device_count=2).device == "cuda:1"
    with pytest.raises(OptionError, match="has 2 CUDA"):
        choose_device(requested="cuda:2", cuda_device_count=2)


@pytest.mark.parametrize("bad", [{"requested": "tpu"}, {"precision": "int4"}, {"threads": 0}])
def test_bad_options(bad):
    with pytest.raises(OptionError):
        choose_device(**bad)


def test_fast_precision_picks_the_hardware_fast_path():
    assert choose_device(precision="fast", cuda_device_count=1).dtype == "float16"
    assert choose_device(precision="fast", cpu_bf16=True).dtype == "bfloat16"
    # Without native bf16, bf16 is emulated (slower than fp32) and int8 loses too much: fast stays exact.
    assert choose_device(precision="fast", cpu_bf16=False).dtype == "float32"


def test_int8_is_cpu_only():
    assert choose_device(precision="int8").dtype == "int8"
    with pytest.raises(OptionError, match="int8' is a CPU mode"):
        choose_device(precision="int8", cuda_device_count=1)
