"""One run per output at a time: each run writes a claim file, then looks for the claims of others.

Protocol (works on any filesystem with consistent listings, no atomic create needed): a run writes
``<output>/_user_spark_runs/<run id>.json`` (host, process id, start time), then lists the folder. If it
finds another live claim it deletes its own and refuses; otherwise it goes ahead. Two runs that start
together may both refuse, but two can never both go ahead: each writes before it lists, so the later
lister always sees the earlier writer. While it runs, a thread touches the claim every
:data:`HEARTBEAT_S` seconds; the claim is deleted at the end.

A claim is stale, and removed by the next run, when its heartbeat is older than :data:`STALE_S` seconds, or
at once when it names a process of this machine that is gone (a killed driver re-run on the same machine
need not wait). The folder starts with ``_``, so Spark's readers of the output skip it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING

from user_spark.errors import OutputBusyError

if TYPE_CHECKING:
    from user_spark.pipelines.files import Entry, Files

__all__ = ["CLAIMS_FOLDER", "HEARTBEAT_S", "STALE_S", "RunClaim"]

logger = logging.getLogger(__name__)

CLAIMS_FOLDER = "_user_spark_runs"
HEARTBEAT_S = 30.0
STALE_S = 600.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class RunClaim:
    """A run's claim on an output (see the module docstring); a context manager.

    Raises:
        OutputBusyError: on entry, when another run holds a live claim on the output.
    """

    def __init__(self, fs: Files, output: str, *, what: str = "enrich") -> None:
        self.fs = fs
        self.folder = f"{output.rstrip('/')}/{CLAIMS_FOLDER}"
        self.run = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"
        self.path = f"{self.folder}/{self.run}.json"
        self.output, self.what = output, what
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._created_output = False

    def _stale(self, entry: Entry, now: float) -> bool:
        if now - entry.modified > STALE_S:
            return True
        try:
            info = json.loads(self.fs.read_text(f"{self.folder}/{entry.name}") or "{}")
        except ValueError:  # a claim being written: count it as live
            return False
        return bool(info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int)
                    and not _alive(info["pid"]))

    def acquire(self) -> None:
        info = {"run": self.run, "host": socket.gethostname(), "pid": os.getpid(), "what": self.what,
                "started": time.time()}
        self._created_output = not self.fs.exists(self.output)
        self.fs.write_text(self.path, json.dumps(info))
        now = time.time()
        others = [e for e in self.fs.list(self.folder) if e.name.endswith(".json") and e.name != f"{self.run}.json"]
        live = []
        for entry in others:
            if self._stale(entry, now):
                logger.warning("removing the stale claim %s/%s of a run that stopped", self.folder, entry.name)
                self.fs.delete(f"{self.folder}/{entry.name}")
            else:
                live.append(entry.name)
        if live:
            self._delete_own()
            raise OutputBusyError(
                f"Another run is writing to {self.output!r} (claim {self.folder}/{live[0]}); two runs would embed "
                f"the same rows twice. Wait for it to finish. If no run is active (it was killed on another "
                f"machine), the claim goes stale {int(STALE_S // 60)} minutes after its last heartbeat, or delete it."
            )
        self._thread = threading.Thread(target=self._beat, name=f"user_spark-claim-{self.run}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.fs.touch(self.path)
            except Exception as exc:  # the session stopped under us: the claim simply goes stale
                logger.debug("claim heartbeat failed: %s", exc)
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self._delete_own()
        except Exception as exc:
            logger.warning("could not delete the claim %s (%s); it goes stale on its own", self.path, exc)

    def _delete_own(self) -> None:
        """Delete this run's claim, and the folders the claim created if nothing else is in them (a run refused
        before it wrote anything leaves no empty output behind)."""
        self.fs.delete(self.path)
        if not self._created_output or [e for e in self.fs.list(self.folder) if not e.name.startswith(".")]:
            return
        if {e.name for e in self.fs.list(self.output)} <= {CLAIMS_FOLDER}:
            self.fs.delete(self.output)

    def __enter__(self) -> RunClaim:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
