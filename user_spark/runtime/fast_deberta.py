"""A fast forward pass for DeBERTa v1 without relative attention (USER-base's configuration).

With ``relative_attention: false`` DeBERTa v1 is a post-LayerNorm transformer with absolute position
embeddings and plain scaled dot-product attention; transformers runs it through an eager path (a Python
LayerNorm of six ops, masked_fill + softmax + two matmuls per layer) with no SDPA or flash kernels. This module
runs the same weights (shared, not copied) differently:

- **No compute on padding.** Token-wise work (embeddings, every Linear, GELU, LayerNorm: nearly all FLOPs) runs
  on the packed ``[tokens, hidden]`` matrix of real tokens only. Only attention sees the padded
  ``[batch, heads, length, 64]`` layout, with a key mask.
- **Fused kernels.** ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient kernels on
  GPU) and ``layer_norm`` (DeBERTa's LayerNorm is the standard formula, epsilon inside the square root).

It equals transformers' ``DebertaModel`` to ~1e-6 in fp32 on real tokens. :func:`supports` says when it
applies; otherwise the encoder falls back to transformers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FastDebertaEncoder", "supports"]


def supports(model: Any) -> bool:
    """True when ``model`` is a transformers ``DebertaModel`` this path computes exactly."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) != "deberta":
        return False
    if type(model).__name__ != "DebertaModel":
        return False
    return (
        not getattr(config, "relative_attention", False)
        and not getattr(config, "talking_head", False)
        and getattr(config, "position_biased_input", True)
        and not getattr(config, "pos_att_type", None)
        and getattr(config, "type_vocab_size", 0) == 0
        and getattr(config, "embedding_size", config.hidden_size) == config.hidden_size
        and getattr(model, "z_steps", 0) <= 1
        and config.hidden_act in ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")
    )


class _Layer(nn.Module):
    def __init__(self, layer: Any, heads: int) -> None:
        super().__init__()
        att = layer.attention
        self.heads = heads
        self.qkv = att.self.in_proj  # Linear H -> 3H without bias; per head its rows are q, k, v
        hidden = self.qkv.in_features
        self.head_dim = hidden // heads
        self.q_bias = att.self.q_bias
        self.v_bias = att.self.v_bias
        self.out = att.output.dense
        self.ln1 = att.output.LayerNorm
        self.up = layer.intermediate.dense
        self.down = layer.output.dense
        self.ln2 = layer.output.LayerNorm

    def forward(self, x: torch.Tensor, scatter: torch.Tensor | None, shape: tuple[int, int],
                key_mask: torch.Tensor | None, act: Any) -> torch.Tensor:
        batch, length = shape
        tokens, hidden = x.shape
        qkv = self.qkv(x).view(tokens, self.heads, 3, self.head_dim)
        qkv[:, :, 0] += self.q_bias.view(self.heads, self.head_dim).to(x.dtype)
        qkv[:, :, 2] += self.v_bias.view(self.heads, self.head_dim).to(x.dtype)
        if scatter is None:  # no padding in this batch: packed is already [batch * length]
            padded = qkv
        else:
            # Packed [tokens, heads, 3, d] -> padded [batch * length, ...] for attention only. Zeros, not
            # garbage, at padding: a masked key's weight is 0, and 0 x NaN would still be NaN.
            padded = x.new_zeros(batch * length, self.heads, 3, self.head_dim)
            padded[scatter] = qkv
        padded = padded.view(batch, length, self.heads, 3, self.head_dim).permute(3, 0, 2, 1, 4)
        ctx = F.scaled_dot_product_attention(padded[0], padded[1], padded[2], attn_mask=key_mask)
        ctx = ctx.transpose(1, 2).reshape(batch * length, hidden)
        if scatter is not None:
            ctx = ctx[scatter]
        x = F.layer_norm(self.out(ctx) + x, (hidden,), self.ln1.weight, self.ln1.bias, self.ln1.variance_epsilon)
        h = self.down(act(self.up(x)))
        return F.layer_norm(h + x, (hidden,), self.ln2.weight, self.ln2.bias, self.ln2.variance_epsilon)


def _activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name == "gelu":
        return F.gelu
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda t: F.gelu(t, approximate="tanh")
    return F.relu


class FastDebertaEncoder(nn.Module):
    """DeBERTa v1 (no relative attention) forward on packed tokens; weights shared with ``model``.

    Call it like the transformers model: ``encoder(input_ids=..., attention_mask=...)`` returns an object with
    ``last_hidden_state`` ``[batch, length, hidden]`` (zeros at padding) for right-padded inputs.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        if not supports(model):
            raise ValueError("FastDebertaEncoder needs a DebertaModel with relative_attention off")
        config = model.config
        emb = model.embeddings
        self.word = emb.word_embeddings
        self.pos = emb.position_embeddings
        self.ln = emb.LayerNorm
        self.layers = nn.ModuleList(_Layer(layer, config.num_attention_heads) for layer in model.encoder.layer)
        self.act = _activation(config.hidden_act)
        self.hidden = config.hidden_size

    @property
    def dtype(self) -> torch.dtype:
        dtype: torch.dtype = self.word.weight.dtype
        return dtype

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        batch, length = input_ids.shape
        positions = torch.arange(length, device=input_ids.device).repeat(batch)
        flat_ids = input_ids.reshape(-1)
        padded = not bool(attention_mask.all())
        scatter = attention_mask.reshape(-1).bool().nonzero().squeeze(1) if padded else None
        key_mask = attention_mask.bool()[:, None, None, :] if padded else None
        if scatter is not None:
            positions, flat_ids = positions[scatter], flat_ids[scatter]
        return _Output(self.forward_packed(flat_ids, positions, scatter, key_mask, batch, length))

    def forward_packed(
        self,
        flat_ids: torch.Tensor,
        positions: torch.Tensor,
        scatter: torch.Tensor | None,
        key_mask: torch.Tensor | None,
        batch: int,
        length: int,
    ) -> torch.Tensor:
        """The forward on tokens packed by the caller; no host synchronisation (no data-dependent shapes).

        Args:
            flat_ids: ``[tokens]`` the real tokens' ids, row after row.
            positions: ``[tokens]`` each token's position in its row.
            scatter: ``[tokens]`` each token's index in the padded ``[batch * length]`` layout, or ``None`` when
                no row is padded.
            key_mask: ``[batch, 1, 1, length]`` bool, True at real tokens (``None`` with ``scatter``).
            batch, length: the padded layout's shape.

        Returns:
            ``[batch, length, hidden]``, zeros at padding.
        """
        x = self.word(flat_ids) + self.pos(positions)
        x = F.layer_norm(x, (self.hidden,), self.ln.weight, self.ln.bias, self.ln.variance_epsilon)
        for layer in self.layers:
            x = layer(x, scatter, (batch, length), key_mask, self.act)
        out: torch.Tensor
        if scatter is None:
            out = x.view(batch, length, self.hidden)
            return out
        out = x.new_zeros(batch * length, self.hidden)
        out[scatter] = x
        return out.view(batch, length, self.hidden)


class _Output:
    __slots__ = ("last_hidden_state",)

    def __init__(self, last_hidden_state: torch.Tensor) -> None:
        self.last_hidden_state = last_hidden_state
