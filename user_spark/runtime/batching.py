"""Token-budget batching: group texts of similar length so that no work is spent on padding.

A transformer's cost grows with ``rows x longest row`` of a batch, padding included. Sorting the texts of an
Arrow batch by token length and cutting batches by a token budget (rows x padded length) keeps padding near
zero and keeps memory bounded whatever the mix of lengths: a batch of 512-token texts gets few rows, a batch
of 10-token texts many. Pure numpy; the caller restores the original order with the returned indices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "FIRST_WAVE_ROWS",
    "Batch",
    "PackedTokens",
    "attention_padding",
    "pack_tokens",
    "pad_batch",
    "plan_batches",
    "wave_rows",
]

# Padding a few tokens costs less than another batch's fixed overhead (a Python call and a kernel launch per layer).
_MIN_SLACK = 2
# The GPU loop tokenizes in waves: the first is small so that the GPU starts early; later ones hold about
# _WAVE_BUDGETS token budgets, enough rows to sort into full batches (bench/gpu_bench.py batching: on 40,000 real
# texts at 32,768 tokens, waves of 2 budgets gave batches of 13k real tokens on average, 8 gave 23k).
FIRST_WAVE_ROWS = 512
_WAVE_BUDGETS = 8
_MAX_WAVE_ROWS = 32768


def plan_batches(
    lengths: Sequence[int] | np.ndarray,
    token_budget: int,
    max_rows: int | None = None,
    *,
    max_padding: float | Callable[[int], float] = 0.1,
) -> list[np.ndarray]:
    """Split rows into batches whose padded size (rows x longest row) stays within ``token_budget``.

    Rows are taken longest first, so the largest batch (in memory) comes first and a batch that does not fit
    fails at once rather than at the end. A row longer than the budget gets a batch of its own. A batch also
    ends where the next row is more than ``max_padding`` shorter than the batch's longest (or 2 tokens, if
    more), so padding stays under that fraction per batch (under 5% overall on real text) at the price of a
    few more, smaller batches.

    Args:
        lengths: token count of each row.
        token_budget: most tokens per batch, padding included.
        max_rows: optional cap on rows per batch.
        max_padding: most padding per batch, as a fraction of its longest row (1.0 cuts by budget alone), or a
            function of the longest row giving that fraction (see :func:`attention_padding`).

    Returns:
        Index arrays into ``lengths``; together they cover every row exactly once.

    >>> [b.tolist() for b in plan_batches([3, 10, 4, 9], token_budget=20)]
    [[1, 3], [2, 0]]
    """
    if token_budget < 1:
        raise ValueError(f"token_budget must be >= 1, got {token_budget}")
    padding_of = max_padding if callable(max_padding) else _fixed_padding(max_padding)
    lens = np.asarray(lengths, dtype=np.int64)
    if lens.size == 0:
        return []
    order = np.argsort(-lens, kind="stable")
    sorted_lens = lens[order]
    batches: list[np.ndarray] = []
    start, n = 0, len(order)
    while start < n:
        longest = max(int(sorted_lens[start]), 1)
        rows = max(1, token_budget // longest)
        if max_rows is not None:
            rows = min(rows, max_rows)
        end = min(n, start + rows)
        # Sorted descending: the rows long enough to share this batch are a prefix of the rest.
        shortest_allowed = longest - max(padding_of(longest) * longest, _MIN_SLACK)
        end = start + 1 + int(np.searchsorted(-sorted_lens[start + 1 : end], -shortest_allowed, side="right"))
        batches.append(order[start:end])
        start = end
    return batches


def _fixed_padding(fraction: float) -> Callable[[int], float]:
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"max_padding must be within [0, 1], got {fraction}")
    return lambda _longest: fraction


def pad_batch(ids: Sequence[Sequence[int] | np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id lists into ``(input_ids, attention_mask)`` int64 arrays of shape ``[rows, longest]``."""
    longest = max((len(x) for x in ids), default=0)
    input_ids = np.full((len(ids), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), longest), dtype=np.int64)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return input_ids, mask


def wave_rows(budget: int, mean_tokens: float) -> int:
    """Rows in the GPU loop's next wave: about eight token budgets' worth at the mean length seen so far.

    >>> wave_rows(32768, 50.0)
    5242
    """
    return int(min(max(_WAVE_BUDGETS * budget / max(1.0, mean_tokens), FIRST_WAVE_ROWS), _MAX_WAVE_ROWS))


def attention_padding(hidden: int, intermediate: int, waste: float = 0.1) -> Callable[[int], float]:
    """How much padding a batch may carry on the packed path, as a function of its longest row.

    On the packed path (:mod:`user_spark.runtime.fast_deberta`) padding costs only attention: a row of ``n``
    tokens padded to ``L`` spends ``4 h (L^2 - n^2)`` extra FLOPs per layer in attention, against ``n`` times the
    ``2 (4 h^2 + 2 h i)`` of its token-wise work. Allowing that waste up to ``waste`` of the row's own work
    lets short rows share a batch with much longer ones (a 50-token batch takes rows down to ~5 tokens for
    USER-base) while long ones stay close (a 512-token batch, down to ~330), so batches of short texts fill the
    token budget instead of ending at every 10% step of length.

    >>> allow = attention_padding(hidden=768, intermediate=3072)
    >>> round(allow(512), 2), round(allow(50), 2)
    (0.35, 0.89)
    """
    per_token = waste * 2 * (4 * hidden * hidden + 2 * hidden * intermediate) / (4 * hidden)

    def allowance(longest: int) -> float:
        # Smallest n with L^2 - n^2 <= per_token * n:  n = (-per_token + sqrt(per_token^2 + 4 L^2)) / 2.
        shortest = (-per_token + math.sqrt(per_token * per_token + 4.0 * longest * longest)) / 2.0
        return min(1.0, max(0.0, 1.0 - shortest / max(longest, 1)))

    return allowance


@dataclass(frozen=True)
class PackedTokens:
    """One batch's tokens without padding, ready for the packed forward (all int64).

    Attributes:
        flat_ids: ``[tokens]`` ids, row after row. positions: ``[tokens]`` each token's position in its row.
        scatter: ``[tokens]`` each token's index in the padded ``[rows * longest]`` layout; ``None`` when no row
            is padded. lengths: ``[rows]``. rows, longest: the padded layout's shape.
    """

    flat_ids: np.ndarray
    positions: np.ndarray
    scatter: np.ndarray | None
    lengths: np.ndarray
    rows: int
    longest: int


def pack_tokens(ids: Sequence[np.ndarray]) -> PackedTokens:
    """Pack token id arrays for the packed forward (see :class:`PackedTokens`)."""
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    longest = int(lengths.max(initial=0))
    flat_ids = np.concatenate(ids).astype(np.int64, copy=False) if ids else np.zeros(0, np.int64)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    positions = np.arange(flat_ids.size, dtype=np.int64) - starts
    scatter = None
    if lengths.size and int(lengths.min()) != longest:
        scatter = np.repeat(np.arange(lengths.size, dtype=np.int64) * longest, lengths) + positions
    return PackedTokens(flat_ids, positions, scatter, lengths, len(ids), longest)


@dataclass
class Batch:
    """Rows that go through the model together.

    Attributes:
        rows: where each row's vector goes in the output.
        ids: each row's token ids.
        prompt_lengths: each row's prompt tokens, when the model leaves the prompt out of pooling.
        host: the rows packed or padded for the model (filled by the runner's ``prepare``).
    """

    rows: np.ndarray
    ids: list[np.ndarray]
    prompt_lengths: np.ndarray | None = None
    host: PackedTokens | tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def longest(self) -> int:
        return max((len(x) for x in self.ids), default=0)

    @property
    def padded_tokens(self) -> int:
        return len(self.ids) * self.longest

    def take(self, index: np.ndarray) -> Batch:
        """The batch of the rows at ``index`` (positions in this batch), not yet prepared."""
        pl = self.prompt_lengths[index] if self.prompt_lengths is not None else None
        return Batch(self.rows[index], [self.ids[i] for i in index.tolist()], pl)

    def halves(self) -> tuple[Batch, Batch]:
        """The first and second half of the rows (a batch of at least two rows)."""
        half = len(self) // 2
        everything = np.arange(len(self))
        return self.take(everything[:half]), self.take(everything[half:])
