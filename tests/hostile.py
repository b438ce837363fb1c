"""Hostile texts for the encoder and the UDF: empty, huge, lone surrogates, control characters, emoji, scripts."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

HOSTILE = [
    "",
    "   \t\n  ",
    "Ж" * 100_000,  # 100k characters: truncated at 512 tokens
    "обычный текст с \ud800 одиноким суррогатом",  # lone high surrogate
    "\udfff",  # lone low surrogate only
    "\x00\x01\x07\x1b[31mуправляющие\x7f\u200b\u200e\ufeff",  # control, zero-width, BOM
    "эмодзи 🙂👍🏽👨‍👩‍👧 и флаг 🇷🇺",
    "Смешанные scripts: 中文, العربية, ελληνικά, עברית, देवनागरी",
    "\U0010ffff\ufffe\uffff",  # noncharacters: valid code points, never assigned
    "x",
]


hostile_chars = st.one_of(
    st.characters(codec=None),
    st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff", "\x00", "\u202e", "🙂", " ", "\n"]),
)


def alone(encoder, text: str | None, prefix: str = "query: ") -> np.ndarray | None:
    """``text`` embedded on its own (the reference for a row embedded among others)."""
    if text is None:
        return None
    return encoder.embed([text], prefix).vectors[0]
