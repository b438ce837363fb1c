"""Loading a model folder's transformer onto a device, in the fastest exact forward path available.

Weights load from safetensors (pickles only on opt-in), ``trust_remote_code`` is never on, and weights that leave
parameters of the architecture unset are refused. USER-base's configuration (DeBERTa v1, relative attention off)
runs on :class:`~user_spark.runtime.fast_deberta.FastDebertaEncoder`; other models on transformers' own class.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from user_spark.errors import ModelSourceError, OptionError
from user_spark.model.spec import ModelSpec
from user_spark.runtime.gpu import compute_device
from user_spark.runtime.settings import Backend

__all__ = ["TORCH_DTYPES", "LoadedModel", "load_model"]

# int8 loads fp32 weights, then quantises every Linear (dynamic quantisation: int8 weights, activations
# quantised per batch, fp32 accumulation; 2.9x the fp32 GEMM rate on an AVX512-VNNI core).
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int8": torch.float32}


@dataclass
class LoadedModel:
    """A transformer ready to run.

    Attributes:
        module: called as ``module(input_ids=..., attention_mask=...)``, returns an object with
            ``last_hidden_state``; the fast path also has ``forward_packed``.
        backend: ``"fast-deberta"``, ``"transformers"``, with ``"+int8"`` when quantised.
        hidden, intermediate, heads: the architecture's sizes (for the memory estimate of a batch).
    """

    module: Any
    backend: str
    hidden: int
    intermediate: int
    heads: int

    @property
    def packed(self) -> bool:
        """Runs on packed tokens (no compute on padding outside attention)."""
        return self.backend.startswith("fast-deberta")


def _quantize_int8(module: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 with per-output-channel weight scales.

    Per-tensor scales (torch's default) cost all-MiniLM-L6-v2 a mean cosine of 0.84 to its fp32 embeddings on
    Russian text; per-channel scales give 0.95. Quality figures per mode: docs/BENCHMARKS.md.
    """
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's notice that eager quantisation moves to torchao
        quantized: torch.nn.Module = quantize_dynamic(  # type: ignore[no-untyped-call]
            module, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
        )
        return quantized


def load_model(
    transformer_dir: str, spec: ModelSpec, device: str, dtype: str, backend: Backend = "auto"
) -> LoadedModel:
    """Load the transformer for ``device`` and ``dtype`` and wrap it in the fastest exact path available.

    Raises:
        ModelSourceError: transformers cannot load the folder without running its code, or the weights do not fit
            the config. OptionError: ``backend="fast"`` for a model the fast path does not run.
    """
    from transformers import AutoModel

    from user_spark.runtime.fast_deberta import FastDebertaEncoder, supports

    # trust_remote_code=False: a config's ``auto_map`` (custom modelling code shipped in the folder) is never
    # imported; transformers' own class for ``model_type`` is used, or loading fails.
    try:
        model, info = AutoModel.from_pretrained(
            transformer_dir,
            dtype=TORCH_DTYPES[dtype],
            use_safetensors=not spec.uses_pickle,
            trust_remote_code=False,
            output_loading_info=True,
        )
    except ValueError as exc:  # e.g. an unknown model_type, or one whose code ships in the folder (auto_map)
        raise ModelSourceError(
            f"transformers cannot load {transformer_dir} as {spec.model_type!r}: "
            f"{(str(exc).splitlines() or [''])[0]} (if the folder ships its own modelling code, user_spark does not "
            "run it: trust_remote_code is always off)"
        ) from None
    _check_loading_info(transformer_dir, spec, info)
    model.eval()
    config = model.config
    name, module = "transformers", model
    if backend in ("auto", "fast") and supports(model):
        module, name = FastDebertaEncoder(model).eval(), "fast-deberta"
    elif backend == "fast":
        raise OptionError(
            f"backend='fast' runs DeBERTa v1 without relative attention (USER-base); {transformer_dir} is "
            f"{spec.model_type!r}. Use backend='auto' to fall back to transformers."
        )
    if dtype == "int8":
        module, name = _quantize_int8(module), name + "+int8"
    hidden = int(getattr(config, "hidden_size", spec.hidden_size))
    return LoadedModel(
        module=module.to(compute_device(device)),
        backend=name,
        hidden=hidden,
        intermediate=int(getattr(config, "intermediate_size", 4 * hidden)),
        heads=int(getattr(config, "num_attention_heads", 1)),
    )


def _check_loading_info(folder: str, spec: ModelSpec, info: dict[str, Any]) -> None:
    """Refuse weights that leave parameters of the architecture unset or of the wrong shape.

    transformers fills missing parameters with random values and only logs a warning; embeddings from such a
    model look fine and mean nothing, so a weight file from another variant of the architecture must fail here.
    """
    problems = []
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        problems.append(f"{len(missing)} parameters missing from the weights (e.g. {missing[:3]})")
    if info.get("mismatched_keys"):
        mismatched = sorted(str(k) for k in info["mismatched_keys"])
        problems.append(f"{len(mismatched)} parameters with another shape (e.g. {mismatched[:3]})")
    if problems:
        files = ", ".join(os.path.join(folder, w) for w in spec.weights) or folder
        raise ModelSourceError(
            f"The weights in {files} do not fit {os.path.join(folder, 'config.json')}: {'; '.join(problems)}. "
            "The config and the weights come from different models; re-download the whole folder."
        )
