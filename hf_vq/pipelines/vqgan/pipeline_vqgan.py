"""A diffusers pipeline around the VQGAN image tokenizer: images -> image tokens -> images.

Components: `vqgan` (the model) and `image_processor`. `save_pretrained` writes the code of both and of this file into
the folder (see `hf_vq/pipelines/remote_code.py`), so that `DiffusionPipeline.from_pretrained(folder_or_repo,
trust_remote_code=True)` loads it where hf_vq is not installed. This file imports only diffusers, torch, PIL and the
standard library, so its copy runs on its own.
"""

import importlib
import os
from dataclasses import dataclass
from typing import Any

import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

try:
    # In a saved pipeline folder, hf_vq's helper that writes the code into pipeline folders is this file's neighbour:
    # diffusers copies the files of `from .x import` lines along. Importing it also makes a missing component folder
    # a clear error (see remote_code.py).
    from .remote_code import save_pretrained_with_code
except ImportError:
    # Inside hf_vq it lives in hf_vq.pipelines; imported by name, so that diffusers' import check of this file's copy
    # does not ask users to install hf_vq.
    save_pretrained_with_code = importlib.import_module("hf_vq.pipelines.remote_code").save_pretrained_with_code


@dataclass
class VQGANPipelineOutput(BaseOutput):
    """Reconstructed `images` (PIL images, a uint8 array or a tensor, per `output_type`) and their `image_tokens`."""

    images: list[PIL.Image.Image] | Any
    image_tokens: torch.LongTensor | None


class VQGANPipeline(DiffusionPipeline):
    r"""
    Tokenizes images with a `VQGANModel` and decodes the tokens back into images.

    Pass `images` to reconstruct them (encode, then decode), or `image_tokens` `(batch, h, w)` to decode tokens that a
    prior generated.

    Example:

    ```python
    >>> from diffusers import DiffusionPipeline
    >>> pipe = DiffusionPipeline.from_pretrained("path/to/pipeline", trust_remote_code=True)  # doctest: +SKIP
    >>> result = pipe(images=[image])  # doctest: +SKIP
    >>> result.images[0], result.image_tokens.shape  # doctest: +SKIP
    ```
    """

    model_cpu_offload_seq = "vqgan"

    def __init__(self, vqgan: Any, image_processor: Any):
        super().__init__()
        self.register_modules(vqgan=vqgan, image_processor=image_processor)

    @torch.no_grad()
    def __call__(
        self,
        images: Any = None,
        image_tokens: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> VQGANPipelineOutput | tuple:
        if (images is None) == (image_tokens is None):
            raise ValueError("pass exactly one of images=... (to reconstruct) or image_tokens=... (to decode)")
        if images is not None:
            pixel_values = self.image_processor(images, return_tensors="pt").pixel_values
            pixel_values = pixel_values.to(device=self.vqgan.device, dtype=self.vqgan.dtype)
            image_tokens = self.vqgan.encode(pixel_values).image_tokens
        reconstruction = self.vqgan.decode(image_tokens=image_tokens.to(self.vqgan.device)).reconstruction
        decoded = self.image_processor.postprocess(reconstruction, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return decoded, image_tokens
        return VQGANPipelineOutput(images=decoded, image_tokens=image_tokens)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """diffusers' `save_pretrained`, plus the code of this pipeline and of every component, so that the folder
        loads with `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` where hf_vq is not installed."""
        save_pretrained_with_code(self, save_directory, super().save_pretrained, __file__, **kwargs)


__all__ = ["VQGANPipeline", "VQGANPipelineOutput"]
