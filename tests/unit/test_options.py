"""EmbedOptions: one options object, validated once, that every entry point builds."""

from __future__ import annotations

import dataclasses
import inspect
import typing
import warnings

import numpy as np
import pytest

from user_spark import EmbedOptions, OptionError, RoleError, embed_udf
from user_spark.embedding.options import EmbedKwargs, coerce_options


def test_defaults_are_user_base_in_the_query_role_exact_on_cpu():
    opts = EmbedOptions()
    assert (opts.model, opts.role, opts.device, opts.precision, opts.storage) == (
        "deepvk/USER-base", "query", "auto", "auto", "float32"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"precision": "fp8"}, r"precision must be one of \['auto', 'fast', 'fp32', 'fp16', 'bf16', 'int8'\], got"),
        ({"device": "gpu"}, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
        ({"backend": "onnx"}, r"backend must be one of \['auto', 'fast', 'transformers'\], got 'onnx'"),
        ({"storage": "int8"}, r"storage must be one of \['float32', 'float16'\], got 'int8'"),
        ({"ship": "sometimes"}, r"ship must be one of \['auto', 'always', 'never'\], got 'sometimes'"),
        ({"udf_type": "numpy"}, r"udf_type must be one of \['auto', 'arrow', 'pandas'\], got 'numpy'"),
        ({"batch_tokens": 0}, "batch_tokens must be a positive integer, got 0"),
        ({"max_batch_rows": -3}, "max_batch_rows must be a positive integer, got -3"),
        ({"threads": True}, "threads must be a positive integer, got True"),
        ({"model": "  "}, "model must be a hub id, a folder path or a URI"),
        ({"role": ""}, "role must be a role name"),
    ],
)
def test_every_bad_value_is_refused_when_built(changes, message):
    with pytest.raises(OptionError, match=message):
        EmbedOptions(**changes)


def test_prompts_are_checked_and_device_normalised():
    with pytest.raises(RoleError, match="Prompts must map role names to prefix strings"):
        EmbedOptions(prompts={"query": 1})  # type: ignore[dict-item]
    assert EmbedOptions(device="CUDA:1").device == "cuda:1"


def test_replace_and_build_validate_and_name_unknown_options():
    base = EmbedOptions(model="/m", precision="fast")
    assert base.replace(role="passage") == EmbedOptions(model="/m", precision="fast", role="passage")
    assert EmbedOptions.build(base, batch_tokens=None) is base  # None leaves a field as it is
    assert EmbedOptions.build(None, storage="float16").storage == "float16"
    with pytest.raises(OptionError, match=r"Unknown embedding option\(s\) \['batchtokens'\]; valid: "):
        base.replace(batchtokens=4)
    with pytest.raises(OptionError, match="batch_tokens must be a positive integer"):
        base.replace(batch_tokens=-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.role = "passage"  # type: ignore[misc]


def test_jobs_take_options_or_for_one_release_a_dict_with_a_warning():
    opts = EmbedOptions(precision="fast")
    assert coerce_options(opts) is opts
    assert coerce_options(None) == EmbedOptions()
    assert coerce_options(opts, model="/other").model == "/other"
    with pytest.warns(DeprecationWarning, match="embed_options as a dict is deprecated"):
        assert coerce_options({"precision": "fp32"}) == EmbedOptions(precision="fp32")
    with warnings.catch_warnings(), pytest.raises(OptionError, match=r"Unknown embedding option\(s\) \['speed'\]"):
        warnings.simplefilter("ignore", DeprecationWarning)
        coerce_options({"speed": "max"})
    with warnings.catch_warnings(), pytest.raises(OptionError, match=r"'metrics' is not an embedding option: pass "):
        warnings.simplefilter("ignore", DeprecationWarning)
        coerce_options({"precision": "fp32", "metrics": object()})
    with pytest.raises(OptionError, match="embed_options must be an EmbedOptions, got int"):
        coerce_options(3)  # type: ignore[arg-type]


def test_keyword_forms_list_exactly_the_options_fields():
    fields = {f.name for f in dataclasses.fields(EmbedOptions)}
    assert set(typing.get_type_hints(EmbedKwargs)) == fields
    params = set(inspect.signature(embed_udf).parameters) - {"options", "metrics", "spark"}
    assert params == fields


def test_embed_udf_applies_keywords_on_top_of_options(monkeypatch):
    import user_spark.embedding.udf as udf_module

    seen = []
    monkeypatch.setattr(udf_module, "prepare_embedding", lambda options, spark: seen.append(options) or 1 / 0)
    monkeypatch.setattr(udf_module, "active_session", lambda spark: None)
    base = EmbedOptions(model="/m", precision="fast")
    for call in (lambda: embed_udf(options=base), lambda: embed_udf("/other", options=base, storage="float16")):
        with pytest.raises(ZeroDivisionError):
            call()
    assert seen == [base, EmbedOptions(model="/other", precision="fast", storage="float16")]
    assert EmbedOptions(model="/m", batch_tokens=np.int64(4096)).batch_tokens == 4096  # numpy integers are whole
