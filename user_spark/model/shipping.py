"""Getting a model folder from the driver to every executor, once.

- Local Spark (``local[*]``): executors are threads of the driver's machine, so they read the folder where
  it is. Nothing is copied.
- A cluster and a folder on the driver's disk (or a hub model the driver just downloaded): the folder is
  packed into one uncompressed tar and added with ``SparkContext.addArchive``; each executor fetches and
  unpacks it once, and tasks find it with ``SparkFiles.get``.
- A folder on a Hadoop-compatible filesystem (``hdfs://``, ``s3a://``, ``dbfs:/``, ...): added with
  ``SparkContext.addFile(uri, recursive=True)``, which copies it to the driver (checked there before any job)
  and to each executor.
- Spark Connect (:mod:`user_spark.connect`): the same tar goes up with ``SparkSession.addArtifacts(...,
  archive=True)``, once per Connect session (artifacts belong to a session); tasks find it with
  ``SparkFiles.get`` as well. A folder on the driver's disk is used in place only when pyspark runs the server
  inside this process (``remote("local[N]")``); a URI cannot be shipped (no ``addFile`` over Connect).

``ship="never"`` uses the path as it is on every machine (a shared mount: NFS, ``/dbfs``, ``/Volumes``).
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from user_spark.connect import is_connect, session_key, shares_driver_disk
from user_spark.errors import ModelSourceError, OptionError, check_choice
from user_spark.model.source import classify_model_source, fetch_hub_model

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["SHIPS", "ModelLocation", "Ship", "check_ship", "ship_model"]

logger = logging.getLogger(__name__)

Ship = Literal["auto", "always", "never"]
SHIPS: tuple[Ship, ...] = ("auto", "always", "never")


def check_ship(ship: str) -> Ship:
    """``ship`` if it is ``auto``, ``always`` or ``never``, else an :class:`OptionError`."""
    return check_choice("ship", ship, SHIPS)

_lock = threading.Lock()
_shipped: dict[tuple[str, str, str, str | None, bool], tuple[str, ModelLocation]] = {}
_temp_dirs: list[str] = []


@dataclass(frozen=True)
class ModelLocation:
    """Where executors find the model folder: a path they can read, or a name for ``SparkFiles.get``."""

    kind: Literal["path", "spark_files"]
    value: str

    def resolve(self) -> str:
        """The folder's local path on the machine this runs on (an executor or the driver)."""
        if self.kind == "path":
            return self.value
        from pyspark import SparkFiles

        path = SparkFiles.get(self.value)
        if not os.path.isdir(path):
            raise ModelSourceError(
                f"The model folder shipped as {self.value!r} is not at {path} on this executor; was the Spark "
                "session that shipped it restarted?"
            )
        return path


def _pack(folder: str) -> str:
    """Pack ``folder`` into ``<tmp>/<name>-<digest>.tar`` (uncompressed: weights do not compress)."""
    stat = [(os.path.relpath(os.path.join(r, f), folder), os.path.getsize(os.path.join(r, f)),
             int(os.path.getmtime(os.path.join(r, f))))
            for r, _, files in sorted(os.walk(folder, followlinks=True)) for f in sorted(files)]
    digest = hashlib.sha1(repr((os.path.abspath(folder), stat)).encode()).hexdigest()[:12]
    tmp = tempfile.mkdtemp(prefix="user_spark-ship-")
    _temp_dirs.append(tmp)
    name = f"{os.path.basename(os.path.normpath(folder)) or 'model'}-{digest}.tar"
    path = os.path.join(tmp, name)
    # dereference: Hugging Face cache snapshots are symlinks into a blob store.
    with tarfile.open(path, "w", dereference=True) as tar:
        for entry in sorted(os.listdir(folder)):
            tar.add(os.path.join(folder, entry), arcname=entry)
    return path


@atexit.register
def _cleanup() -> None:
    for tmp in _temp_dirs:
        shutil.rmtree(tmp, ignore_errors=True)


def ship_model(
    spark: SparkSession,
    model: str,
    *,
    ship: Ship = "auto",
    revision: str | None = None,
    allow_pickle: bool = False,
) -> tuple[str, ModelLocation]:
    """Make ``model`` readable on the driver and on every executor.

    Args:
        spark: the session whose executors will embed.
        model: hub id, local folder, or URI.
        ship: ``"auto"`` (copy only when executors cannot see the driver's disk), ``"always"``, ``"never"``.
        revision: hub revision (branch, tag or commit).
        allow_pickle: also fetch ``.bin`` weights from the hub.

    Returns:
        ``(local folder on the driver, where executors find it)``.

    Raises:
        ModelSourceError: the model cannot be found or fetched.
    """
    check_ship(ship)
    source = classify_model_source(model)
    key = (session_key(spark), source.location, ship, revision, allow_pickle)
    with _lock:
        if key not in _shipped:
            if source.kind == "remote":
                _shipped[key] = _ship_uri(spark, source.location, ship)
            else:
                folder = (
                    fetch_hub_model(source.location, revision=revision, allow_pickle=allow_pickle)
                    if source.kind == "hub"
                    else source.location
                )
                _shipped[key] = _ship_folder(spark, folder, ship)
        return _shipped[key]


def _ship_uri(spark: SparkSession, uri: str, ship: Ship) -> tuple[str, ModelLocation]:
    """A folder on a Hadoop-compatible filesystem, copied to the driver and every executor by ``addFile``."""
    if ship == "never":
        raise OptionError(
            f"ship='never' needs a path every machine can read, not a URI ({uri!r}); use the mount path "
            "(e.g. /dbfs/... or /Volumes/...) or let user_spark ship the folder"
        )
    if is_connect(spark):
        raise ModelSourceError(
            f"Over Spark Connect user_spark cannot have {uri!r} copied to the executors (there is no "
            "SparkContext.addFile). Pass a path every executor can read with ship='never' (on Databricks "
            "the Volume path: /Volumes/<catalog>/<schema>/<volume>/USER-base), or a local folder or hub "
            "id, which user_spark uploads with spark.addArtifacts."
        )
    from pyspark import SparkFiles

    name = os.path.basename(uri.rstrip("/"))
    try:
        spark.sparkContext.addFile(uri, recursive=True)
    except Exception as exc:  # Py4J wraps the filesystem's error (no such path, no permission, no scheme)
        raise ModelSourceError(f"Spark cannot read the model folder {uri!r}: {exc}") from None
    return SparkFiles.get(name), ModelLocation("spark_files", name)


def _ship_folder(spark: SparkSession, folder: str, ship: Ship) -> tuple[str, ModelLocation]:
    """A folder on the driver's disk: used in place, or packed and added as an archive (an artifact over Connect)."""
    if not (ship == "always" or (ship == "auto" and not shares_driver_disk(spark))):
        return folder, ModelLocation("path", folder)
    archive = _pack(folder)
    name = os.path.basename(archive)
    logger.info("Shipping model folder %s to executors as %s", folder, name)
    if not is_connect(spark):
        spark.sparkContext.addArchive(archive)
        return folder, ModelLocation("spark_files", name)
    try:
        spark.addArtifacts(archive, archive=True)
    except Exception as exc:  # a server may cap or refuse artifacts; say what avoids the upload
        raise ModelSourceError(
            f"The Spark Connect server did not accept the model folder {folder!r} as an artifact "
            f"({(str(exc).splitlines() or [type(exc).__name__])[0]}). Put the folder where every executor can "
            "read it (on Databricks a Volume: /Volumes/<catalog>/<schema>/<volume>/USER-base) and pass ship='never'."
        ) from exc
    return folder, ModelLocation("spark_files", name)
