"""What a sentence-transformers model folder says about how to embed with it.

Reads a local model folder (a Hugging Face snapshot, ``SentenceTransformer.save`` output, or a folder copied
from HDFS/S3/DBFS) without importing torch: ``modules.json`` (Transformer -> Pooling -> Normalize),
``1_Pooling/config.json``, ``sentence_bert_config.json`` (``max_seq_length``), the prompts of
``config_sentence_transformers.json`` and ``config.json``. It also checks, before any Spark job starts, that
the weights and tokenizer are there and that the safetensors files are whole and match the config.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from user_spark.errors import ModelSourceError
from user_spark.model.roles import resolve_prompts

__all__ = ["POOLING_MODES", "ModelSpec", "read_model_spec"]

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_TOKENIZER_FILE_SETS = (
    ("tokenizer.json",),
    ("vocab.json", "merges.txt"),
    ("vocab.txt",),
    ("sentencepiece.bpe.model",),
    ("spiece.model",),
    ("tokenizer.model",),
)


@dataclass(frozen=True)
class ModelSpec:
    """How to embed with one model folder. Small and picklable: it travels to executors.

    Attributes:
        transformer_subdir: folder holding ``config.json``, the weights and the tokenizer, relative to the model
            folder (``""`` for USER-base). Relative, because executors see the folder at another path.
        model_type: ``config.json``'s ``model_type`` (``deberta`` for USER-base).
        hidden_size: width of the transformer's token embeddings.
        max_seq_length: tokens kept per text, special tokens and prompt included; longer texts are truncated.
        do_lower_case: lower-case texts before tokenizing (sentence-transformers' option).
        pooling_modes: pooling applied to the token embeddings, concatenated in this order.
        include_prompt: whether the prompt's tokens take part in pooling (USER-base: yes).
        normalize: L2-normalise the pooled vector.
        prompts: role name -> prefix.
        weights: the weight files, relative to ``transformer_subdir``.
        uses_pickle: the weights are PyTorch pickle files (``.bin``), loaded only on explicit opt-in.
    """

    transformer_subdir: str
    model_type: str
    hidden_size: int
    max_seq_length: int
    do_lower_case: bool
    pooling_modes: tuple[str, ...]
    include_prompt: bool
    normalize: bool
    prompts: Mapping[str, str] = field(default_factory=dict)
    weights: tuple[str, ...] = ()
    uses_pickle: bool = False

    @property
    def dimension(self) -> int:
        """Length of the output vectors."""
        return self.hidden_size * len(self.pooling_modes)


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise ModelSourceError(f"{path} is not valid JSON ({exc}); re-download the model folder") from None


def _module_kind(type_name: str) -> str:
    return type_name.rsplit(".", 1)[-1]


def _pooling_from_config(cfg: Mapping[str, Any], path: str) -> tuple[tuple[str, ...], bool]:
    if "pooling_mode" in cfg:
        raw = cfg["pooling_mode"]
        modes = (raw,) if isinstance(raw, str) else tuple(raw)
    else:
        modes = tuple(mode for key, mode in _LEGACY_POOLING_KEYS.items() if cfg.get(key))
    unknown = [m for m in modes if m not in POOLING_MODES]
    if not modes or unknown:
        raise ModelSourceError(
            f"{path} names pooling {list(modes)!r}; expected one or more of {list(POOLING_MODES)}"
        )
    return modes, bool(cfg.get("include_prompt", True))


def _find_weights(folder: str, allow_pickle: bool) -> tuple[tuple[str, ...], bool]:
    names = set(os.listdir(folder))
    if "model.safetensors.index.json" in names:
        index = _read_json(os.path.join(folder, "model.safetensors.index.json"))
        shards = tuple(sorted(set(index.get("weight_map", {}).values())))
        missing = [s for s in shards if s not in names]
        if missing:
            raise ModelSourceError(
                f"{folder}/model.safetensors.index.json lists shards that are not in the folder: {missing}"
            )
        return shards, False
    if "model.safetensors" in names:
        return ("model.safetensors",), False
    pickles = sorted(n for n in names if n == "pytorch_model.bin" or n.startswith("pytorch_model-"))
    if pickles:
        if not allow_pickle:
            raise ModelSourceError(
                f"{folder} has only PyTorch pickle weights ({', '.join(pickles)}), and loading a pickle can run "
                "arbitrary code. Convert them to safetensors (load the model once on a trusted machine and "
                "`save_pretrained(..., safe_serialization=True)`), or pass allow_pickle=True if you trust "
                "this folder."
            )
        return tuple(pickles), True
    raise ModelSourceError(
        f"No weights in {folder}: expected model.safetensors (or a sharded model.safetensors.index.json); "
        f"found {sorted(names)}. Copy the whole model folder, not just its config."
    )


def _check_safetensors(path: str) -> dict[str, Any]:
    """Parse a safetensors header and check the file holds every byte it promises."""
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ValueError("shorter than its 8-byte header length")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > size - 8:
                raise ValueError(f"header of {header_len} bytes in a file of {size}")
            header = json.loads(fh.read(header_len))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelSourceError(
            f"{path} is not a valid safetensors file ({exc}); re-download or re-copy it"
        ) from None
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    expected = 8 + header_len + end
    if size < expected:
        raise ModelSourceError(
            f"{path} is truncated: {size} bytes on disk, its header describes {expected}. "
            "The copy was interrupted; copy the file again."
        )
    return dict(header)


def _check_weights_match_config(folder: str, weights: tuple[str, ...], config: Mapping[str, Any]) -> None:
    vocab, hidden = config.get("vocab_size"), config.get("hidden_size")
    layers = config.get("num_hidden_layers")
    max_layer = -1
    for name in weights:
        path = os.path.join(folder, name)
        header = _check_safetensors(path)
        for key, tensor in header.items():
            if key == "__metadata__":
                continue
            if key.endswith("word_embeddings.weight") and vocab and hidden and list(tensor["shape"]) != [vocab, hidden]:
                    raise ModelSourceError(
                        f"{path}: {key} has shape {tensor['shape']} but config.json says vocab_size={vocab}, "
                        f"hidden_size={hidden}; the config does not belong to these weights"
                    )
            parts = key.split(".")
            if "layer" in parts:
                idx = parts.index("layer") + 1
                if idx < len(parts) and parts[idx].isdigit():
                    max_layer = max(max_layer, int(parts[idx]))
    if layers and max_layer >= 0 and max_layer + 1 != layers:
        raise ModelSourceError(
            f"{folder}: the weights hold {max_layer + 1} layers but config.json says num_hidden_layers={layers}; "
            "the config does not belong to these weights"
        )


def _modules(folder: str) -> tuple[str, str | None, bool]:
    """``(transformer folder, pooling folder or None, normalize)`` from ``modules.json`` (none: a plain folder)."""
    modules_path = os.path.join(folder, "modules.json")
    transformer_dir, pooling_dir, normalize = folder, None, False
    if not os.path.exists(modules_path):
        return transformer_dir, pooling_dir, normalize
    kinds: list[str] = []
    for module in _read_json(modules_path):
        kind = _module_kind(module.get("type", ""))
        kinds.append(kind)
        sub = os.path.join(folder, module.get("path", ""))
        if kind == "Transformer":
            transformer_dir = sub
        elif kind == "Pooling":
            pooling_dir = sub
        elif kind == "Normalize":
            normalize = True
        else:
            raise ModelSourceError(
                f"{modules_path} lists a {module.get('type')} module, which user_spark does not run; "
                "supported: Transformer, Pooling, Normalize"
            )
    if kinds[:1] != ["Transformer"]:
        raise ModelSourceError(f"{modules_path} must start with a Transformer module; found {kinds}")
    return transformer_dir, pooling_dir, normalize


def _pooling(pooling_dir: str | None, hidden: int) -> tuple[tuple[str, ...], bool, int]:
    """``(modes, include_prompt, token embedding width)`` of the Pooling module."""
    if pooling_dir is None:
        # A plain Hugging Face folder: sentence-transformers wraps it with mean pooling and no normalisation.
        return ("mean",), True, hidden
    pool_cfg_path = os.path.join(pooling_dir, "config.json")
    if not os.path.exists(pool_cfg_path):
        raise ModelSourceError(f"modules.json names a Pooling module but {pool_cfg_path} is missing")
    pool_cfg = _read_json(pool_cfg_path)
    modes, include_prompt = _pooling_from_config(pool_cfg, pool_cfg_path)
    width = int(pool_cfg.get("word_embedding_dimension") or pool_cfg.get("embedding_dimension") or hidden)
    return modes, include_prompt, width


def _max_seq_length(transformer_dir: str, sbert: Mapping[str, Any], config: Mapping[str, Any]) -> int:
    """sentence-transformers' ``max_seq_length``, else the tokenizer's and the model's limit, else 512."""
    max_len = sbert.get("max_seq_length")
    if max_len is not None:
        return int(max_len)
    tok_cfg_path = os.path.join(transformer_dir, "tokenizer_config.json")
    tok_cfg = _read_json(tok_cfg_path) if os.path.exists(tok_cfg_path) else {}
    candidates = [v for v in (tok_cfg.get("model_max_length"), config.get("max_position_embeddings"))
                  if isinstance(v, int) and 0 < v < 1_000_000]
    return min(candidates) if candidates else 512


def _check_tokenizer(transformer_dir: str) -> None:
    names = set(os.listdir(transformer_dir))
    if not any(all(f in names for f in group) for group in _TOKENIZER_FILE_SETS):
        raise ModelSourceError(
            f"No tokenizer in {transformer_dir}: expected tokenizer.json (or vocab.json + merges.txt, vocab.txt, "
            f"a sentencepiece model); found {sorted(names)}"
        )


def read_model_spec(
    folder: str,
    *,
    prompts: Mapping[str, str] | None = None,
    allow_pickle: bool = False,
    check_weights: bool = True,
) -> ModelSpec:
    """Read and check a local sentence-transformers (or plain Hugging Face) model folder.

    Args:
        folder: local path of the model folder.
        prompts: role -> prefix table that replaces the folder's prompts.
        allow_pickle: accept ``pytorch_model.bin`` weights (pickle can run code: only for trusted folders).
        check_weights: validate safetensors headers and sizes against ``config.json``.

    Returns:
        The folder's :class:`ModelSpec`.

    Raises:
        ModelSourceError: missing folder, config, weights or tokenizer; truncated or mismatched weights;
            unsupported sentence-transformers modules.

    >>> read_model_spec("tests/data/USER-base", check_weights=False)  # doctest: +SKIP
    ModelSpec(model_type='deberta', max_seq_length=512, pooling_modes=('mean',), normalize=True, ...)
    """
    if not os.path.isdir(folder):
        raise ModelSourceError(f"Model folder {folder!r} does not exist or is not a directory")
    transformer_dir, pooling_dir, normalize = _modules(folder)
    config_path = os.path.join(transformer_dir, "config.json")
    if not os.path.exists(config_path):
        raise ModelSourceError(
            f"No config.json in {transformer_dir}; this does not look like a Hugging Face model folder"
        )
    config = _read_json(config_path)
    hidden = int(config.get("hidden_size") or config.get("d_model") or 0)
    modes, include_prompt, hidden = _pooling(pooling_dir, hidden)
    sbert_path = os.path.join(transformer_dir, "sentence_bert_config.json")
    sbert = _read_json(sbert_path) if os.path.exists(sbert_path) else {}
    st_cfg_path = os.path.join(folder, "config_sentence_transformers.json")
    st_cfg = _read_json(st_cfg_path) if os.path.exists(st_cfg_path) else {}
    _check_tokenizer(transformer_dir)
    weights, uses_pickle = _find_weights(transformer_dir, allow_pickle)
    if check_weights and not uses_pickle:
        _check_weights_match_config(transformer_dir, weights, config)

    rel = os.path.relpath(transformer_dir, folder).replace(os.sep, "/")
    return ModelSpec(
        transformer_subdir="" if rel == "." else rel,
        model_type=str(config.get("model_type", "")),
        hidden_size=hidden,
        max_seq_length=_max_seq_length(transformer_dir, sbert, config),
        do_lower_case=bool(sbert.get("do_lower_case", False)),
        pooling_modes=modes,
        include_prompt=include_prompt,
        normalize=normalize,
        prompts=resolve_prompts(st_cfg.get("prompts"), prompts),
        weights=weights,
        uses_pickle=uses_pickle,
    )
