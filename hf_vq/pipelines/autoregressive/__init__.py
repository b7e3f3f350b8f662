"""The autoregressive generation pipeline: transformers' `LlamaForCausalLM` over a tokenizer's codes (diffusers is
imported on first use)."""

from typing import Any

NAMES = (
    "AutoregressivePipeline",
    "AutoregressivePipelineOutput",
    "GuidedCodeSampler",
    "autoregressive_prior_fields",
    "check_tokenizer",
)


def __getattr__(name: str) -> Any:
    if name in NAMES:
        from . import pipeline_autoregressive

        return getattr(pipeline_autoregressive, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(NAMES)
