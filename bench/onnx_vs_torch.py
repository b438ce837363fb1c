"""Is ONNX Runtime faster than user_spark's torch fast path for USER-base's architecture on this CPU?

    python bench/onnx_vs_torch.py --texts 300 --threads 1

Exports transformers' DebertaModel (USER-base architecture, random weights) with ``torch.onnx.export``
(TorchScript exporter), then times, on the same sorted, padded batches of real Russian text and the same thread
count: transformers eager, the fast path (``user_spark.runtime.fast_deberta``) and ONNX Runtime. Reports tokens/s and the
largest difference of ONNX Runtime's hidden states from transformers'.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import numpy as np
    import onnxruntime as ort
    import torch
    from embed import load_texts
    from transformers import AutoModel

    from user_spark.model.spec import read_model_spec
    from user_spark.runtime.batching import pad_batch, plan_batches
    from user_spark.runtime.device import choose_device
    from user_spark.runtime.encoder import Encoder
    from user_spark.runtime.fast_deberta import FastDebertaEncoder
    from user_spark.testing import build_random_model

    torch.set_num_threads(args.threads)
    work = tempfile.mkdtemp(prefix="user_spark-onnx-")
    folder = build_random_model(os.path.join(ROOT, "tests", "data", "USER-base"), os.path.join(work, "m"))
    model = AutoModel.from_pretrained(folder).eval()
    fast = FastDebertaEncoder(model).eval()
    enc = Encoder(read_model_spec(folder), folder, choose_device(threads=args.threads))
    ids, _ = enc.tokenize(["query: " + t for t in load_texts(args.texts)])
    lengths = np.array([len(x) for x in ids])
    batches = [pad_batch([ids[i] for i in b], enc.pad_id) for b in plan_batches(lengths, 8192)]
    tokens = int(lengths.sum())

    path = os.path.join(work, "model.onnx")
    sample = tuple(torch.from_numpy(a) for a in batches[0])
    torch.onnx.export(
        model,
        sample,
        path,
        input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state"],
        dynamo=False,
        opset_version=17,
        dynamic_axes={
            "input_ids": {0: "b", 1: "l"},
            "attention_mask": {0: "b", 1: "l"},
            "last_hidden_state": {0: "b", 1: "l"},
        },
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def run_torch(module):
        with torch.inference_mode():
            return [
                module(input_ids=torch.from_numpy(a), attention_mask=torch.from_numpy(m)).last_hidden_state
                for a, m in batches
            ]

    def run_ort():
        return [session.run(None, {"input_ids": a, "attention_mask": m})[0] for a, m in batches]

    ref = run_torch(model)
    diff = max(
        float(np.abs((o - r.numpy()) * m[..., None]).max())
        for o, r, (_, m) in zip(run_ort(), ref, batches, strict=False)
    )
    print(
        f"{tokens} tokens in {len(batches)} batches, {args.threads} thread(s); ORT max |diff| vs transformers {diff:.1e}"
    )
    for name, fn in (
        ("transformers eager", lambda: run_torch(model)),
        ("user_spark fast path", lambda: run_torch(fast)),
        ("ONNX Runtime", run_ort),
    ):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        print(f"{name:22} {tokens / min(times):8.0f} tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
