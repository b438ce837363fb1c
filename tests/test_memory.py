"""The token budget, not the number of rows, bounds what embedding adds to a worker's memory.

Runs ``bench/memory.py`` (each configuration in a fresh process, peak RSS from the kernel) on the tiny model
with worst-case rows: every row at 512 tokens. The USER-base numbers are in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench", "memory.py")


@pytest.mark.slow
def test_worst_case_memory_is_bounded_by_the_token_budget(tiny_model, tmp_path):
    out = tmp_path / "memory.json"
    subprocess.run(
        [sys.executable, BENCH, "--model", tiny_model, "--configs", "2048x1,8192x1,8192x4", "--tokenize-rows", "0", "--out", str(out)],
        check=True, capture_output=True, timeout=300,
    )
    small, one, four = json.loads(out.read_text())["results"]
    assert (one["rows"], four["rows"]) == (16, 64) and four["tokens"] == 4 * one["tokens"] == 4 * 8192
    # Four times the rows at the same budget: the same memory (allocator noise aside).
    assert four["embedding_mib"] < one["embedding_mib"] * 1.25 + 16
    # A quarter of the budget: clearly less memory.
    assert small["embedding_mib"] < one["embedding_mib"] * 0.6
    # The tiny model's worst case at the default CPU budget (measured ~200 MiB over the loaded model).
    assert one["embedding_mib"] < 400
