"""Normalised text and its hash: the key of exact-duplicate groups (pure Python, no Spark)."""

from __future__ import annotations

import hashlib
import re
import unicodedata

__all__ = ["normalize_text", "text_key"]

_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace runs collapsed to one space and stripped.

    >>> normalize_text("  Ёлка\u00a0И   ЁЛКА ")
    'ёлка и ёлка'
    """
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def text_key(text: str | None) -> str | None:
    """A 128-bit hex digest of the normalised text (``None`` for ``None``): equal keys = exact duplicates."""
    if text is None:
        return None
    return hashlib.blake2b(normalize_text(text).encode("utf-8"), digest_size=16).hexdigest()
