"""diffusers pipelines of hf_vq, one folder each, laid out as diffusers lays out its own (imported on first use: they
need diffusers)."""

import importlib
from typing import Any

_PIPELINE_MODULES = {
    "MaskGITPipeline": ".maskgit.pipeline_maskgit",
    "MaskGITPipelineOutput": ".maskgit.pipeline_maskgit",
    "VQGANPipeline": ".vqgan.pipeline_vqgan",
    "VQGANPipelineOutput": ".vqgan.pipeline_vqgan",
}


def __getattr__(name: str) -> Any:
    if name in _PIPELINE_MODULES:
        return getattr(importlib.import_module(_PIPELINE_MODULES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_PIPELINE_MODULES)
