"""Running prepared batches through a loaded model on its device: inputs in, pooled float32 vectors out.

On CUDA a batch is *launched*: its inputs go from pinned host memory to the GPU, the forward and pooling are
queued, the pooled vectors are queued back into pinned host memory and an event marks the end; nothing waits.
:meth:`ModelRunner.wait` blocks on that event only when the vectors are needed, so the encoder can launch batch
``k + 1`` before it waits for batch ``k``: the GPU always has work queued and the only host synchronisation per
batch is fetching its results. The packed forward takes its token layout from the host (built by
:meth:`ModelRunner.prepare`, in the producer thread), so it has no data-dependent shapes to synchronise on either.
On CPU the same calls compute synchronously.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from user_spark.model.spec import ModelSpec
from user_spark.runtime.batching import Batch, PackedTokens, pack_tokens, pad_batch
from user_spark.runtime.loading import LoadedModel
from user_spark.runtime.pooling import pool

__all__ = ["ModelRunner", "Pending"]


@dataclass
class Pending:
    """A launched batch: its pooled vectors, in host memory once ``event`` has passed (``None`` on CPU)."""

    batch: Batch
    vectors: torch.Tensor
    event: torch.cuda.Event | None


class ModelRunner:
    """One loaded model on one device, as the encoder drives it.

    Args:
        loaded: the model. spec: its folder's spec (pooling). device: the torch device it lives on.
        pad_id: the tokenizer's padding id (padded path).
    """

    def __init__(self, loaded: LoadedModel, spec: ModelSpec, device: torch.device, pad_id: int) -> None:
        self.loaded = loaded
        self.spec = spec
        self.device = device
        self.pad_id = pad_id
        self.on_cuda = device.type == "cuda"

    def prepare(self, batch: Batch) -> Batch:
        """Lay the batch's tokens out for the model on the host (numpy only: safe in a producer thread)."""
        batch.host = pack_tokens(batch.ids) if self.loaded.packed else pad_batch(batch.ids, self.pad_id)
        return batch

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.on_cuda:
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    def _hidden(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden state ``[rows, longest, hidden]`` and attention mask ``[rows, longest]`` of a prepared batch."""
        host = batch.host if batch.host is not None else self.prepare(batch).host
        assert host is not None
        if isinstance(host, PackedTokens):
            lengths = self._to_device(host.lengths)
            mask = torch.arange(host.longest, device=self.device).unsqueeze(0) < lengths.unsqueeze(1)
            scatter = self._to_device(host.scatter) if host.scatter is not None else None
            key_mask = mask[:, None, None, :] if scatter is not None else None
            hidden = self.loaded.module.forward_packed(
                self._to_device(host.flat_ids), self._to_device(host.positions), scatter, key_mask,
                host.rows, host.longest,
            )
            return hidden, mask.to(torch.int64)
        input_ids, attention_mask = host
        mask_t = self._to_device(attention_mask)
        hidden = self.loaded.module(input_ids=self._to_device(input_ids), attention_mask=mask_t).last_hidden_state
        return hidden, mask_t

    def launch(self, batch: Batch) -> Pending:
        """Queue the batch's forward and pooling (and, on CUDA, the copy of its vectors to the host)."""
        with torch.inference_mode():
            hidden, mask = self._hidden(batch)
            prompt = self._to_device(batch.prompt_lengths) if batch.prompt_lengths is not None else None
            pooled = pool(hidden, mask, self.spec.pooling_modes, normalize=self.spec.normalize, prompt_lengths=prompt)
            if not self.on_cuda:
                return Pending(batch, pooled, None)
            host = torch.empty(pooled.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(pooled, non_blocking=True)
            event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            event.record()
            return Pending(batch, host, event)

    @staticmethod
    def wait(pending: Pending) -> np.ndarray:
        """The launched batch's vectors, ``[rows, dim]`` float32, once the device has computed them."""
        if pending.event is not None:
            pending.event.synchronize()
        vectors: np.ndarray = pending.vectors.numpy()
        return vectors
