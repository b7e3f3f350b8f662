"""diffusers pipelines of hf_vq, laid out as diffusers lays out its own (imported on first use: they need diffusers)."""

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("MaskGITPipeline", "MaskGITPipelineOutput"):
        from .maskgit import pipeline_maskgit

        return getattr(pipeline_maskgit, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MaskGITPipeline", "MaskGITPipelineOutput"]
