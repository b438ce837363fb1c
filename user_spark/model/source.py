"""Where a model comes from: a Hugging Face hub id, a local folder, or a folder on a Hadoop-compatible filesystem.

:func:`classify_model_source` tells which from the string alone; :func:`fetch_hub_model` downloads a hub model
on the driver (or finds it in the local Hugging Face cache). Executors never talk to the hub: the driver
ships the folder to them (:mod:`user_spark.model.shipping`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlparse

from user_spark.errors import ModelSourceError

__all__ = ["DEFAULT_MODEL", "ModelSource", "classify_model_source", "fetch_hub_model"]

DEFAULT_MODEL = "deepvk/USER-base"

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+):")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# What an embedding needs from a hub repo: configs, tokenizer, safetensors weights. Not the ONNX/OpenVINO
# exports, training checkpoints or pickles that many repos also carry.
_HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "1_Pooling/*", "2_Normalize/*"]
_HUB_PICKLE_PATTERNS = ["pytorch_model*.bin"]


@dataclass(frozen=True)
class ModelSource:
    """A model reference, classified.

    Attributes:
        kind: ``"local"`` (a folder on this machine), ``"remote"`` (a URI Spark's filesystems read:
            ``hdfs://``, ``s3a://``, ``dbfs:/``, ``abfss://``, ``gs://`` ...) or ``"hub"``.
        location: the folder path, the URI, or the hub id.
    """

    kind: Literal["local", "remote", "hub"]
    location: str


def classify_model_source(model: str) -> ModelSource:
    """Tell a hub id, a local folder and a remote URI apart.

    ``file:`` URIs are local folders. A string that names an existing local folder is local even if it also
    looks like a hub id (``USER-base``), which is what a user who just downloaded the folder means.

    >>> classify_model_source("deepvk/USER-base")
    ModelSource(kind='hub', location='deepvk/USER-base')
    >>> classify_model_source("hdfs://nn:8020/models/USER-base")
    ModelSource(kind='remote', location='hdfs://nn:8020/models/USER-base')
    """
    if not isinstance(model, str) or not model.strip():
        raise ModelSourceError(f"model must be a hub id, a folder path or a URI; got {model!r}")
    model = model.strip()
    match = _SCHEME.match(model)
    if match and len(match.group(1)) > 1:  # one letter is a Windows drive, not a scheme
        if match.group(1).lower() == "file":
            return ModelSource("local", urlparse(model).path)
        return ModelSource("remote", model)
    expanded = os.path.expanduser(model)
    if os.path.isdir(expanded):
        return ModelSource("local", os.path.abspath(expanded))
    if os.path.exists(expanded):
        raise ModelSourceError(f"{model!r} is a file; pass the model's folder")
    if model.startswith((".", "/", "~")) or not _HUB_ID.match(model):
        raise ModelSourceError(
            f"No such folder: {os.path.abspath(expanded)} (model={model!r}). Pass an existing folder, a URI Spark "
            "can read (hdfs://, s3a://, dbfs:/, file:), or a Hugging Face hub id such as 'deepvk/USER-base'."
        )
    return ModelSource("hub", model)


def _not_a_folder_either(repo_id: str) -> str:
    """``"No such folder: <path>, and "`` when ``repo_id`` reads like a path here (its parent folder exists, as
    for ``models/USER-base`` next to ``models/``), so a mistyped path is not reported as a hub problem alone."""
    parent = os.path.dirname(repo_id)
    if parent and os.path.isdir(parent):
        return f"No such folder: {os.path.abspath(repo_id)}, and "
    return ""


def _hub_error(message: str) -> ModelSourceError:
    return ModelSourceError(message[:1].upper() + message[1:])


def fetch_hub_model(repo_id: str, *, revision: str | None = None, allow_pickle: bool = False) -> str:
    """Download (or find in the local cache) a hub model's folder and return its local path.

    Raises:
        ModelSourceError: the hub is unreachable and the model is not cached, or the repo does not exist.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    patterns = _HUB_PATTERNS + (_HUB_PICKLE_PATTERNS if allow_pickle else [])
    offline_hint = (
        f"On a machine with access, run `hf download {repo_id} --local-dir {repo_id.split('/')[-1]}` (or "
        "`SentenceTransformer(...).save(dir)`), copy the folder next to your data (local disk, HDFS, S3, a "
        f"Databricks Volume) and pass its path as model=, e.g. model='/models/{repo_id.split('/')[-1]}'."
    )
    folder = _not_a_folder_either(repo_id)
    try:
        return snapshot_download(repo_id, revision=revision, allow_patterns=patterns)
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise _hub_error(
            f"{folder}the Hugging Face hub has no accessible model {repo_id!r} ({type(exc).__name__}). Check the "
            "id, or pass a local folder instead."
        ) from None
    except RevisionNotFoundError:
        raise ModelSourceError(f"Model {repo_id!r} has no revision {revision!r}") from None
    except LocalEntryNotFoundError:
        raise _hub_error(
            f"{folder}cannot reach the Hugging Face hub to fetch {repo_id!r}, and it is not in the local cache "
            f"(offline, firewalled, or HF_HUB_OFFLINE=1). {offline_hint}"
        ) from None
    except OSError as exc:  # connection errors surface as OSError subclasses (requests/httpx)
        raise _hub_error(
            f"{folder}cannot reach the Hugging Face hub to fetch {repo_id!r} ({type(exc).__name__}: {exc}). "
            f"{offline_hint}"
        ) from None
