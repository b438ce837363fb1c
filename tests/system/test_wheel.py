"""The wheel, and the spark-submit route that ships it: ``--py-files`` on a Python that has the dependencies only.

``--py-files`` puts every file on the driver's ``PYTHONPATH``, but executors add only ``.zip``, ``.egg`` and ``.jar``
files to their ``sys.path`` (``SparkContext.PACKAGE_EXTENSIONS``): a ``.whl`` given as it is works on the driver
and fails on the executors with ``No module named 'user_spark'``. A pure-Python wheel is a zip with the package
at its root, so the same file named ``.zip`` works on both. Both facts are tested here, because the README's
spark-submit commands rely on them.

On a development machine ``user_spark`` is importable anyway (an editable install, ``PYTHONPATH``), which would
hide a wheel that executors never loaded. So the job runs on a Python that sees this environment's
site-packages but not its ``.pth`` files (``python -S``): torch, transformers and pyspark are there, the editable
``user_spark`` is not, and the only ``user_spark`` it can import is the shipped file.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import zipfile

import numpy as np
import pandas as pd
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WHEEL_NAME = "user_spark-0.1.0-py3-none-any.whl"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``pip wheel`` of a copy of the sources: nothing is written into the checkout, and no stale ``build/`` of
    an earlier build can leak old modules into the wheel."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    shutil.copytree(os.path.join(ROOT, "user_spark"), src / "user_spark",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    # No build isolation: it would fetch setuptools from an index; this environment has it.
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(dist)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert os.listdir(dist) == [WHEEL_NAME]
    return str(dist / WHEEL_NAME)


def test_wheel_is_pure_python_with_every_module_and_nothing_else(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = zf.read("user_spark-0.1.0.dist-info/WHEEL").decode()
        entry_points = zf.read("user_spark-0.1.0.dist-info/entry_points.txt").decode()
    expected = {
        os.path.relpath(os.path.join(d, f), ROOT).replace(os.sep, "/")
        for d, _, files in os.walk(os.path.join(ROOT, "user_spark")) if "__pycache__" not in d
        for f in files if f.endswith(".py")
    }
    assert {n for n in names if not n.startswith("user_spark-0.1.0.dist-info/")} == expected
    assert {
        "user_spark/__main__.py",
        "user_spark/cli/embed.py",
        "user_spark/pipelines/plot.py",
        "user_spark/ops/blocks.py",
    } <= expected
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        claimed = int(re.search(r"user_spark-0\.1\.0-py3-none-any\.whl \(about (\d+) kB\)", fh.read()).group(1))
    assert 0.75 * claimed <= os.path.getsize(wheel) / 1000 <= 1.25 * claimed, "update the wheel size in the README"
    assert "Root-Is-Purelib: true" in meta and "Tag: py3-none-any" in meta
    assert "user-spark = user_spark.cli.main:main" in entry_points


def _python_without_editable_install(tmp_path) -> str:
    """A launcher for this interpreter that imports from site-packages but skips its .pth files (and so the
    editable ``user_spark``). Spark prepends its own PYTHONPATH (pyspark, shipped files); site-packages comes last."""
    site = os.pathsep.join(dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]))
    path = tmp_path / "python-S"
    path.write_text(f'#!/bin/sh\nPYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{site}" exec {sys.executable} -S "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _submit(python: str, shipped: str, src: str, out: str, model: str, cwd: str) -> subprocess.CompletedProcess:
    import pyspark

    spark_submit = os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_") and k != "PYTHONPATH"}
    env.update(PYSPARK_PYTHON=python, PYSPARK_DRIVER_PYTHON=python)
    cmd = [
        spark_submit,
        "--master",
        "local[2]",
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        "spark.driver.host=127.0.0.1",
        "--py-files",
        shipped,
        os.path.join(ROOT, "jobs", "embed.py"),
        "--input",
        src,
        "--output",
        out,
        "--column",
        "text:passage",
        "--model",
        model,
    ]
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def job_input(tmp_path_factory: pytest.TempPathFactory, ru_texts: list[str]) -> str:
    path = tmp_path_factory.mktemp("input") / "docs.parquet"
    pd.DataFrame({"id": range(24), "text": [None if i == 5 else t for i, t in enumerate(ru_texts[:24])]}).to_parquet(
        path
    )
    return str(path)


@pytest.mark.slow
def test_spark_submit_ships_the_wheel_as_a_zip(wheel: str, job_input: str, tiny_model: str, tmp_path) -> None:
    python = _python_without_editable_install(tmp_path)
    # From an empty cwd, as the job runs: `python -c` and `python -m pyspark.daemon` put the cwd on sys.path.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    hidden = subprocess.run(
        [python, "-c", "import user_spark"],
        capture_output=True,
        text=True,
        cwd=str(cwd),
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    if hidden.returncode == 0:
        pytest.skip(
            "user_spark is installed into site-packages (not editable): the job could not prove it ran "
            "from the shipped file"
        )
    assert "No module named 'user_spark'" in hidden.stderr
    assert subprocess.run([python, "-c", "import torch, transformers, pyspark"]).returncode == 0

    shipped = str(tmp_path / "user_spark.zip")
    shutil.copy(wheel, shipped)
    version = subprocess.run(
        [python, "-m", "user_spark", "--version"],
        capture_output=True,
        text=True,
        cwd=str(cwd),
        env={**os.environ, "PYTHONPATH": shipped},
    )
    assert version.stdout.strip() == "user-spark 0.1.0", version.stderr[-2000:]
    done = _submit(python, shipped, job_input, str(tmp_path / "out"), tiny_model, str(cwd))
    assert done.returncode == 0, done.stderr[-4000:]
    assert "user-spark embed: 24 texts in 1 column(s)" in done.stdout and "1 null" in done.stdout

    from user_spark.model.spec import read_model_spec
    from user_spark.runtime.device import choose_device
    from user_spark.runtime.encoder import Encoder

    out = pd.read_parquet(tmp_path / "out").sort_values("id").reset_index(drop=True)
    src = pd.read_parquet(job_input)
    assert list(out.columns) == ["id", "text", "text_embedding"] and out["id"].tolist() == list(range(24))
    assert out["text_embedding"][5] is None
    ref = Encoder(read_model_spec(tiny_model), tiny_model, choose_device()).embed(src["text"].tolist(), "passage: ")
    got = np.stack([v for v in out["text_embedding"] if v is not None])
    assert got.shape == (23, 64) and np.abs(got - ref.vectors[ref.valid]).max() < 1e-5


@pytest.mark.slow
def test_spark_submit_py_files_whl_reaches_the_driver_but_not_executors(
    wheel: str, job_input: str, tiny_model: str, tmp_path
) -> None:
    """Why the README says to rename the wheel: if this starts passing a job, Spark learned to import wheels."""
    python = _python_without_editable_install(tmp_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = _submit(python, wheel, job_input, str(tmp_path / "out"), tiny_model, str(cwd))
    assert done.returncode != 0
    # The driver imported the wheel (it ran the job's code and started tasks); the executors' Python workers
    # could not import it to unpickle the UDF.
    assert re.search(
        # 4.x: "... from the Python worker: Traceback"; 3.5: "PythonException: Traceback"
        r"(?:from the Python worker:|PythonException:) Traceback.*?ModuleNotFoundError: No module named 'user_spark'",
        done.stderr,
        re.S,
    ), done.stderr[-4000:]
