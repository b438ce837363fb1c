from __future__ import annotations

import pytest

from user_spark.errors import OptionError
from user_spark.runtime.device import DeviceChoice, choose_device
from user_spark.runtime.gpu import GpuInfo


def gpus(n: int, capability: tuple[int, int] = (9, 0)) -> list[GpuInfo]:
    return [GpuInfo(i, "test GPU", f"GPU-{i}", 80 << 30, capability) for i in range(n)]


T4 = gpus(1, (7, 5))  # no bf16 tensor cores


def test_cpu_uses_task_cores_and_fp32():
    assert choose_device(task_cpus=3) == DeviceChoice("cpu", "float32", 3, 3)


def test_explicit_threads_win_over_task_cores():
    assert choose_device(task_cpus=4, threads=1).threads == 1


def test_assigned_gpu_is_used_in_bf16_where_native_and_keeps_the_task_cores_for_tokenizing():
    assert choose_device(gpu_addresses=["1"], gpus=gpus(4), task_cpus=8) == DeviceChoice("cuda:1", "bfloat16", None, 8)


def test_auto_precision_is_fp16_on_gpus_without_bf16():
    assert choose_device(gpu_addresses=["0"], gpus=T4).dtype == "float16"
    assert choose_device(precision="fast", gpus=T4).dtype == "float16"


def test_bf16_is_refused_on_gpus_without_it():
    with pytest.raises(OptionError, match=r"bf16' needs bf16 tensor cores .* \(7\.5\)"):
        choose_device(precision="bf16", gpus=T4)


def test_assigned_gpu_is_renumbered_inside_visible_devices():
    # YARN/Kubernetes: the process sees only physical GPUs 2 and 3, as cuda:0 and cuda:1.
    choice = choose_device(gpu_addresses=["3"], gpus=gpus(2), visible_devices="2,3")
    assert choice.device == "cuda:1"


def test_single_visible_gpu_takes_any_address():
    assert choose_device(gpu_addresses=["5"], gpus=gpus(1)).device == "cuda:0"


def test_several_assigned_addresses_use_the_first():
    assert choose_device(gpu_addresses=["1", "0"], gpus=gpus(2)).device == "cuda:1"


def test_unmappable_address_is_a_clear_error():
    with pytest.raises(OptionError, match="discovery script"):
        choose_device(gpu_addresses=["7"], gpus=gpus(2), visible_devices="0,1")


def test_without_spark_assignment_the_registry_pick_is_used():
    assert choose_device(gpus=gpus(1)).device == "cuda:0"
    assert choose_device(gpus=gpus(4), unassigned_gpu=2).device == "cuda:2"
    # Spark's assignment wins over the registry's pick.
    assert choose_device(gpu_addresses=["1"], gpus=gpus(4), unassigned_gpu=2).device == "cuda:1"


def test_gpu_assigned_by_spark_but_invisible_to_torch_is_an_error_not_a_silent_cpu_run():
    with pytest.raises(OptionError, match=r"Spark assigned GPU \['0'\].*sees no CUDA device.*device='cpu'"):
        choose_device(gpu_addresses=["0"], gpus=[])
    # Asking for the CPU is the way to run there knowingly.
    assert choose_device(requested="cpu", gpu_addresses=["0"], gpus=[]).device == "cpu"


def test_no_gpu_and_no_assignment_falls_back_to_cpu():
    assert choose_device(gpus=[]).device == "cpu"


@pytest.mark.parametrize(("precision", "dtype"), [("fp32", "float32"), ("bf16", "bfloat16"), ("fp16", "float16")])
def test_precision_on_gpu(precision, dtype):
    assert choose_device(precision=precision, gpus=gpus(1)).dtype == dtype


def test_bf16_on_cpu_is_allowed_but_fp16_is_not():
    assert choose_device(precision="bf16").dtype == "bfloat16"
    with pytest.raises(OptionError, match="fp16' needs a GPU"):
        choose_device(precision="fp16")


def test_forced_cpu_ignores_gpus():
    assert choose_device(requested="cpu", gpu_addresses=["0"], gpus=gpus(1)).device == "cpu"


def test_cuda_requested_without_gpu_is_an_error():
    with pytest.raises(OptionError, match="no CUDA device"):
        choose_device(requested="cuda")


def test_explicit_ordinal_is_range_checked():
    assert choose_device(requested="cuda:1", gpus=gpus(2)).device == "cuda:1"
    with pytest.raises(OptionError, match="has 2 CUDA"):
        choose_device(requested="cuda:2", gpus=gpus(2))


@pytest.mark.parametrize("bad", [{"requested": "tpu"}, {"precision": "int4"}, {"threads": 0}])
def test_bad_options(bad):
    with pytest.raises(OptionError):
        choose_device(**bad)


def test_fast_precision_picks_the_hardware_fast_path():
    assert choose_device(precision="fast", gpus=gpus(1)).dtype == "bfloat16"
    assert choose_device(precision="fast", cpu_bf16=True).dtype == "bfloat16"
    # Without native bf16, bf16 is emulated (slower than fp32) and int8 loses too much: fast stays exact.
    assert choose_device(precision="fast", cpu_bf16=False).dtype == "float32"


def test_int8_is_cpu_only():
    assert choose_device(precision="int8").dtype == "int8"
    with pytest.raises(OptionError, match="int8' is a CPU mode"):
        choose_device(precision="int8", gpus=gpus(1))
