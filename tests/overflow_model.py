"""A copy of a model folder in which one frequent token's embedding is 1e5: past float16's range (65504), fine in
float32. Texts holding that token overflow in fp16, and only those: the recompute-in-fp32 path gets real input."""

from __future__ import annotations

import shutil

import numpy as np


def overflowing_copy(model_dir: str, out_dir: str, texts: list[str], prefix: str = "query: ") -> tuple[str, np.ndarray]:
    """Copy ``model_dir`` to ``out_dir`` with one token (in a fifth to a half of ``texts``) set to 1e5.

    Returns:
        The folder, and which of ``texts`` hold the token.
    """
    from safetensors.torch import load_file, save_file

    from user_spark.model.spec import read_model_spec
    from user_spark.runtime.tokens import TextTokenizer, tokenizer_folder

    shutil.copytree(model_dir, out_dir)
    spec = read_model_spec(model_dir)
    ids, _ = TextTokenizer(tokenizer_folder(model_dir, spec), spec).tokenize([prefix + t for t in texts])
    counts = np.bincount(np.concatenate([np.unique(x[1:-1]) for x in ids]))
    token = int(np.flatnonzero((counts > len(texts) // 5) & (counts < len(texts) // 2))[0])
    path = f"{out_dir}/model.safetensors"
    weights = load_file(path)
    name = next(k for k in weights if k.endswith("word_embeddings.weight"))
    weights[name][token] = 1e5
    save_file(weights, path, metadata={"format": "pt"})
    return out_dir, np.asarray([token in set(x.tolist()) for x in ids])
