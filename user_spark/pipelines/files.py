"""The driver's view of the cluster's filesystem: exists, list, small files, delete.

Jobs need a few file operations Spark's DataFrame API does not offer: whether an output exists (without
reading it and logging a stack trace when it does not), claim files that keep two runs off one output, and
deleting staged intermediates. On a classic session they go through Hadoop's ``FileSystem`` (any filesystem
Spark reads: HDFS, S3, ABFS, local). A Spark Connect client has no such API: it reaches only its own disk,
and only when the server shares it (a server pyspark started in this process); :func:`files` then returns
:class:`LocalFiles`, and ``None`` where nothing is reachable.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

from user_spark.connect import is_connect, shares_driver_disk

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["Entry", "Files", "HadoopFiles", "LocalFiles", "files", "local_path"]


@dataclass(frozen=True)
class Entry:
    """A file or folder: its name (not the path) and modification time (seconds since the epoch)."""

    name: str
    modified: float


class Files(Protocol):
    def exists(self, path: str) -> bool: ...

    def list(self, path: str) -> list[Entry]: ...

    def write_text(self, path: str, text: str) -> None: ...

    def read_text(self, path: str) -> str | None: ...

    def touch(self, path: str) -> None: ...

    def delete(self, path: str) -> None: ...


def local_path(path: str) -> str | None:
    """``path`` on this machine's disk (a plain path or a ``file:`` URI), or ``None`` for another filesystem."""
    parsed = urlparse(path)
    if parsed.scheme == "file":
        return parsed.path
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return path
    return None


class LocalFiles:
    """This machine's disk (plain paths and ``file:`` URIs)."""

    @staticmethod
    def _p(path: str) -> str:
        local = local_path(path)
        if local is None:
            raise ValueError(f"{path!r} is not on this machine's disk")
        return local

    def exists(self, path: str) -> bool:
        return os.path.exists(self._p(path))

    def list(self, path: str) -> list[Entry]:
        folder = self._p(path)
        if not os.path.isdir(folder):
            return []
        return [Entry(e.name, e.stat().st_mtime) for e in os.scandir(folder)]

    def write_text(self, path: str, text: str) -> None:
        target = self._p(path)
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(text)

    def read_text(self, path: str) -> str | None:
        try:
            with open(self._p(path), encoding="utf-8") as fh:
                return fh.read()
        except OSError:
            return None

    def touch(self, path: str) -> None:
        os.utime(self._p(path))

    def delete(self, path: str) -> None:
        target = self._p(path)
        if os.path.isdir(target):
            shutil.rmtree(target, ignore_errors=True)
        elif os.path.exists(target):
            os.remove(target)


class HadoopFiles:
    """Hadoop's ``FileSystem`` through the session's JVM: every filesystem Spark reads, with its settings."""

    def __init__(self, spark: SparkSession) -> None:
        self._jvm: Any = spark._jvm
        self._conf: Any = spark.sparkContext._jsc.hadoopConfiguration()

    def _fs(self, path: str) -> tuple[Any, Any]:
        hpath = self._jvm.org.apache.hadoop.fs.Path(path)
        return hpath.getFileSystem(self._conf), hpath

    def exists(self, path: str) -> bool:
        fs, hpath = self._fs(path)
        return bool(fs.exists(hpath))

    def list(self, path: str) -> list[Entry]:
        fs, hpath = self._fs(path)
        if not fs.exists(hpath):
            return []
        return [Entry(s.getPath().getName(), s.getModificationTime() / 1000.0) for s in fs.listStatus(hpath)]

    def write_text(self, path: str, text: str) -> None:
        fs, hpath = self._fs(path)
        out = fs.create(hpath, True)
        try:
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()

    def read_text(self, path: str) -> str | None:
        fs, hpath = self._fs(path)
        if not fs.exists(hpath):
            return None
        stream = fs.open(hpath)
        try:
            data = self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream)
        finally:
            stream.close()
        return bytes(data).decode("utf-8")

    def touch(self, path: str) -> None:
        fs, hpath = self._fs(path)
        fs.setTimes(hpath, int(time.time() * 1000), -1)

    def delete(self, path: str) -> None:
        fs, hpath = self._fs(path)
        fs.delete(hpath, True)


def files(spark: SparkSession, path: str | None = None) -> Files | None:
    """The filesystem API for ``path`` from this process: Hadoop's on a classic session, this machine's disk for
    a Spark Connect server that shares it (and a local ``path``), else ``None``."""
    if not is_connect(spark):
        return HadoopFiles(spark)
    if shares_driver_disk(spark) and (path is None or local_path(path) is not None):
        return LocalFiles()
    return None
