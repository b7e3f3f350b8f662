"""The MaskGIT generation pipeline (diffusers is imported on first use)."""

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("MaskGITPipeline", "MaskGITPipelineOutput"):
        from . import pipeline_maskgit

        return getattr(pipeline_maskgit, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MaskGITPipeline", "MaskGITPipelineOutput"]
