"""diffusers schedulers of hf_vq (imported on first use: they need diffusers)."""

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("MaskGITScheduler", "MaskGITSchedulerOutput"):
        from . import scheduling_maskgit

        return getattr(scheduling_maskgit, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MaskGITScheduler", "MaskGITSchedulerOutput"]
