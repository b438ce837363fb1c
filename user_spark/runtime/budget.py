"""How many tokens go into one model batch (padding included).

Four things bound it: the user's ``batch_tokens`` (or the device's default), what the GPU's free memory allows
once shared among the workers on that GPU, and what out-of-memory taught this worker recently. Pure logic; the
encoder feeds it the facts (:mod:`user_spark.runtime.gpu`, :mod:`user_spark.runtime.placement`).
"""

from __future__ import annotations

__all__ = ["TokenBudget", "activation_bytes_per_token", "default_batch_tokens", "memory_cap"]

_CPU_DEFAULT = 8192
_GPU_DEFAULT = 32768


def default_batch_tokens(on_gpu: bool) -> int:
    """Tokens per batch (padding included) when the user does not set one.

    CPU: 8192 keeps a USER-base batch of 16 x 512 tokens under ~1 GiB of activations and is past the size where
    larger GEMMs stop getting faster. GPU: 32768 (~1 GiB of USER-base activations in half precision) fills an
    H100's GEMMs (4 x 768 x 32768 per projection) while the worst case (64 x 512) stays a few GiB.
    """
    return _GPU_DEFAULT if on_gpu else _CPU_DEFAULT


def activation_bytes_per_token(
    *, hidden: int, intermediate: int, heads: int, longest: int, dtype_bytes: int, packed: bool
) -> int:
    """An upper estimate of the memory one token of a batch needs during an inference forward.

    Inference keeps one layer's activations at a time: the residual stream, q/k/v (twice on the packed path: packed
    and padded for attention), the attention output, the FFN's two intermediate tensors, LayerNorm temporaries,
    plus float32 pooling. transformers' eager attention (models without the fast path) also materialises
    ``heads x longest`` scores and probabilities per token.
    """
    per = (10 * hidden + 2 * intermediate) * dtype_bytes + 2 * hidden * 4
    if not packed:
        per += 2 * heads * longest * 4
    return per


def memory_cap(free_bytes: int, sharers: int, bytes_per_token: int, *, headroom: float = 0.6) -> int:
    """Tokens per batch that fit in this worker's share of ``free_bytes`` (``sharers`` workers on the GPU).

    ``headroom`` leaves room for the allocator's fragmentation and for the next batch's inputs while one runs.

    >>> memory_cap(free_bytes=8 << 30, sharers=4, bytes_per_token=40_000)
    32212
    """
    return max(1, int(free_bytes * headroom / max(1, sharers) / max(1, bytes_per_token)))


class TokenBudget:
    """One encoder's token budget: the request, lowered after out-of-memory, recovering after successes.

    After an out-of-memory the cap drops to half the failed batch's size. A cap that stayed forever would leave a
    worker slow for its life after one transient spike (another worker's large batch on a shared GPU), so after
    ``recover_after`` successful batches in a row the cap doubles, until it no longer binds.
    """

    def __init__(self, recover_after: int = 16) -> None:
        self.cap: int | None = None
        self.recover_after = recover_after
        self.out_of_memory_count = 0
        self._successes = 0

    def limit(self, requested: int, memory: int | None = None) -> int:
        """The budget for the next batches: ``requested``, bounded by ``memory`` and the out-of-memory cap."""
        budget = requested if memory is None else min(requested, memory)
        return max(1, budget if self.cap is None else min(budget, self.cap))

    def out_of_memory(self, failed_tokens: int) -> int:
        """Record an out-of-memory on a batch of ``failed_tokens`` (padding included); returns the new cap."""
        self.out_of_memory_count += 1
        self._successes = 0
        self.cap = max(1, min(failed_tokens, self.cap or failed_tokens) // 2)
        return self.cap

    def succeeded(self, requested: int) -> None:
        """Record a successful batch; every ``recover_after`` of them in a row double the cap."""
        if self.cap is None:
            return
        self._successes += 1
        if self._successes >= self.recover_after:
            self._successes = 0
            self.cap *= 2
            if self.cap >= requested:
                self.cap = None
