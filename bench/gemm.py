"""GEMM rates of this machine: torch fp32 / bf16 and ONNX Runtime fp32, FFN-shaped (2048x768 @ 768x3072).

    python bench/gemm.py

Tells whether a reduced precision or ONNX Runtime can pay off on this CPU before anything is built on it.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from embed import _best as best

M, K, N = 2048, 768, 3072
FLOPS = 2 * M * K * N


def main() -> None:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [M, K]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [K, N])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [M, N])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    print(f"{'threads':>7} {'torch fp32':>11} {'torch bf16':>11} {'ORT fp32':>9}   (GFLOP/s)")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        rates = []
        for dtype in (torch.float32, torch.bfloat16):
            a, b = torch.randn(M, K, dtype=dtype), torch.randn(K, N, dtype=dtype)
            rates.append(FLOPS / best(lambda a=a, b=b: a @ b) / 1e9)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        a, b = np.random.randn(M, K).astype(np.float32), np.random.randn(K, N).astype(np.float32)
        rates.append(FLOPS / best(lambda s=session, a=a, b=b: s.run(None, {"a": a, "b": b})) / 1e9)
        print(f"{threads:7d} {rates[0]:11.0f} {rates[1]:11.0f} {rates[2]:9.0f}")


if __name__ == "__main__":
    main()
