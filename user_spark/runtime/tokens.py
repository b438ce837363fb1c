"""Texts to token ids, as sentence-transformers tokenizes them, spread over the task's cores.

The model folder's fast (Rust) tokenizer, truncating at ``max_seq_length`` and never padding (padding happens per
model batch, after sorting by length). Tokenizing costs ~150-200 us per 50-token row on one core for USER-base's
byte-level BPE, several times what a GPU needs to embed the row, so :meth:`TextTokenizer.tokenize` splits a call into
chunks that threads tokenize at once: ``encode_batch`` runs in Rust with the GIL released.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from user_spark.errors import ModelSourceError
from user_spark.model.spec import ModelSpec

__all__ = ["TextTokenizer", "valid_unicode"]

# No vocabulary token spans more than 64 characters (USER-base's longest: 37 bytes; WordPiece vocabularies:
# ~20), so the first max_seq_length tokens of a text lie within its first max_seq_length * 64 characters.
# Cutting longer texts there first keeps tokenizing a 10 MB string (or a 100k-character "word", which BPE
# handles in quadratic time) as cheap as a normal one; the kept tokens change only when a single word
# straddles the cut, which real text never does.
_MAX_CHARS_PER_TOKEN = 64
# Rows per encode_batch call. Small enough to spread a wave over threads; and a truncated text's Encoding holds
# its overflow (offsets, masks, the cut-off tokens, ~0.5 KB per token): 10,000 worst-case rows at once peaked at
# 2.8 GiB, so only int32 ids are kept, a chunk at a time.
_CHUNK = 256


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


class TextTokenizer:
    """The model folder's tokenizer, set up as sentence-transformers uses it (truncation at ``max_seq_length``).

    Args:
        folder: the transformer's folder (tokenizer files).
        spec: the model folder's spec (``max_seq_length``, ``do_lower_case``).
    """

    def __init__(self, folder: str, spec: ModelSpec) -> None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        if not getattr(tokenizer, "is_fast", False):
            raise ModelSourceError(f"{folder}: user_spark needs a fast (Rust) tokenizer; add a tokenizer.json")
        self.spec = spec
        self.pad_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._special_ids = set(tokenizer.all_special_ids)
        # Our own copy of the Rust tokenizer, truncating as sentence-transformers does and never padding.
        rust = tokenizer.backend_tokenizer
        rust.no_padding()
        rust.enable_truncation(max_length=spec.max_seq_length)
        self._rust = rust
        # encode_batch_fast (tokenizers >= 0.20) skips character offsets, which embedding never reads: the same ids
        # ~15% sooner.
        self._encode = getattr(rust, "encode_batch_fast", rust.encode_batch)
        self._prompt_lengths: dict[str, int] = {}

    def _chunk(self, texts: Sequence[str]) -> tuple[list[np.ndarray], list[bool]]:
        encodings = self._encode(list(texts), add_special_tokens=True)
        return [np.asarray(e.ids, dtype=np.int32) for e in encodings], [bool(e.overflowing) for e in encodings]

    def tokenize(self, texts: Sequence[str], threads: int = 1) -> tuple[list[np.ndarray], np.ndarray]:
        """Token ids of each text (truncated at ``max_seq_length``) and a bool array of which were cut.

        Lone surrogates become U+FFFD (:func:`valid_unicode`); texts over ``max_seq_length * 64`` characters are cut
        there before tokenizing. With ``threads`` > 1, chunks of 256 texts are tokenized by that many threads.
        """
        limit = self.spec.max_seq_length * _MAX_CHARS_PER_TOKEN
        cut = np.fromiter((len(t) > limit for t in texts), dtype=bool, count=len(texts))
        clean = [valid_unicode(t[:limit]) for t in texts]
        if self.spec.do_lower_case:
            clean = [t.lower() for t in clean]
        chunks = [clean[start : start + _CHUNK] for start in range(0, len(clean), _CHUNK)]
        if threads > 1 and len(chunks) > 1:
            with ThreadPoolExecutor(min(threads, len(chunks)), thread_name_prefix="user_spark-tokenize") as pool:
                parts = list(pool.map(self._chunk, chunks))
        else:
            parts = [self._chunk(c) for c in chunks]
        ids = [row for part in parts for row in part[0]]
        overflow = np.fromiter((o for part in parts for o in part[1]), dtype=bool, count=len(clean))
        return ids, cut | overflow

    def prompt_length(self, prefix: str) -> int:
        """Tokens of ``prefix`` as it starts a text, leading special token included (sentence-transformers' rule)."""
        if prefix not in self._prompt_lengths:
            ids = self._rust.encode(prefix.lower() if self.spec.do_lower_case else prefix).ids
            self._prompt_lengths[prefix] = len(ids) - 1 if ids and ids[-1] in self._special_ids else len(ids)
        return self._prompt_lengths[prefix]


def tokenizer_folder(model_dir: str, spec: ModelSpec) -> str:
    """The transformer's folder inside a sentence-transformers folder."""
    return os.path.join(model_dir, spec.transformer_subdir) if spec.transformer_subdir else model_dir
