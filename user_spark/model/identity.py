"""What identifies a model folder's weights: its hub commit, or a hash of its weight files.

Computed once per folder on the driver (cached by path, size and modification time) and recorded in every
embedding column's metadata, so an output knows exactly which weights made it and ``enrich`` can refuse to mix
two models under one output.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Sequence

from user_spark.model.spec import ModelSpec

__all__ = ["hub_revision", "model_identity", "weights_fingerprint"]

_fingerprints: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()
_SNAPSHOT = re.compile(r"[0-9a-f]{40}")


def hub_revision(folder: str) -> str | None:
    """The commit of a Hugging Face cache snapshot (``.../snapshots/<sha>``); ``None`` for other folders.

    >>> hub_revision("/root/.cache/huggingface/hub/models--deepvk--USER-base/snapshots/" + "a" * 40)
    'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'
    """
    parent, name = os.path.split(os.path.normpath(folder))
    if os.path.basename(parent) == "snapshots" and _SNAPSHOT.fullmatch(name):
        return name
    return None


def weights_fingerprint(folder: str, weights: Sequence[str]) -> str:
    """``sha256:<16 hex>`` of the weight files' names and bytes (each file read once per process)."""
    digest = hashlib.sha256()
    with _lock:
        for name in weights:
            path = os.path.join(folder, name)
            stat = os.stat(path)
            key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
            if key not in _fingerprints:
                part = hashlib.sha256()
                with open(path, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 23), b""):
                        part.update(block)
                _fingerprints[key] = part.hexdigest()
            digest.update(name.encode() + b"\0" + _fingerprints[key].encode())
    return "sha256:" + digest.hexdigest()[:16]


def model_identity(local_dir: str, spec: ModelSpec) -> str:
    """The hub commit of a hub snapshot, else the fingerprint of the folder's weight files."""
    revision = hub_revision(local_dir)
    if revision is not None:
        return revision
    return weights_fingerprint(os.path.join(local_dir, spec.transformer_subdir), spec.weights)
