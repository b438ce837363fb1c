"""Pooling token embeddings into one vector per text, as sentence-transformers' Pooling module does.

Right-padded batches only (user_spark pads on the right). Sums accumulate in float32 even when the model
runs in fp16/bf16, so the pooled vector loses no more precision than the model itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["pool", "prompt_mask"]


def prompt_mask(attention_mask: torch.Tensor, prompt_lengths: torch.Tensor) -> torch.Tensor:
    """``attention_mask`` with each row's first ``prompt_lengths[row]`` positions zeroed (prompt excluded)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device).unsqueeze(0)
    return attention_mask * (positions >= prompt_lengths.unsqueeze(1)).to(attention_mask.dtype)


def pool(
    token_embeddings: torch.Tensor,
    attention_mask: torch.Tensor,
    modes: Sequence[str],
    *,
    normalize: bool,
    prompt_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pool ``[rows, tokens, hidden]`` token embeddings into ``[rows, hidden * len(modes)]`` float32 vectors.

    Args:
        token_embeddings: the transformer's last hidden state.
        attention_mask: ``[rows, tokens]``, 1 for real tokens, 0 for padding (right-padded).
        modes: sentence-transformers pooling modes, concatenated in order.
        normalize: L2-normalise the result.
        prompt_lengths: per-row prompt token counts to leave out of pooling (``include_prompt=False``).
    """
    hidden = token_embeddings.float()
    full_mask = attention_mask
    mask = prompt_mask(attention_mask, prompt_lengths) if prompt_lengths is not None else attention_mask
    maskf = mask.unsqueeze(-1).to(hidden.dtype)
    out: list[torch.Tensor] = []
    mean_sum: torch.Tensor | None = None
    mean_count = torch.ones(1)
    for mode in modes:
        if mode == "cls":
            first = mask.to(torch.int).argmax(dim=1)
            out.append(hidden[torch.arange(hidden.shape[0], device=hidden.device), first])
        elif mode == "max":
            out.append(hidden.masked_fill(maskf == 0, float("-inf")).max(dim=1).values)
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            if mean_sum is None:
                mean_sum = (hidden * maskf).sum(dim=1)
                mean_count = torch.clamp(maskf.sum(dim=1), min=1e-9)
            out.append(mean_sum / (mean_count if mode == "mean" else torch.sqrt(mean_count)))
        elif mode == "weightedmean":
            weights = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype).view(1, -1, 1)
            weighted = maskf * weights
            out.append((hidden * weighted).sum(dim=1) / torch.clamp(weighted.sum(dim=1), min=1e-9))
        elif mode == "lasttoken":
            last = full_mask.sum(dim=1).clamp(min=1) - 1
            out.append(hidden[torch.arange(hidden.shape[0], device=hidden.device), last] * maskf[
                torch.arange(hidden.shape[0], device=hidden.device), last])
        else:
            raise ValueError(f"unknown pooling mode {mode!r}")
    pooled = torch.cat(out, dim=-1)
    if normalize:
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
    return pooled
