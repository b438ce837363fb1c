"""The executor-side encoder: texts in, one vector per row out, through token-budget batches.

One :class:`Encoder` is built per model per Python worker (see :mod:`user_spark.runtime.worker`) and embeds every
Arrow batch that worker sees. ``embed`` tokenizes the texts (over the task's cores), sorts them by token length,
cuts batches by a token budget, runs them through the model and puts the vectors back in row order; nulls stay
null.

On CPU the steps run in turn, as fast as they go: tokenizing is ~3% of a CPU forward. On a GPU it is several times
the forward, so the encoder pipelines: a producer thread (:class:`~user_spark.runtime.pipeline.Prefetcher`)
tokenizes the texts in waves, plans and packs their batches, while the main thread keeps the GPU one batch ahead
(:class:`~user_spark.runtime.runner.ModelRunner`). Every batch's vectors are checked for inf/NaN; rows that
overflowed in half precision are recomputed in fp32 (counted in :attr:`EmbedOutput.recomputed`). On CUDA
out-of-memory the batch is split in two and retried *after* the exception is gone (its traceback holds the failed
batch's activations), and the token budget drops, recovering after successful batches.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from user_spark.errors import EmbeddingError
from user_spark.model.spec import ModelSpec
from user_spark.runtime.batching import FIRST_WAVE_ROWS, Batch, attention_padding, plan_batches, wave_rows
from user_spark.runtime.budget import TokenBudget, activation_bytes_per_token, default_batch_tokens, memory_cap
from user_spark.runtime.device import DeviceChoice
from user_spark.runtime.gpu import available_bytes, compute_device, release_memory
from user_spark.runtime.loading import TORCH_DTYPES, load_model
from user_spark.runtime.pipeline import Prefetcher
from user_spark.runtime.runner import ModelRunner, Pending
from user_spark.runtime.settings import Backend
from user_spark.runtime.tokens import TextTokenizer, tokenizer_folder, valid_unicode

__all__ = ["EmbedOutput", "Encoder", "describe_failure", "valid_unicode"]

logger = logging.getLogger(__name__)

# Batches the producer may run ahead: enough to cover tokenizing the next wave while the GPU runs these.
_PREFETCH_BATCHES = 8


@dataclass
class EmbedOutput:
    """Embeddings of one Arrow batch.

    Attributes:
        vectors: ``[rows, dim]`` float32; rows whose text was null hold zeros and are marked in ``valid``.
        valid: ``[rows]`` bool, False where the input was null.
        tokens: tokens embedded (after truncation, special tokens and prompts included).
        truncated: rows cut at ``max_seq_length``.
        recomputed: rows whose half-precision vector held inf/NaN and were recomputed in fp32.
    """

    vectors: np.ndarray
    valid: np.ndarray
    tokens: int
    truncated: int
    recomputed: int = 0


@dataclass
class _Counts:
    tokens: int = 0
    truncated: int = 0
    recomputed: int = 0


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
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

        self.spec = spec
        self.choice = choice
        self.name = name or model_dir
        self.device = compute_device(choice.device)
        self._folder = tokenizer_folder(model_dir, spec)
        self._backend_request = backend
        if choice.threads:
            torch.set_num_threads(choice.threads)
        self.tokenizer = TextTokenizer(self._folder, spec)
        loaded = load_model(self._folder, spec, choice.device, choice.dtype, backend)
        self.model, self.backend = loaded.module, loaded.backend
        self.runner = ModelRunner(loaded, spec, self.device, self.tokenizer.pad_id)
        self.budget = TokenBudget()
        self.pipelined = choice.is_cuda
        self._tokenize_threads = choice.cpus if choice.is_cuda else (choice.threads or 1)
        on_packed_gpu = choice.is_cuda and loaded.packed
        self._padding = attention_padding(loaded.hidden, loaded.intermediate) if on_packed_gpu else 0.1
        self._bytes_per_token = activation_bytes_per_token(
            hidden=loaded.hidden, intermediate=loaded.intermediate, heads=loaded.heads,
            longest=spec.max_seq_length, dtype_bytes=TORCH_DTYPES[choice.dtype].itemsize, packed=loaded.packed,
        )
        self._fp32: ModelRunner | None = None

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_id

    def tokenize(self, texts: Sequence[str]) -> tuple[list[np.ndarray], np.ndarray]:
        """Token ids of each text and which were truncated (see :meth:`TextTokenizer.tokenize`)."""
        return self.tokenizer.tokenize(texts, self._tokenize_threads)

    def prompt_length(self, prefix: str) -> int:
        return self.tokenizer.prompt_length(prefix)

    def close(self) -> None:
        """Drop the model (and its fp32 twin) so that its memory can be returned; the encoder is unusable after."""
        self.model = None
        self.runner = None  # type: ignore[assignment]
        self._fp32 = None

    def embed(
        self,
        texts: Sequence[str | None],
        prefixes: str | Sequence[str],
        *,
        batch_tokens: int | None = None,
        max_batch_rows: int | None = None,
        gpu_sharers: int = 1,
    ) -> EmbedOutput:
        """Embed texts, each with its prefix, in row order.

        Args:
            texts: the texts; ``None`` gives an invalid (null) row.
            prefixes: one prefix for all rows, or one per row.
            batch_tokens: tokens per model batch, padding included; default by device.
            max_batch_rows: optional cap on rows per model batch.
            gpu_sharers: workers sharing this GPU (its free memory is divided among them).

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
        prompt_lens = None
        if not self.spec.include_prompt:
            prompt_lens = np.asarray([self.prompt_length(row_prefixes[i]) for i in rows.tolist()], dtype=np.int64)
        requested = batch_tokens or default_batch_tokens(self.choice.is_cuda)
        counts = _Counts()
        if self.choice.threads:
            torch.set_num_threads(self.choice.threads)
        batches = self._batches(full, rows, prompt_lens, requested, self._memory_cap(gpu_sharers), max_batch_rows,
                                counts)
        if self.pipelined:
            with Prefetcher(batches, _PREFETCH_BATCHES, name="user_spark-prefetch") as ahead:
                self._run(ahead, out, requested, counts)
        else:
            self._run(batches, out, requested, counts)
        return EmbedOutput(out, valid, counts.tokens, counts.truncated, counts.recomputed)

    def _memory_cap(self, sharers: int) -> int | None:
        """Tokens per batch that this worker's share of the GPU's memory holds (``None`` on CPU)."""
        if not self.choice.is_cuda:
            return None
        return memory_cap(available_bytes(self.choice.device), sharers, self._bytes_per_token)

    def _batches(
        self,
        texts: list[str],
        rows: np.ndarray,
        prompt_lens: np.ndarray | None,
        requested: int,
        memory: int | None,
        max_rows: int | None,
        counts: _Counts,
    ) -> Iterator[Batch]:
        """Tokenize ``texts`` (in waves when pipelined, else at once) and yield their batches, longest first."""
        start, size = 0, (FIRST_WAVE_ROWS if self.pipelined else len(texts))
        while start < len(texts):
            stop = min(len(texts), start + size)
            ids, cut = self.tokenizer.tokenize(texts[start:stop], self._tokenize_threads)
            lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
            counts.tokens += int(lengths.sum())
            counts.truncated += int(cut.sum())
            budget = self.budget.limit(requested, memory)
            for index in plan_batches(lengths, budget, max_rows, max_padding=self._padding):
                pl = prompt_lens[start + index] if prompt_lens is not None else None
                batch = Batch(rows[start + index], [ids[i] for i in index.tolist()], pl)
                yield self.runner.prepare(batch) if self.pipelined else batch
            size = wave_rows(budget, float(lengths.mean()))
            start = stop

    def _run(self, batches: Iterable[Batch], out: np.ndarray, requested: int, counts: _Counts) -> None:
        """Launch every batch, keeping one in flight on CUDA; split and retry those that run out of memory."""
        ahead = 1 if self.runner.on_cuda else 0
        inflight: deque[Pending] = deque()
        retry: list[Batch] = []
        source = iter(batches)
        while True:
            batch = retry.pop() if retry else next(source, None)
            if batch is None:
                break
            pending = self._launch(batch)
            if pending is None:  # out of memory; the exception is gone by now
                while inflight:
                    self._finish(inflight.popleft(), out, requested, counts)
                retry.extend(reversed(self._split_after_oom(batch)))
                continue
            inflight.append(pending)
            while len(inflight) > ahead:
                self._finish(inflight.popleft(), out, requested, counts)
        while inflight:
            self._finish(inflight.popleft(), out, requested, counts)

    def _launch(self, batch: Batch) -> Pending | None:
        """The launched batch, or ``None`` if it ran out of device memory.

        The retry must not happen in an ``except`` block: the exception's traceback holds the frames of the failed
        forward, and with them its activations, so ``empty_cache`` could free nothing and the halves would fail
        too. Suppressing it here drops the exception (and that memory) before the caller splits the batch.
        """
        with contextlib.suppress(torch.cuda.OutOfMemoryError):
            return self.runner.launch(batch)
        return None

    def _split_after_oom(self, batch: Batch) -> list[Batch]:
        if len(batch) == 1:
            raise torch.cuda.OutOfMemoryError(
                f"one text of {batch.longest} tokens does not fit in the free memory of {self.choice.device}; "
                "lower spark.task.resource.gpu.amount's sharing (fewer tasks per GPU) or the model's max_seq_length"
            )
        cap = self.budget.out_of_memory(batch.padded_tokens)
        release_memory(self.choice.device)
        logger.warning(
            "Out of memory on %s with a batch of %d x %d tokens; retrying it in two halves, token budget now %d",
            self.choice.device, len(batch), batch.longest, cap,
        )
        halves = batch.halves()
        return [self.runner.prepare(h) for h in halves] if self.pipelined else list(halves)

    def _finish(self, pending: Pending, out: np.ndarray, requested: int, counts: _Counts) -> None:
        vectors = self.runner.wait(pending)
        batch = pending.batch
        bad = ~np.isfinite(vectors).all(axis=1)
        out[batch.rows] = vectors
        if bad.any():
            out[batch.rows[bad]] = self._recompute_fp32(batch.take(np.flatnonzero(bad)))
            counts.recomputed += int(bad.sum())
        self.budget.succeeded(requested)

    def _recompute_fp32(self, batch: Batch) -> np.ndarray:
        """The vectors of rows that overflowed, from the same weights in fp32 (loaded on first need)."""
        if self.choice.dtype == "float32":
            raise EmbeddingError(
                f"{self.name} gave inf/NaN embeddings in fp32 on {self.choice.device} for {len(batch)} row(s): the "
                "weights themselves overflow; check the model folder"
            )
        if self._fp32 is None:
            logger.warning("%s overflowed in %s on %s; loading an fp32 copy to recompute such rows",
                           self.name, self.choice.dtype, self.choice.device)
            loaded = load_model(self._folder, self.spec, self.choice.device, "float32", self._backend_request)
            self._fp32 = ModelRunner(loaded, self.spec, self.device, self.pad_id)
        vectors = self._fp32.wait(self._fp32.launch(batch))
        if not np.isfinite(vectors).all():
            raise EmbeddingError(f"{self.name} gave inf/NaN embeddings even in fp32 for {len(batch)} row(s)")
        return vectors


def describe_failure(name: str, choice: DeviceChoice, partition: int | None, exc: BaseException) -> EmbeddingError:
    """An :class:`EmbeddingError` that names the model, device and partition of an executor-side failure."""
    where = f"partition {partition}" if partition is not None else "outside a Spark task"
    return EmbeddingError(f"Embedding with {name!r} on {choice.device} ({choice.dtype}) failed in {where}: {exc!r}")
