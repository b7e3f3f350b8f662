"""The VQGAN tokenizer pipeline: images -> image tokens -> images (diffusers is imported on first use)."""

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("VQGANPipeline", "VQGANPipelineOutput"):
        from . import pipeline_vqgan

        return getattr(pipeline_vqgan, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["VQGANPipeline", "VQGANPipelineOutput"]
