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

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from transformers import PreTrainedModel
from transformers.image_processing_utils import BaseImageProcessor

try:
    # In a saved pipeline folder, hf_vq's helper that writes the code into pipeline folders is this file's neighbour:
    # diffusers copies the files of `from .x import` lines along. Importing it also makes a missing component folder
    # a clear error (see remote_code.py).
    from .remote_code import from_pretrained_with_installed_components, save_pretrained_with_code
except ImportError:
    # Inside hf_vq it lives in hf_vq.pipelines; imported by name, so that diffusers' import check of this file's copy
    # does not ask users to install hf_vq.
    _remote_code = importlib.import_module("hf_vq.pipelines.remote_code")
    from_pretrained_with_installed_components = _remote_code.from_pretrained_with_installed_components
    save_pretrained_with_code = _remote_code.save_pretrained_with_code


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

    def __init__(self, vqgan: PreTrainedModel, image_processor: BaseImageProcessor):
        """
        Args:
            vqgan (`VQGANModel`): the tokenizer.
            image_processor (`VQGANImageProcessor`): turns images into its `pixel_values` and its output into images.

        The annotations are the library base classes: this file also runs as a pipeline folder's remote code, where the
        component classes come from the folder rather than from hf_vq.
        """
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
        r"""
        Args:
            images (PIL image, array, tensor or a list of them, *optional*):
                Images to reconstruct (encode, then decode).
            image_tokens (`torch.LongTensor` of shape `(batch, grid_height, grid_width)`, *optional*):
                Token grids to decode.
            output_type (`str`, *optional*, defaults to `"pil"`):
                "pil", "np" or "pt" (see `VQGANImageProcessor.postprocess`).
            return_dict (`bool`, *optional*, defaults to `True`):
                Return a `VQGANPipelineOutput` rather than a tuple `(images, image_tokens)`.
        """
        if (images is None) == (image_tokens is None):
            raise ValueError("pass exactly one of images=... (to reconstruct) or image_tokens=... (to decode)")
        if images is not None:
            _check_images(images)
        elif image_tokens.ndim == 0 or image_tokens.shape[0] == 0:
            raise ValueError(
                f"image_tokens is an empty batch (shape {tuple(image_tokens.shape)}): pass at least one token grid "
                "(batch, grid_height, grid_width)"
            )
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

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> "VQGANPipeline":
        """diffusers' `from_pretrained`; where this class is hf_vq's own (hf_vq installed), a folder it saved loads
        with hf_vq's component classes, without `trust_remote_code=True`."""
        load = super().from_pretrained
        return from_pretrained_with_installed_components(cls, load, pretrained_model_name_or_path, **kwargs)


def _check_images(images: Any) -> None:
    """A non-empty batch of images with pixels: a 0x0 image would otherwise come back as a uniform image."""
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise ValueError("images is an empty list: pass at least one image (PIL image, array or tensor)")
    for item in items:
        size = item.size if isinstance(item, PIL.Image.Image) else tuple(getattr(item, "shape", np.shape(item)))
        if 0 in size:
            raise ValueError(f"images holds an empty image (size {tuple(size)}): every image needs at least one pixel")


__all__ = ["VQGANPipeline", "VQGANPipelineOutput"]
