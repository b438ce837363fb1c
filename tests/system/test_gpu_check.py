"""``bench/gpu_check.py --smoke``: the GPU check's code runs end to end on CPU, with pyspark unimportable.

The GPU machines lent to this project have no pyspark; the check must run the executor code path without it. A
``sitecustomize`` on ``PYTHONPATH`` makes ``import pyspark`` fail in the check and in every child it starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BLOCK_PYSPARK = '''
import importlib.abc, sys


class _NoPyspark(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pyspark" or name.startswith("pyspark."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: the GPU machine has no pyspark)")
        return None


sys.meta_path.insert(0, _NoPyspark())
'''


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    site = tmp_path_factory.mktemp("no-pyspark")
    (site / "sitecustomize.py").write_text(BLOCK_PYSPARK)
    out = tmp_path_factory.mktemp("gpu-check")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), ROOT]), USER_SPARK_GPU_REGISTRY=str(out / "reg"))
    env.pop("USER_SPARK_TEST_FAKE_GPUS", None)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_check.py"), "--smoke", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(out / "gpu_check.json") as fh:
        return json.load(fh)


def test_every_section_ran_without_error(smoke):
    assert not smoke["sections"]["environment"]["pyspark_installed"]  # the block worked
    for name, section in smoke["sections"].items():
        assert "error" not in section and "skipped" not in section, (name, section)
    assert set(smoke["sections"]) >= {"placement", "benchmark", "parity", "oom", "batch_company", "tokenizer",
                                      "sharing"}


def test_placement_section_sees_one_load_a_release_and_the_invisible_gpu_error(smoke):
    placement = smoke["sections"]["placement"]
    assert placement["loads_in_three_tasks"] == 1
    assert placement["released"]["events"][0]["collected"] is True
    assert placement["unassigned"]["claims"] == ["cuda:0"]
    invisible = placement["assigned_but_invisible"]
    assert invisible["error_type"] == "OptionError" and "sees no CUDA device" in invisible["message"]


def test_measured_sections_hold_numbers(smoke):
    sections = smoke["sections"]
    for precision in ("fp32", "fp16", "bf16"):
        stats = sections["parity"]["user-base"][precision]["vs_sentence_transformers_fp32"]
        assert stats["nonfinite_rows"] == 0 and stats["mean_cosine"] > 0.99
    assert sections["parity"]["user-base"]["fp32"]["vs_sentence_transformers_fp32"]["max_abs_diff"] < 1e-5
    assert sections["oom"]["out_of_memory_errors"] >= 1 and sections["oom"]["vs_unsplit"]["max_abs_diff"] < 1e-2
    assert [w["sharers_seen"] for w in sections["sharing"]["2"]["workers"]] == [2, 2]
    bench = sections["benchmark"]
    assert bench["paths"] and all(p["udf_tokens_per_s"] > 0 and p["ceiling_tokens_per_s"] > 0 for p in bench["paths"])
    assert set(smoke["targets"]) >= {"one model per GPU per worker", "no NaN"}
