"""A diffusers pipeline around the VQGAN image tokenizer: images -> image tokens -> images.

The pipeline folder holds the model and the image processor as components and this file itself.

- Components: `model_index.json` names them by module path (`["hf_vq.models.vqgan.modeling_vqgan", "VQGANModel"]`),
  which diffusers resolves from the modules the caller has imported (`import hf_vq`). (diffusers can also load a
  component from a code file in its folder, but it copies only that file's direct relative imports, one level, into
  a namespace shared by all local components, and the quantizer is several files deep.)
- Pipeline class: diffusers resolves a `_class_name` that is not one of its own pipelines only through a pipeline
  file in the folder, so `save_pretrained` copies this file there and writes
  `_class_name: ["pipeline_vqgan", "VQGANPipeline"]`. The folder then loads offline with
  `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` (also through `VQGANPipeline.from_pretrained`),
  as any custom pipeline. This file imports only diffusers, torch and PIL, so the copy runs on its own.
"""

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput


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

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """diffusers' `save_pretrained`, plus this file, so that `DiffusionPipeline.from_pretrained` finds the class."""
        super().save_pretrained(save_directory, *args, **kwargs)
        save_directory = Path(save_directory)
        module_name = Path(__file__).stem
        shutil.copyfile(__file__, save_directory / f"{module_name}.py")
        index_path = save_directory / self.config_name
        index = json.loads(index_path.read_text(encoding="utf-8"))
        index["_class_name"] = [module_name, type(self).__name__]
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")


__all__ = ["VQGANPipeline", "VQGANPipelineOutput"]
