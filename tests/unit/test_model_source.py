from __future__ import annotations

import os
import subprocess
import sys

import pytest

from user_spark.connect import is_local_master
from user_spark.errors import ModelSourceError
from user_spark.model.source import ModelSource, classify_model_source


def test_hub_ids():
    assert classify_model_source("deepvk/USER-base") == ModelSource("hub", "deepvk/USER-base")
    assert classify_model_source("bert-base-uncased").kind == "hub"


@pytest.mark.parametrize(
    "uri", ["hdfs://nn:8020/models/USER-base", "s3a://bucket/models/USER-base", "dbfs:/models/USER-base",
            "abfss://c@acct.dfs.core.windows.net/m", "gs://b/m"],
)
def test_remote_uris(uri):
    assert classify_model_source(uri) == ModelSource("remote", uri)


def test_local_folders_and_file_uris(tmp_path):
    assert classify_model_source(str(tmp_path)) == ModelSource("local", str(tmp_path))
    assert classify_model_source(f"file://{tmp_path}") == ModelSource("local", str(tmp_path))


def test_existing_folder_wins_over_hub_lookalike(tmp_path, monkeypatch):
    (tmp_path / "USER-base").mkdir()
    monkeypatch.chdir(tmp_path)
    assert classify_model_source("USER-base").kind == "local"


@pytest.mark.parametrize("bad", ["./missing", "/no/such/dir", "a/b/c", ""])
def test_missing_paths_are_errors(bad):
    with pytest.raises(ModelSourceError):
        classify_model_source(bad)


def test_a_file_is_not_a_model_folder(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelSourceError, match="is a file; pass the model's folder"):
        classify_model_source(str(tmp_path / "model.safetensors"))


def _fetch_in_subprocess(tmp_path, **env):
    code = (
        "from user_spark.model.source import fetch_hub_model\n"
        "try:\n    fetch_hub_model('deepvk/USER-base')\n"
        "except Exception as e:\n    print(type(e).__name__); print(e)\n"
    )
    full_env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), **env}
    return subprocess.run(
        [sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=120
    ).stdout


def test_hub_offline_and_not_cached_says_so_and_suggests_a_folder(tmp_path):
    out = _fetch_in_subprocess(tmp_path, HF_HUB_OFFLINE="1")
    assert out.startswith("ModelSourceError")
    assert "Cannot reach the Hugging Face hub to fetch 'deepvk/USER-base'" in out
    assert "hf download deepvk/USER-base" in out and "model='/models/USER-base'" in out


def test_hub_unreachable_says_so(tmp_path):
    # A closed local port: the connection is refused at once, as behind a firewall.
    out = _fetch_in_subprocess(tmp_path, HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9")
    assert out.startswith("ModelSourceError"), out
    assert "Cannot reach the Hugging Face hub" in out


def test_local_master_detection():
    assert is_local_master("local[2]") and is_local_master("local") and is_local_master("local[*, 3]")
    assert not is_local_master("local-cluster[2,1,1024]")
    assert not is_local_master("yarn") and not is_local_master("spark://h:7077") and not is_local_master(None)


class _Conf:
    def __init__(self, master: str | None) -> None:
        self.master = master

    def get(self, key: str, default: str | None = None) -> str | None:
        if self.master is None:
            raise RuntimeError("[CONFIG_NOT_AVAILABLE] spark.master")  # as a server that hides its confs does
        return self.master if key == "spark.master" else default


def _connect_session(master: str | None) -> object:
    session = type("SparkSession", (), {"__module__": "pyspark.sql.connect.session"})()
    session.conf = _Conf(master)  # type: ignore[attr-defined]
    return session


def test_a_connect_server_shares_the_driver_disk_only_when_it_runs_in_this_process(monkeypatch):
    from user_spark.connect import is_connect, shares_driver_disk

    monkeypatch.delenv("SPARK_LOCAL_REMOTE", raising=False)
    assert is_connect(_connect_session("local[2]"))
    assert not shares_driver_disk(_connect_session("local[2]"))  # sc://: maybe another machine, so ship
    monkeypatch.setenv("SPARK_LOCAL_REMOTE", "1")  # what remote("local[N]") sets when it starts the server here
    assert shares_driver_disk(_connect_session("local[2]"))
    assert not shares_driver_disk(_connect_session("local-cluster[2,1,1024]"))
    assert not shares_driver_disk(_connect_session(None))  # master hidden: assume a cluster
