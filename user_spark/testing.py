"""Build model folders with a real architecture and tokenizer but random weights, for tests and benchmarks.

The hub is often unreachable where pipelines are developed (and always in this project's CI). A folder built
here from USER-base's ``config.json`` and tokenizer is loaded by exactly the same code as the real model; its
forward pass costs the same, since cost does not depend on the weights' values.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

__all__ = ["build_random_model"]

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def build_random_model(source_dir: str, out_dir: str, *, seed: int = 0, **config_overrides: Any) -> str:
    """Write a sentence-transformers folder with ``source_dir``'s architecture and tokenizer, random weights.

    Args:
        source_dir: a model folder with ``config.json`` and tokenizer files (weights not needed).
        out_dir: where to write the new folder (created; must not hold a model already).
        seed: torch seed for the weights, so a folder can be rebuilt identically.
        **config_overrides: ``config.json`` fields to change, e.g. ``hidden_size=64, num_hidden_layers=2``
            for a tiny model that keeps the real tokenizer.

    Returns:
        ``out_dir``.

    >>> build_random_model("tests/data/USER-base", "/tmp/user-base-random")  # doctest: +SKIP
    '/tmp/user-base-random'
    """
    import torch
    from transformers import AutoConfig, AutoModel

    os.makedirs(out_dir, exist_ok=True)
    for root, _, files in os.walk(source_dir):
        rel = os.path.relpath(root, source_dir)
        for name in files:
            if name in _WEIGHT_FILES or name.endswith(".safetensors"):
                continue
            os.makedirs(os.path.join(out_dir, rel), exist_ok=True)
            shutil.copyfile(os.path.join(root, name), os.path.join(out_dir, rel, name))
    config = AutoConfig.from_pretrained(source_dir, **config_overrides)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config)  # type: ignore[no-untyped-call]
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    pooling = os.path.join(out_dir, "1_Pooling", "config.json")
    if os.path.exists(pooling):
        with open(pooling, encoding="utf-8") as fh:
            cfg = json.load(fh)
        cfg["word_embedding_dimension"] = config.hidden_size
        with open(pooling, "w", encoding="utf-8") as fh:
            json.dump(cfg, fh, indent=2)
    return out_dir


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m user_spark.testing",
        description="Build a model folder with SOURCE's architecture and tokenizer and random weights "
        "(to try user_spark where the real weights cannot be downloaded; its embeddings mean nothing).",
    )
    parser.add_argument("source", help="folder with config.json and tokenizer files, e.g. tests/data/USER-base")
    parser.add_argument("output", help="folder to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build_random_model(args.source, args.output, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
