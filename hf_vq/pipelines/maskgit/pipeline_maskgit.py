"""A diffusers pipeline that generates images with a MaskGIT prior over an hf_vq tokenizer's tokens.

Components: `vqgan` (the tokenizer, a `VQGANModel`), `transformer` (the prior, a `MaskGITModel`) and `scheduler` (a
`MaskGITScheduler`). `save_pretrained` writes the code of all three and of this file into the folder (see
`hf_vq/pipelines/remote_code.py`), so that `DiffusionPipeline.from_pretrained(folder_or_repo, trust_remote_code=True)`
loads it where hf_vq is not installed. This file imports only torch, PIL-backed diffusers utilities and the standard
library, so its copy runs on its own.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import VaeImageProcessor
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from transformers import PreTrainedModel

try:
    # In a saved pipeline folder, hf_vq's helpers for pipelines are this file's neighbours: diffusers copies the files
    # of `from .x import` lines along. Importing remote_code also makes a missing component folder a clear error.
    from .pipeline_inputs import (
        check_call_number,
        check_callback_tensor_inputs,
        check_generator_devices,
        check_output_type,
        class_label_tensor,
        class_names,
        label_ids,
    )
    from .remote_code import from_pretrained_with_installed_components, save_pretrained_with_code
except ImportError:
    # Inside hf_vq they live in hf_vq.pipelines; imported by name, so that diffusers' import check of this file's copy
    # does not ask users to install hf_vq.
    _inputs = importlib.import_module("hf_vq.pipelines.pipeline_inputs")
    _remote_code = importlib.import_module("hf_vq.pipelines.remote_code")
    check_call_number = _inputs.check_call_number
    check_callback_tensor_inputs = _inputs.check_callback_tensor_inputs
    check_generator_devices = _inputs.check_generator_devices
    check_output_type, class_label_tensor = _inputs.check_output_type, _inputs.class_label_tensor
    class_names, label_ids = _inputs.class_names, _inputs.label_ids
    from_pretrained_with_installed_components = _remote_code.from_pretrained_with_installed_components
    save_pretrained_with_code = _remote_code.save_pretrained_with_code

# `callback_on_step_end(pipe, step_index, timestep, callback_kwargs) -> dict`, diffusers' step callback.
StepCallback = Callable[[Any, int, Any, dict], dict]


@dataclass
class MaskGITPipelineOutput(BaseOutput):
    """
    Output of [`MaskGITPipeline`].

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            The generated images: PIL images, a float array `(N, H, W, C)` in [0, 1], or a tensor `(N, C, H, W)` in
            [0, 1], per `output_type` (diffusers' conventions); with `output_type="latent"`, the token grids, not
            decoded (as diffusers' aMUSEd pipeline returns its tokens).
        image_tokens (`torch.LongTensor` of shape `(N, grid_height, grid_width)`):
            The generated token grids.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    image_tokens: torch.LongTensor


class MaskGITPipeline(DiffusionPipeline):
    r"""
    Class-conditional (or unconditional) image generation with a MaskGIT token prior and an hf_vq tokenizer.

    Starting from a fully masked token grid, each of `num_inference_steps` steps runs the prior (twice in one batch
    with classifier-free guidance: `uncond + guidance_scale * (cond - uncond)` on the logits) and lets the scheduler
    fix the most confident tokens; the tokenizer then decodes the grid into pixels.

    Example:

    ```python
    >>> import torch
    >>> from diffusers import DiffusionPipeline
    >>> pipe = DiffusionPipeline.from_pretrained("path/or/hub-id", trust_remote_code=True)  # doctest: +SKIP
    >>> out = pipe(class_labels=[0, 3, 7], num_images_per_prompt=2, guidance_scale=2.0,
    ...            generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
    >>> len(out.images), out.image_tokens.shape  # doctest: +SKIP
    (6, torch.Size([6, 8, 8]))
    ```
    """

    model_cpu_offload_seq = "transformer->vqgan"
    # What `callback_on_step_end` may ask for: the grid after this step (it may return a changed one) and this step's
    # (guided) logits.
    _callback_tensor_inputs = ["image_tokens", "logits"]

    @property
    def id2label(self) -> dict[int, str]:
        """Class id -> class name, as the prior's training data named its classes."""
        return class_names(self.transformer.config)

    def get_label_ids(self, label: str | list[str]) -> list[int]:
        """Class ids of class names (diffusers' DiT pipeline has the same method).

        Example: `pipe.get_label_ids(["Sneaker", "Bag"])` -> `[7, 8]`.
        """
        return label_ids(self.id2label, label)

    def __init__(self, vqgan: PreTrainedModel, transformer: PreTrainedModel, scheduler: SchedulerMixin):
        """
        Args:
            vqgan (`VQGANModel`): the tokenizer that decodes token grids into images.
            transformer (`MaskGITModel`): the prior over the tokenizer's token grids.
            scheduler (`MaskGITScheduler`): the iterative unmasking schedule.

        The annotations are the library base classes: this file also runs as a pipeline folder's remote code, where the
        component classes come from the folder rather than from hf_vq; `_check_components` checks that they fit.
        """
        super().__init__()
        self.register_modules(vqgan=vqgan, transformer=transformer, scheduler=scheduler)
        self._check_components()
        # The tokenizer's pixel space is [-1, 1] (VQGANImageProcessor's normalisation); diffusers' processor maps it to
        # the images and arrays diffusers users expect.
        self.image_processor = VaeImageProcessor(do_normalize=True)

    def _check_components(self) -> None:
        """Refuse a tokenizer or scheduler that does not fit the prior, at construction (hence at loading)."""
        if self.transformer is not None and self.vqgan is not None:
            self.transformer.check_tokenizer(self.vqgan)
        if self.transformer is not None and self.scheduler is not None:
            scheduler_mask_id = self.scheduler.config.mask_token_id
            if scheduler_mask_id != self.transformer.config.mask_token_id:
                raise ValueError(
                    f"the scheduler's mask_token_id={scheduler_mask_id} differs from the prior's "
                    f"mask_token_id={self.transformer.config.mask_token_id} (its codebook_size); build the scheduler "
                    "with MaskGITScheduler(mask_token_id=transformer.config.mask_token_id)"
                )

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        """Set `pipe._interrupt = True` in a step callback to stop after that step (diffusers' convention)."""
        return self._interrupt

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | list[int] | torch.Tensor | None = None,
        num_images_per_prompt: int = 1,
        num_inference_steps: int = 12,
        guidance_scale: float = 1.0,
        temperature: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        batch_size: int | None = None,
        callback_on_step_end: StepCallback | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> MaskGITPipelineOutput | tuple:
        r"""
        Args:
            class_labels (`int`, `list[int]` or `torch.Tensor`, *optional*):
                Class of each image to generate; `None` samples unconditionally (the null label).
            num_images_per_prompt (`int`, *optional*, defaults to 1):
                Images per class label (or per unconditional sample).
            num_inference_steps (`int`, *optional*, defaults to 12):
                Decoding steps; each fixes a share of the tokens following the cosine schedule. At most the number of
                grid positions (each step fixes at least one token).
            guidance_scale (`float`, *optional*, defaults to 1.0):
                Classifier-free guidance on the logits; 1 disables it (one forward per step instead of two).
            temperature (`float`, *optional*, defaults to 1.0):
                Scale of the Gumbel noise on the confidences that choose which tokens to fix (annealed to 0).
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Makes sampling deterministic: the same seed gives the same images. A list holds one generator per
                image (diffusers' convention): image `i` then depends only on generator `i`.
            output_type (`str`, *optional*, defaults to `"pil"`):
                "pil", "np" or "pt"; "latent" returns the token grids without decoding them (diffusers' convention for
                skipping the decoder).
            return_dict (`bool`, *optional*, defaults to `True`):
                Return a `MaskGITPipelineOutput` rather than a tuple `(images, image_tokens)`.
            batch_size (`int`, *optional*):
                Unconditional samples to draw (times `num_images_per_prompt`) when `class_labels` is `None`.
            callback_on_step_end (`Callable`, `PipelineCallback` or `MultiPipelineCallbacks`, *optional*):
                Called after every step as `callback_on_step_end(pipe, step_index, timestep, callback_kwargs)`, where
                `callback_kwargs` holds the tensors named in `callback_on_step_end_tensor_inputs`; it returns a dict,
                and an `image_tokens` entry in it replaces the grid (tokens of shape `(N, grid_height, grid_width)`,
                the mask id where still undecided). Set `pipe._interrupt = True` in it to stop early.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*, defaults to `["image_tokens"]`):
                Tensors passed to the callback, from `pipe._callback_tensor_inputs` (`image_tokens`, `logits`).
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["image_tokens"]
        labels = self._prepare_class_labels(class_labels, num_images_per_prompt, batch_size)
        self._check_call_arguments(class_labels, num_inference_steps, guidance_scale, temperature, output_type)
        check_callback_tensor_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)
        config = self.transformer.config
        device = self._execution_device
        check_generator_devices(generator, labels.shape[0], device)
        labels = labels.to(device)
        self._guidance_scale, self._interrupt = guidance_scale, False
        tokens = self._sample_tokens(
            labels,
            num_inference_steps,
            temperature,
            generator,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
        )
        image_tokens = tokens.reshape(-1, config.grid_height, config.grid_width)
        images = image_tokens if output_type == "latent" else self._decode(image_tokens, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, image_tokens
        return MaskGITPipelineOutput(images=images, image_tokens=image_tokens)

    def _decode(self, image_tokens: torch.Tensor, output_type: str) -> Any:
        """Token grids -> images of `output_type` ("pil", "np" or "pt") through the tokenizer."""
        pixels = self.vqgan.decode(image_tokens=image_tokens, return_dict=True).reconstruction
        return self.image_processor.postprocess(pixels.float(), output_type=output_type)

    def _sample_tokens(
        self,
        labels: torch.Tensor,
        num_inference_steps: int,
        temperature: float,
        generator: torch.Generator | list[torch.Generator] | None,
        callback_on_step_end: StepCallback | PipelineCallback | MultiPipelineCallbacks | None,
        callback_on_step_end_tensor_inputs: list[str],
    ) -> torch.Tensor:
        """The decoding loop: from a fully masked grid to one token per position, `(N, num_positions)`."""
        config = self.transformer.config
        tokens = torch.full(
            (labels.shape[0], config.num_positions), config.mask_token_id, dtype=torch.long, device=labels.device
        )
        self.scheduler.set_timesteps(num_inference_steps, device=labels.device)
        self._num_timesteps = len(self.scheduler.timesteps)
        for step_index, timestep in enumerate(self.progress_bar(self.scheduler.timesteps)):
            # Read from the pipeline, so that a step callback can change guidance for the steps after it (diffusers'
            # guidance schedules, e.g. a `PipelineCallback` that sets `pipe._guidance_scale`).
            logits = self._guided_logits(tokens, labels, self.guidance_scale)
            step = self.scheduler.step(logits, timestep, tokens, temperature=temperature, generator=generator)
            tokens = step.prev_sample
            if callback_on_step_end is not None:
                tensors = {"image_tokens": tokens.reshape(-1, config.grid_height, config.grid_width), "logits": logits}
                callback_kwargs = {name: tensors[name] for name in callback_on_step_end_tensor_inputs}
                outputs = callback_on_step_end(self, step_index, timestep, callback_kwargs)
                tokens = outputs.pop("image_tokens", tensors["image_tokens"]).reshape(tokens.shape)
            if self.interrupt:
                # Stopped early: every position still masked takes this step's guess, so the grid can be decoded.
                return torch.where(tokens == config.mask_token_id, step.pred_original_sample, tokens)
        return tokens

    def _guided_logits(self, tokens: torch.Tensor, labels: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        """The prior's logits; with guidance, conditional and unconditional predictions come from one batched
        forward."""
        if guidance_scale == 1.0:
            return self.transformer(tokens, class_labels=labels).logits
        null = torch.full_like(labels, self.transformer.config.null_class_id)
        logits = self.transformer(torch.cat([tokens, tokens]), class_labels=torch.cat([labels, null])).logits
        conditional, unconditional = logits.float().chunk(2)
        return unconditional + guidance_scale * (conditional - unconditional)

    def _prepare_class_labels(
        self, class_labels: Any, num_images_per_prompt: int, batch_size: int | None
    ) -> torch.Tensor:
        """Class ids, one per image to generate (the null label for unconditional samples)."""
        config = self.transformer.config
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be an integer >= 1, got {num_images_per_prompt!r}")
        if class_labels is None:
            if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
                raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
            count = (batch_size or 1) * num_images_per_prompt
            return torch.full((count,), config.null_class_id, dtype=torch.long)
        if batch_size is not None:
            raise ValueError(
                "batch_size applies to unconditional sampling (class_labels=None); with class labels, pass one per "
                "image"
            )
        labels = class_label_tensor(class_labels)
        if config.num_classes == 0:
            raise ValueError(
                "this prior is unconditional (num_classes=0): call the pipeline with class_labels=None (and "
                "batch_size=N)"
            )
        if int(labels.min()) < 0 or int(labels.max()) >= config.num_classes:
            raise ValueError(
                f"class labels must lie in [0, {config.num_classes - 1}] (the prior has "
                f"num_classes={config.num_classes}), got {labels.tolist()}"
            )
        return labels.long().repeat_interleave(num_images_per_prompt)

    def _check_call_arguments(
        self, class_labels: Any, num_inference_steps: Any, guidance_scale: float, temperature: float, output_type: str
    ) -> None:
        if (
            isinstance(num_inference_steps, bool)
            or not isinstance(num_inference_steps, int)
            or num_inference_steps < 1
        ):
            raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
        num_positions = self.transformer.config.num_positions
        if num_inference_steps > num_positions:
            raise ValueError(
                f"num_inference_steps={num_inference_steps} exceeds its cap of {num_positions}, the positions of the "
                "prior's token grid: every step fixes at least one token, so more steps cannot change the result"
            )
        check_call_number("guidance_scale", guidance_scale)
        check_call_number("temperature", temperature)
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0 (1 disables guidance), got {guidance_scale}")
        if guidance_scale != 1.0 and self.transformer.config.num_classes == 0:
            raise ValueError(
                f"guidance_scale={guidance_scale} needs a class-conditional prior, but this one is unconditional "
                "(num_classes=0); use guidance_scale=1.0"
            )
        if guidance_scale != 1.0 and class_labels is None:
            raise ValueError(
                f"guidance_scale={guidance_scale} steers samples towards class labels; pass class_labels=... or use "
                "guidance_scale=1.0 for unconditional samples"
            )
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        check_output_type(output_type)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """diffusers' `save_pretrained`, plus the code of this pipeline and of every component, so that the folder
        loads with `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` where hf_vq is not installed."""
        save_pretrained_with_code(self, save_directory, super().save_pretrained, __file__, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> "MaskGITPipeline":
        """diffusers' `from_pretrained`; where this class is hf_vq's own (hf_vq installed), a folder it saved loads
        with hf_vq's component classes, without `trust_remote_code=True`."""
        load = super().from_pretrained
        return from_pretrained_with_installed_components(cls, load, pretrained_model_name_or_path, **kwargs)


__all__ = ["MaskGITPipeline", "MaskGITPipelineOutput"]
