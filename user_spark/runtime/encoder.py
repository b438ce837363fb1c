"""The executor-side encoder: tokenizer + transformer + pooling, fed by token-budget batches.

One :class:`Encoder` is built per model per Python worker (see :mod:`user_spark.runtime.worker`) and embeds every
Arrow batch that worker sees. ``embed`` tokenizes a whole Arrow batch once, sorts it by token length, runs
budget-sized batches through the model and puts the vectors back in row order; nulls stay null.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from user_spark.errors import EmbeddingError, ModelSourceError, OptionError
from user_spark.model.spec import ModelSpec
from user_spark.runtime.batching import pad_batch, plan_batches
from user_spark.runtime.device import DeviceChoice
from user_spark.runtime.pooling import pool
from user_spark.runtime.settings import Backend

__all__ = ["EmbedOutput", "Encoder", "default_batch_tokens", "load_model", "valid_unicode"]

logger = logging.getLogger(__name__)

# No vocabulary token spans more than 64 characters (USER-base's longest: 37 bytes; WordPiece vocabularies:
# ~20), so the first max_seq_length tokens of a text lie within its first max_seq_length * 64 characters.
# Cutting longer texts there first keeps tokenizing a 10 MB string (or a 100k-character "word", which BPE
# handles in quadratic time) as cheap as a normal one; the kept tokens change only when a single word
# straddles the cut, which real text never does.
_MAX_CHARS_PER_TOKEN = 64
_TOKENIZE_CHUNK = 256

# int8 loads fp32 weights, then quantises every Linear (dynamic quantisation: int8 weights, activations
# quantised per batch, fp32 accumulation; 2.9x the fp32 GEMM rate on an AVX512-VNNI core).
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int8": torch.float32}


def _quantize_int8(module: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 with per-output-channel weight scales.

    Per-tensor scales (torch's default) cost all-MiniLM-L6-v2 a mean cosine of 0.84 to its fp32 embeddings on
    Russian text; per-channel scales give 0.95. Quality figures per mode: docs/BENCHMARKS.md.
    """
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's notice that eager quantisation moves to torchao
        quantized: torch.nn.Module = quantize_dynamic(  # type: ignore[no-untyped-call]
            module, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
        )
        return quantized


def load_model(
    transformer_dir: str, spec: ModelSpec, choice: DeviceChoice, backend: Backend = "auto"
) -> tuple[Any, str]:
    """Load the transformer for ``choice`` and wrap it in the fastest exact path available.

    Returns:
        ``(module, backend name)``; the module is called as ``module(input_ids=..., attention_mask=...)`` and
        returns an object with ``last_hidden_state``.
    """
    from transformers import AutoModel

    from user_spark.runtime.fast_deberta import FastDebertaEncoder, supports

    # trust_remote_code=False: a config's ``auto_map`` (custom modelling code shipped in the folder) is never
    # imported; transformers' own class for ``model_type`` is used, or loading fails.
    try:
        model, info = AutoModel.from_pretrained(
            transformer_dir,
            dtype=_TORCH_DTYPES[choice.dtype],
            use_safetensors=not spec.uses_pickle,
            trust_remote_code=False,
            output_loading_info=True,
        )
    except ValueError as exc:  # e.g. an unknown model_type, or one whose code ships in the folder (auto_map)
        raise ModelSourceError(
            f"transformers cannot load {transformer_dir} as {spec.model_type!r}: "
            f"{(str(exc).splitlines() or [''])[0]} (if the folder ships its own modelling code, user_spark does not "
            "run it: trust_remote_code is always off)"
        ) from None
    _check_loading_info(transformer_dir, spec, info)
    model.eval()
    name = "transformers"
    module = model
    if backend in ("auto", "fast") and supports(model):
        module, name = FastDebertaEncoder(model).eval(), "fast-deberta"
    elif backend == "fast":
        raise OptionError(
            f"backend='fast' runs DeBERTa v1 without relative attention (USER-base); {transformer_dir} is "
            f"{spec.model_type!r}. Use backend='auto' to fall back to transformers."
        )
    if choice.dtype == "int8":
        module = _quantize_int8(module)
        name += "+int8"
    return module.to(torch.device(choice.device)), name


def default_batch_tokens(choice: DeviceChoice) -> int:
    """Tokens per batch (padding included) when the user does not set one.

    CPU: 8192 keeps a USER-base batch of 16 x 512 tokens under ~1 GiB of activations and is past the size where
    larger GEMMs stop getting faster. GPU: 32768 fills an H100 while the worst case (64 x 512) stays a few GiB.
    """
    return 32768 if choice.is_cuda else 8192


@dataclass
class EmbedOutput:
    """Embeddings of one Arrow batch.

    Attributes:
        vectors: ``[rows, dim]`` float32; rows whose text was null hold zeros and are marked in ``valid``.
        valid: ``[rows]`` bool, False where the input was null.
        tokens: tokens embedded (after truncation, special tokens and prompts included).
        truncated: rows cut at ``max_seq_length``.
    """

    vectors: np.ndarray
    valid: np.ndarray
    tokens: int
    truncated: int


class Encoder:
    """Embeds texts with one model on one device.

    Args:
        spec: the model folder's :class:`~user_spark.model.spec.ModelSpec`.
        model_dir: where the model folder is on this machine.
        choice: device, dtype and threads.
        name: the model's name as the user gave it, for messages.
        backend: ``"auto"`` (the fast DeBERTa path where it applies, else transformers), ``"fast"`` (that path
            or an error) or ``"transformers"``.
    """

    def __init__(
        self, spec: ModelSpec, model_dir: str, choice: DeviceChoice, *, name: str = "", backend: Backend = "auto"
    ) -> None:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

        self.spec = spec
        self.choice = choice
        self.name = name or model_dir
        self.device = torch.device(choice.device)
        tdir = os.path.join(model_dir, spec.transformer_subdir) if spec.transformer_subdir else model_dir
        if choice.threads:
            torch.set_num_threads(choice.threads)
        tokenizer = AutoTokenizer.from_pretrained(tdir)
        if not getattr(tokenizer, "is_fast", False):
            raise ModelSourceError(f"{tdir}: user_spark needs a fast (Rust) tokenizer; add a tokenizer.json")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._special_ids = set(tokenizer.all_special_ids)
        # Our own copy of the Rust tokenizer, truncating as sentence-transformers does and never padding:
        # padding happens per batch, after sorting by length.
        rust_tokenizer = tokenizer.backend_tokenizer
        rust_tokenizer.no_padding()
        rust_tokenizer.enable_truncation(max_length=spec.max_seq_length)
        self._tokenizer = rust_tokenizer
        self.model, self.backend = load_model(tdir, spec, choice, backend)
        self._prompt_lengths: dict[str, int] = {}
        self._budget_cap: int | None = None

    def tokenize(self, texts: Sequence[str]) -> tuple[list[np.ndarray], np.ndarray]:
        """Token ids of each text (truncated at ``max_seq_length``) and a bool array of which were cut.

        Lone surrogates (which Python strings may hold but UTF-8 cannot) become U+FFFD; see :func:`valid_unicode`.
        Texts over ``max_seq_length * 64`` characters are cut there before tokenizing (see ``_MAX_CHARS_PER_TOKEN``).
        """
        limit = self.spec.max_seq_length * _MAX_CHARS_PER_TOKEN
        cut = np.fromiter((len(t) > limit for t in texts), dtype=bool, count=len(texts))
        texts = [valid_unicode(t[:limit]) for t in texts]
        if self.spec.do_lower_case:
            texts = [t.lower() for t in texts]
        # In chunks, keeping only int32 ids: a truncated text's Encoding also holds its overflow (offsets, masks,
        # the cut-off tokens), ~0.5 KB per token; 10,000 worst-case rows at once peaked at 2.8 GiB.
        ids: list[np.ndarray] = []
        overflow = np.zeros(len(texts), dtype=bool)
        for start in range(0, len(texts), _TOKENIZE_CHUNK):
            encodings = self._tokenizer.encode_batch(texts[start : start + _TOKENIZE_CHUNK], add_special_tokens=True)
            ids.extend(np.asarray(e.ids, dtype=np.int32) for e in encodings)
            overflow[start : start + len(encodings)] = [bool(e.overflowing) for e in encodings]
            del encodings
        return ids, cut | overflow

    def prompt_length(self, prefix: str) -> int:
        """Tokens of ``prefix`` as it starts a text, leading special token included (sentence-transformers' rule)."""
        if prefix not in self._prompt_lengths:
            ids = self._tokenizer.encode(prefix.lower() if self.spec.do_lower_case else prefix).ids
            self._prompt_lengths[prefix] = len(ids) - 1 if ids and ids[-1] in self._special_ids else len(ids)
        return self._prompt_lengths[prefix]

    def _forward(self, input_ids: np.ndarray, mask: np.ndarray, prompt_lengths: np.ndarray | None) -> torch.Tensor:
        ids_t = torch.from_numpy(input_ids).to(self.device, non_blocking=True)
        mask_t = torch.from_numpy(mask).to(self.device, non_blocking=True)
        with torch.inference_mode():
            hidden = self.model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
            pl = torch.from_numpy(prompt_lengths).to(self.device) if prompt_lengths is not None else None
            return pool(hidden, mask_t, self.spec.pooling_modes, normalize=self.spec.normalize, prompt_lengths=pl)

    def _forward_splitting(self, ids: list[np.ndarray], prompt_lengths: np.ndarray | None) -> np.ndarray:
        """Forward one batch; on CUDA out-of-memory, halve it and retry, and lower the budget from then on."""
        input_ids, mask = pad_batch(ids, self.pad_id)
        try:
            return self._forward(input_ids, mask, prompt_lengths).float().cpu().numpy()
        except torch.OutOfMemoryError:
            if len(ids) == 1:
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            half = len(ids) // 2
            self._budget_cap = max(1, input_ids.size // 2)
            logger.warning(
                "Out of memory on %s with a batch of %d x %d tokens; splitting it and lowering the token budget to %d",
                self.choice.device,
                *input_ids.shape,
                self._budget_cap,
            )
            pl_a = prompt_lengths[:half] if prompt_lengths is not None else None
            pl_b = prompt_lengths[half:] if prompt_lengths is not None else None
            return np.concatenate(
                [self._forward_splitting(ids[:half], pl_a), self._forward_splitting(ids[half:], pl_b)]
            )

    def embed(
        self,
        texts: Sequence[str | None],
        prefixes: str | Sequence[str],
        *,
        batch_tokens: int | None = None,
        max_batch_rows: int | None = None,
    ) -> EmbedOutput:
        """Embed texts, each with its prefix, in row order.

        Args:
            texts: the texts; ``None`` gives an invalid (null) row.
            prefixes: one prefix for all rows, or one per row.
            batch_tokens: tokens per model batch, padding included; default by device.
            max_batch_rows: optional cap on rows per model batch.

        Returns:
            An :class:`EmbedOutput` with one vector per input row.
        """
        n = len(texts)
        row_prefixes = [prefixes] * n if isinstance(prefixes, str) else list(prefixes)
        if len(row_prefixes) != n:
            raise ValueError(f"{len(row_prefixes)} prefixes for {n} texts")
        valid = np.fromiter((t is not None for t in texts), dtype=bool, count=n)
        rows = np.flatnonzero(valid)
        out = np.zeros((n, self.spec.dimension), dtype=np.float32)
        if rows.size == 0:
            return EmbedOutput(out, valid, 0, 0)
        full = [row_prefixes[i] + str(texts[i]) for i in rows.tolist()]
        ids, truncated = self.tokenize(full)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        prompt_lens = None
        if not self.spec.include_prompt:
            prompt_lens = np.asarray([self.prompt_length(row_prefixes[i]) for i in rows.tolist()], dtype=np.int64)
        budget = batch_tokens or default_batch_tokens(self.choice)
        if self._budget_cap is not None:
            budget = min(budget, self._budget_cap)
        if self.choice.threads:
            torch.set_num_threads(self.choice.threads)
        for batch in plan_batches(lengths, budget, max_batch_rows):
            pl = prompt_lens[batch] if prompt_lens is not None else None
            out[rows[batch]] = self._forward_splitting([ids[i] for i in batch], pl)
        return EmbedOutput(out, valid, int(lengths.sum()), int(truncated.sum()))


def valid_unicode(text: str) -> str:
    """``text`` with every lone surrogate (U+D800..U+DFFF) replaced by U+FFFD, as a UTF-8 decoder would.

    The Rust tokenizer rejects strings it cannot encode as UTF-8. A surrogate *pair* written as two code points
    (``"\\ud83d\\ude00"``, as some JSON decoders produce) is joined into its character (U+1F600), not replaced.
    Spark never hands such strings to a UDF (it replaces them on the way in); plain Python callers can.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _check_loading_info(folder: str, spec: ModelSpec, info: dict[str, Any]) -> None:
    """Refuse weights that leave parameters of the architecture unset or of the wrong shape.

    transformers fills missing parameters with random values and only logs a warning; embeddings from such a
    model look fine and mean nothing, so a weight file from another variant of the architecture must fail here.
    """
    problems = []
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        problems.append(f"{len(missing)} parameters missing from the weights (e.g. {missing[:3]})")
    if info.get("mismatched_keys"):
        mismatched = sorted(str(k) for k in info["mismatched_keys"])
        problems.append(f"{len(mismatched)} parameters with another shape (e.g. {mismatched[:3]})")
    if problems:
        files = ", ".join(os.path.join(folder, w) for w in spec.weights) or folder
        raise ModelSourceError(
            f"The weights in {files} do not fit {os.path.join(folder, 'config.json')}: {'; '.join(problems)}. "
            "The config and the weights come from different models; re-download the whole folder."
        )


def describe_failure(name: str, choice: DeviceChoice, partition: int | None, exc: BaseException) -> EmbeddingError:
    """An :class:`EmbeddingError` that names the model, device and partition of an executor-side failure."""
    where = f"partition {partition}" if partition is not None else "outside a Spark task"
    return EmbeddingError(f"Embedding with {name!r} on {choice.device} ({choice.dtype}) failed in {where}: {exc!r}")
