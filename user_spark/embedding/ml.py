"""``UserEmbedder``: the embedding UDF as a Spark ML Transformer, for Pipelines that save and load.

>>> from pyspark.ml import Pipeline
>>> from pyspark.ml.clustering import KMeans
>>> pipeline = Pipeline(stages=[
...     UserEmbedder(inputCol="text", outputCol="features", role="query", outputType="vector"),
...     KMeans(k=20, seed=7, distanceMeasure="cosine"),
... ])  # doctest: +SKIP
>>> pipeline.fit(df).save("/models/text-clusters")  # doctest: +SKIP

The stage stores its options (model location, roles, batching, precision) as Params; the model folder itself
is not copied into the saved pipeline, so the path or hub id must still resolve where the pipeline is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasInputCols, HasOutputCol, HasOutputCols
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable

from user_spark.embedding.columns import column, with_named_column
from user_spark.embedding.options import EmbedOptions
from user_spark.errors import OptionError
from user_spark.model.roles import DEFAULT_ROLE
from user_spark.model.source import DEFAULT_MODEL
from user_spark.runtime.settings import check_precision

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = ["UserEmbedder"]


class UserEmbedder(
    Transformer,
    HasInputCol,
    HasInputCols,
    HasOutputCol,
    HasOutputCols,
    DefaultParamsReadable,  # type: ignore[type-arg]
    DefaultParamsWritable,
):
    """Adds sentence embeddings of one or more text columns (see :func:`user_spark.with_embeddings`).

    Params: ``inputCol`` or ``inputCols``; ``outputCol`` / ``outputCols`` (default ``<input>_embedding``);
    ``role`` (for every column) or ``roles`` (one per input column); ``model``; ``batchTokens``; ``device``;
    ``precision``; ``outputType``: ``"array"`` (array<float>) or ``"vector"`` (an ml Vector, for Spark ML stages).

    ``checkpointOutput`` (default on): the output is checkpointed lazily (``localCheckpoint(eager=False)``): the
    first action embeds each row once and later passes read the stored vectors, so an estimator after it
    (KMeans reads its input several times) does not embed the data again. The vectors stay in executor storage
    (memory, spilling to disk) until the DataFrame is garbage collected; set it off to score a large table in one
    pass (``model.transform(big).write...``). Streaming frames are never checkpointed. A ``vector`` column
    carries Spark ML's attribute metadata (its size), so stages after it need no job to learn it.
    """

    _input_kwargs: dict[str, Any]  # set by @keyword_only

    model: Param[str] = Param(Params._dummy(), "model", "hub id, local folder or URI of the model",
                              typeConverter=TypeConverters.toString)
    role: Param[str] = Param(Params._dummy(), "role", "role of every input column (query or passage)",
                             typeConverter=TypeConverters.toString)
    roles: Param[list[str]] = Param(Params._dummy(), "roles", "one role per input column",
                                    typeConverter=TypeConverters.toListString)
    batchTokens: Param[int] = Param(Params._dummy(), "batchTokens", "tokens per model batch, padding included "
                                    "(0: the device's default)", typeConverter=TypeConverters.toInt)
    device: Param[str] = Param(Params._dummy(), "device", "auto, cpu, cuda or cuda:N",
                               typeConverter=TypeConverters.toString)
    precision: Param[str] = Param(Params._dummy(), "precision", "auto, fast, fp32, fp16, bf16 or int8",
                                  typeConverter=TypeConverters.toString)
    outputType: Param[str] = Param(Params._dummy(), "outputType", "array (array<float>) or vector (ml Vector)",
                                   typeConverter=TypeConverters.toString)
    checkpointOutput: Param[bool] = Param(
        Params._dummy(), "checkpointOutput",
        "checkpoint the output lazily so that later passes (an estimator's) do not embed again (streams: never)",
        typeConverter=TypeConverters.toBoolean,
    )

    @keyword_only
    def __init__(
        self,
        *,
        inputCol: str | None = None,
        inputCols: list[str] | None = None,
        outputCol: str | None = None,
        outputCols: list[str] | None = None,
        model: str = DEFAULT_MODEL,
        role: str = DEFAULT_ROLE,
        roles: list[str] | None = None,
        batchTokens: int = 0,
        device: str = "auto",
        precision: str = "auto",
        outputType: str = "array",
        checkpointOutput: bool = True,
    ) -> None:
        super().__init__()
        self._setDefault(model=DEFAULT_MODEL, role=DEFAULT_ROLE, batchTokens=0, device="auto", precision="auto",
                         outputType="array", checkpointOutput=True)
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, **kwargs: Any) -> UserEmbedder:
        """Set any of the constructor's Params."""
        return self._set(**self._input_kwargs)

    def _columns(self) -> tuple[list[str], list[str], list[str]]:
        if self.isSet(self.inputCols) == self.isSet(self.inputCol):
            raise OptionError("UserEmbedder needs exactly one of inputCol or inputCols")
        inputs = self.getInputCols() if self.isSet(self.inputCols) else [self.getInputCol()]
        if self.isSet(self.outputCols):
            outputs = self.getOutputCols()
        elif self.isSet(self.outputCol) and len(inputs) == 1:
            outputs = [self.getOutputCol()]
        else:
            outputs = [f"{c}_embedding" for c in inputs]
        roles = (
            self.getOrDefault(self.roles) if self.isSet(self.roles) else [self.getOrDefault(self.role)] * len(inputs)
        )
        if not (len(inputs) == len(outputs) == len(roles)):
            raise OptionError(
                f"UserEmbedder: {len(inputs)} input columns, {len(outputs)} output columns and {len(roles)} roles; "
                "give one output column and one role per input column"
            )
        return inputs, outputs, roles

    def _transform(self, dataset: DataFrame) -> DataFrame:
        from pyspark.ml.functions import array_to_vector

        from user_spark.embedding.frame import with_embeddings

        output_type = self.getOrDefault(self.outputType)
        if output_type not in ("array", "vector"):
            raise OptionError(f"outputType must be 'array' or 'vector', got {output_type!r}")
        inputs, outputs, roles = self._columns()
        options = EmbedOptions(
            model=self.getOrDefault(self.model),
            batch_tokens=self.getOrDefault(self.batchTokens) or None,
            device=self.getOrDefault(self.device),
            precision=check_precision(self.getOrDefault(self.precision)),
        )
        result = with_embeddings(
            dataset,
            dict(zip(inputs, roles, strict=True)),
            options=options,
            output_columns=dict(zip(inputs, outputs, strict=True)),
        )
        if output_type == "vector":
            for name in outputs:
                meta = dict(result.schema[name].metadata)
                # Spark ML's attribute metadata: stages read the vector size from it instead of running a job
                meta["ml_attr"] = {"num_attrs": meta["user_spark"]["dimension"]}
                result = with_named_column(result, name, array_to_vector(column(name)), meta)
        if not self.getOrDefault(self.checkpointOutput) or result.isStreaming:
            return result
        # Each action on an un-checkpointed frame would run the model again (measured: KMeans' fit embedded every
        # row four times: caching its input, k-means|| and the summary's cluster sizes).
        return result.localCheckpoint(eager=False)
