"""A diffusers pipeline that generates images with an autoregressive token prior: transformers' own `LlamaForCausalLM`
over an hf_vq tokenizer's codes, sampled with `generate()`.

The prior needs no modeling code of ours. Its vocabulary is the codebook, then one token per class, then the null
class of classifier-free guidance (`codebook_size + num_classes + 1` ids); a sequence is `[class token]` followed by
the token grid in raster order (LlamaGen's layout). The prior's config records the tokenizer it was trained on
(`codebook_size`, `grid_size`, `num_classes`, `tokenizer_name_or_path`, `tokenizer_revision`) as extra fields, so the
`transformer` folder loads with `AutoModelForCausalLM.from_pretrained` and no remote code.

Sampling runs through `transformer.generate()` (KV cache, and any generation option transformers offers). Guidance
puts the conditional and the unconditional rows in one batch (as LlamaGen does): `GuidedCodeSampler`, a logits
processor, combines their logits, keeps only code ids (a class or null token can never be sampled), applies
transformers' temperature, top-k and top-p warpers, draws the next code with the caller's `torch.Generator` and hands
the draw to `generate`'s greedy step for both rows of the pair. docs/benchmarks.md compares this with transformers'
built-in `guidance_scale` (a second, sequential forward per step).

This file imports only torch, transformers, diffusers and the standard library, so its copy in a saved folder runs
where hf_vq is not installed.
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
from diffusers.utils import BaseOutput
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

try:
    # In a saved pipeline folder, hf_vq's helpers for pipelines are this file's neighbours (see pipeline_maskgit.py).
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

# Fields that an autoregressive prior's config carries besides Llama's own (see `autoregressive_prior_fields`).
PRIOR_FIELDS = ("codebook_size", "num_classes", "grid_size", "tokenizer_name_or_path", "tokenizer_revision")


@dataclass
class AutoregressivePipelineOutput(BaseOutput):
    """
    Output of [`AutoregressivePipeline`].

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            The generated images, per `output_type` (diffusers' conventions, values in [0, 1]); with
            `output_type="latent"`, the token grids, not decoded.
        image_tokens (`torch.LongTensor` of shape `(N, grid_height, grid_width)`):
            The generated token grids.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    image_tokens: torch.LongTensor


def tokenizer_grid(tokenizer_config: Any) -> tuple[int, int]:
    """The token grid `(height, width)` a tokenizer makes of the images it was built for (`VQGANConfig`'s one
    source of truth for it)."""
    height, width = tokenizer_config.token_grid_size
    return height, width


def autoregressive_prior_fields(
    tokenizer_config: Any,
    num_classes: int,
    tokenizer_name_or_path: str | None = None,
    tokenizer_revision: str | None = None,
) -> dict[str, Any]:
    """The fields of a `LlamaConfig` that make it a prior over `tokenizer_config`'s codes with `num_classes` classes:
    vocabulary, sequence length, no text special tokens, and the tokenizer's record.

    Example:

    ```python
    >>> from transformers import LlamaConfig
    >>> from hf_vq import VQGANConfig
    >>> tokenizer = VQGANConfig(image_size=16, block_out_channels=[16, 32], norm_num_groups=8, codebook_size=32)
    >>> fields = autoregressive_prior_fields(tokenizer, num_classes=10)
    >>> config = LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
    ...                      **fields)
    >>> config.vocab_size, config.max_position_embeddings, config.grid_size
    (43, 65, [8, 8])

    ```
    """
    if getattr(tokenizer_config, "tokens_per_position", 1) != 1:
        raise ValueError(
            f"the autoregressive prior does not support {tokenizer_config.quantizer_type} tokenizers (several ids per "
            "grid position) yet; use a tokenizer with quantizer_type='vector' or 'fsq'"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be an integer >= 0 (0: unconditional), got {num_classes!r}")
    height, width = tokenizer_grid(tokenizer_config)
    codebook_size = tokenizer_config.codebook_size
    return {
        "vocab_size": codebook_size + num_classes + 1,
        "max_position_embeddings": 1 + height * width,
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": codebook_size + num_classes,
        "codebook_size": codebook_size,
        "num_classes": num_classes,
        "grid_size": [height, width],
        "tokenizer_name_or_path": tokenizer_name_or_path,
        "tokenizer_revision": tokenizer_revision,
        "id2label": {index: f"LABEL_{index}" for index in range(num_classes)},
    }


def check_prior_config(config: Any) -> None:
    """Refuse a `transformer` whose config does not describe an autoregressive prior of this layout."""
    missing = [name for name in PRIOR_FIELDS[:3] if getattr(config, name, None) is None]
    if missing:
        raise ValueError(
            f"the transformer's config lacks {missing}: it is not an hf_vq autoregressive prior (build its config "
            "with autoregressive_prior_fields(tokenizer_config, num_classes))"
        )
    expected = config.codebook_size + config.num_classes + 1
    if config.vocab_size != expected:
        raise ValueError(
            f"the transformer's vocab_size={config.vocab_size} should be codebook_size + num_classes + 1 = {expected}"
        )


def check_tokenizer(config: Any, tokenizer: Any) -> None:
    """Raise a `ValueError` naming both values when `tokenizer` does not make the tokens the prior was trained on."""
    tokenizer_config = getattr(tokenizer, "config", tokenizer)
    expected = f"this prior (tokenizer_name_or_path={config.tokenizer_name_or_path!r})"
    if getattr(tokenizer_config, "tokens_per_position", 1) != 1:
        raise ValueError(
            f"{tokenizer_config.quantizer_type} tokenizers (several ids per position) are not supported yet"
        )
    if tokenizer_config.codebook_size != config.codebook_size:
        raise ValueError(
            f"the tokenizer has codebook_size={tokenizer_config.codebook_size} but {expected} was trained on "
            f"codebook_size={config.codebook_size} tokens; use the tokenizer the prior was trained on"
        )
    grid = list(tokenizer_grid(tokenizer_config))
    if grid != list(config.grid_size):
        raise ValueError(
            f"the tokenizer makes a {grid[0]}x{grid[1]} token grid but {expected} was trained on "
            f"{config.grid_size[0]}x{config.grid_size[1]} grids; use the tokenizer the prior was trained on"
        )


class GuidedCodeSampler(LogitsProcessor):
    r"""
    A `generate()` logits processor that draws the next code of every image itself.

    `generate` runs `2 * N` rows when guidance is on (the conditional rows, then their unconditional twins) and `N`
    otherwise. Each step keeps the code ids of the logits (class and null tokens are never drawn), combines each pair
    as `uncond + guidance_scale * (cond - uncond)`, applies transformers' warpers (temperature, top-k, top-p), draws
    one code per image with `generator` (one generator, or one per image as diffusers does), and returns scores that
    are `0` at the drawn code and `-inf` elsewhere for both rows of a pair, so that `generate`'s greedy step appends
    the same code to both. Temperature 0 takes the most likely code.

    Example:

    ```python
    >>> import torch
    >>> sampler = GuidedCodeSampler(codebook_size=4, guidance_scale=1.0, temperature=0.0)
    >>> scores = sampler(torch.zeros(2, 1, dtype=torch.long),
    ...                  torch.tensor([[0., 3., 1., 2., 9.], [5., 1., 0., 0., 9.]]))
    >>> scores.argmax(dim=-1).tolist()  # code ids only: the class token (id 4) is never chosen
    [1, 0]

    ```
    """

    def __init__(
        self,
        codebook_size: int,
        guidance_scale: float = 1.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        on_step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ):
        self.codebook_size = codebook_size
        self.guidance_scale = guidance_scale
        # Whether generate runs unconditional twin rows: fixed at the start (the batch cannot grow mid-generation).
        self.guided = guidance_scale != 1.0
        self.temperature = temperature
        self.generator = generator
        # on_step(codes so far (N, t), guided logits (N, K), drawn codes (N,)) -> the codes to append (a step callback)
        self.on_step = on_step
        self.warpers = LogitsProcessorList()
        if temperature > 0 and temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(temperature))
        if top_k is not None:
            self.warpers.append(TopKLogitsWarper(top_k=min(top_k, codebook_size)))
        if top_p is not None and top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p=top_p))

    def guided_logits(self, scores: torch.Tensor) -> torch.Tensor:
        """Code logits of each image: the conditional/unconditional combination when guidance is on."""
        codes = scores[:, : self.codebook_size].float()
        if not self.guided:
            return codes
        conditional, unconditional = codes.chunk(2)
        return unconditional + self.guidance_scale * (conditional - unconditional)

    def draw(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """One code per image `(N,)`, from the warped logits."""
        if self.temperature == 0:
            return logits.argmax(dim=-1)
        probabilities = self.warpers(input_ids[: logits.shape[0]], logits).softmax(dim=-1)
        if isinstance(self.generator, list):
            return torch.cat(
                [
                    torch.multinomial(row[None], 1, generator=generator)[0]
                    for row, generator in zip(probabilities, self.generator)
                ]
            )
        return torch.multinomial(probabilities, 1, generator=self.generator)[:, 0]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logits = self.guided_logits(scores)
        codes = self.draw(input_ids, logits)
        if self.on_step is not None:
            codes = self.on_step(input_ids[: codes.shape[0], 1:], logits, codes)
        rows = codes.repeat(scores.shape[0] // codes.shape[0])
        forced = torch.full_like(scores, float("-inf"))
        return forced.scatter_(1, rows[:, None], 0.0)


class AutoregressivePipeline(DiffusionPipeline):
    r"""
    Class-conditional (or unconditional) image generation with an autoregressive token prior (`LlamaForCausalLM`)
    and an hf_vq tokenizer.

    Components: `vqgan` (the tokenizer, a `VQGANModel`) and `transformer` (the prior; its config is built with
    `autoregressive_prior_fields`). Each image is `[class token]` followed by `grid_height * grid_width` codes drawn by
    `transformer.generate()` in raster order; the tokenizer decodes the grid into pixels.

    Example:

    ```python
    >>> import torch
    >>> from diffusers import DiffusionPipeline
    >>> pipe = DiffusionPipeline.from_pretrained("path/to/folder", trust_remote_code=True)  # doctest: +SKIP
    >>> out = pipe(class_labels=pipe.get_label_ids(["Sneaker", "Bag"]), num_images_per_prompt=2, guidance_scale=2.0,
    ...            top_k=100, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
    >>> len(out.images), out.image_tokens.shape  # doctest: +SKIP
    (4, torch.Size([4, 8, 8]))
    ```
    """

    model_cpu_offload_seq = "transformer->vqgan"
    _callback_tensor_inputs = ["image_tokens", "logits"]

    def __init__(self, vqgan: PreTrainedModel, transformer: PreTrainedModel):
        super().__init__()
        self.register_modules(vqgan=vqgan, transformer=transformer)
        if transformer is not None:
            check_prior_config(transformer.config)
            if vqgan is not None:
                check_tokenizer(transformer.config, vqgan)
        # The tokenizer's pixels are in [-1, 1] (VQGANImageProcessor); diffusers' processor maps them to [0, 1] images.
        self.image_processor = VaeImageProcessor(do_normalize=True)

    @property
    def id2label(self) -> dict[int, str]:
        """Class id -> class name, as the prior's training data named its classes."""
        return class_names(self.transformer.config)

    def get_label_ids(self, label: str | list[str]) -> list[int]:
        """Class ids of class names (diffusers' DiT pipeline has the same method).

        Example: `pipe.get_label_ids(["Sneaker", "Bag"])` -> `[7, 8]`.
        """
        return label_ids(self.id2label, label)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | list[int] | torch.Tensor | None = None,
        num_images_per_prompt: int = 1,
        guidance_scale: float = 1.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        batch_size: int | None = None,
        callback_on_step_end: StepCallback | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> AutoregressivePipelineOutput | tuple:
        r"""
        Args:
            class_labels (`int`, `list[int]` or `torch.Tensor`, *optional*):
                Class of each image to generate (see `get_label_ids` for names); `None` samples unconditionally.
            num_images_per_prompt (`int`, *optional*, defaults to 1):
                Images per class label (or per unconditional sample); an image's copies follow each other.
            guidance_scale (`float`, *optional*, defaults to 1.0):
                Classifier-free guidance on the logits; 1 disables it (`N` rows per forward instead of `2N`).
            temperature (`float`, *optional*, defaults to 1.0):
                Softmax temperature of the code distribution; 0 takes the most likely code.
            top_k (`int`, *optional*):
                Sample among the `top_k` most likely codes only.
            top_p (`float`, *optional*):
                Sample among the most likely codes whose probabilities add up to `top_p` (nucleus sampling).
            generator (`torch.Generator` or a list of them, *optional*):
                Makes sampling deterministic; a list gives each image its own generator.
            output_type (`str`, *optional*, defaults to `"pil"`):
                "pil", "np" or "pt"; "latent" returns the token grids without decoding them.
            return_dict (`bool`, *optional*, defaults to `True`):
                Return an `AutoregressivePipelineOutput` rather than a tuple `(images, image_tokens)`.
            batch_size (`int`, *optional*):
                Unconditional samples to draw (times `num_images_per_prompt`) when `class_labels` is `None`.
            callback_on_step_end (`Callable`, `PipelineCallback` or `MultiPipelineCallbacks`, *optional*):
                Called after each code is drawn as `callback_on_step_end(pipe, step_index, step_index,
                callback_kwargs)`, where `callback_kwargs` holds the tensors named in
                `callback_on_step_end_tensor_inputs`: `image_tokens` (the codes so far, `(N, step_index + 1)`, the new
                ones last) and `logits` (the guided code logits of the step, `(N, codebook_size)`). A returned
                `image_tokens` replaces the new codes (its last column). Setting `pipe._guidance_scale` changes the
                guidance of the steps after it when sampling started with guidance on.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*, defaults to `["image_tokens"]`):
                Tensors passed to the callback, from `pipe._callback_tensor_inputs`.
        """
        config = self.transformer.config
        labels = prepare_class_labels(class_labels, config.num_classes, num_images_per_prompt, batch_size)
        check_sampling_arguments(
            config.num_classes, class_labels, guidance_scale, temperature, top_k, top_p, output_type
        )
        check_generator_devices(generator, labels.shape[0], self._execution_device)
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["image_tokens"]
        check_callback_tensor_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)
        self._guidance_scale = guidance_scale
        self._num_timesteps = config.grid_size[0] * config.grid_size[1]  # one step per code
        sampler = GuidedCodeSampler(config.codebook_size, guidance_scale, temperature, top_k, top_p, generator)
        if callback_on_step_end is not None:
            sampler.on_step = self._step_callback(sampler, callback_on_step_end, callback_on_step_end_tensor_inputs)
        image_tokens = self.generate_tokens(labels, sampler)
        if output_type == "latent":
            images = image_tokens
        else:
            pixels = self.vqgan.decode(image_tokens=image_tokens, return_dict=True).reconstruction
            images = self.image_processor.postprocess(pixels.float(), output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, image_tokens
        return AutoregressivePipelineOutput(images=images, image_tokens=image_tokens)

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def num_timesteps(self) -> int:
        """Steps of the last call: one per code of the grid (diffusers' name, read by step callbacks)."""
        return self._num_timesteps

    def _step_callback(self, sampler: GuidedCodeSampler, callback: StepCallback, tensor_names: list[str]):
        """The sampler's `on_step`: diffusers' step callback over the codes drawn so far and the step's logits."""

        def on_step(previous: torch.Tensor, logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
            step_index = previous.shape[1]
            tensors = {"image_tokens": torch.cat([previous, codes[:, None]], dim=1), "logits": logits}
            outputs = callback(self, step_index, step_index, {name: tensors[name] for name in tensor_names}) or {}
            sampler.guidance_scale = self._guidance_scale
            if "image_tokens" in outputs:
                codes = outputs["image_tokens"][:, -1].to(codes)
            return codes

        return on_step

    def generate_tokens(self, labels: torch.Tensor, sampler: GuidedCodeSampler) -> torch.Tensor:
        """Token grids `(N, grid_height, grid_width)` for class ids `labels` (the null id for unconditional rows)."""
        config = self.transformer.config
        prompts = labels + config.codebook_size
        if sampler.guided:
            prompts = torch.cat([prompts, torch.full_like(prompts, config.codebook_size + config.num_classes)])
        prompts = prompts[:, None].to(self._execution_device)
        height, width = config.grid_size
        generation = GenerationConfig(
            do_sample=False,
            max_new_tokens=height * width,
            min_new_tokens=height * width,
            eos_token_id=None,
            bos_token_id=None,
            pad_token_id=config.pad_token_id,
        )
        sequences = self.transformer.generate(
            prompts, attention_mask=torch.ones_like(prompts), generation_config=generation, logits_processor=[sampler]
        )
        return sequences[: labels.shape[0], 1:].reshape(-1, height, width)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """diffusers' `save_pretrained`, plus the tokenizer's code, so that the folder loads with
        `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` where hf_vq is not installed (the
        `transformer` is transformers' own class and needs no code)."""
        save_pretrained_with_code(self, save_directory, super().save_pretrained, __file__, **kwargs)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> "AutoregressivePipeline":
        """diffusers' `from_pretrained`; where this class is hf_vq's own (hf_vq installed), a folder it saved loads
        with hf_vq's and transformers' classes, without `trust_remote_code=True`."""
        load = super().from_pretrained
        return from_pretrained_with_installed_components(cls, load, pretrained_model_name_or_path, **kwargs)


def prepare_class_labels(
    class_labels: Any, num_classes: int, num_images_per_prompt: int, batch_size: int | None
) -> torch.Tensor:
    """Class ids, one per image to generate (the null id, `num_classes`, for unconditional samples)."""
    if (
        isinstance(num_images_per_prompt, bool)
        or not isinstance(num_images_per_prompt, int)
        or num_images_per_prompt < 1
    ):
        raise ValueError(f"num_images_per_prompt must be an integer >= 1, got {num_images_per_prompt!r}")
    if class_labels is None:
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        return torch.full(((batch_size or 1) * num_images_per_prompt,), num_classes, dtype=torch.long)
    if batch_size is not None:
        raise ValueError(
            "batch_size applies to unconditional sampling (class_labels=None); with class labels, pass one per image"
        )
    if num_classes == 0:
        raise ValueError("this prior is unconditional (num_classes=0): call the pipeline with class_labels=None")
    labels = class_label_tensor(class_labels)
    out_of_range = [label for label in labels.tolist() if not 0 <= label < num_classes]
    if out_of_range:
        raise ValueError(
            f"class labels must lie in [0, {num_classes - 1}] (the prior has num_classes={num_classes}), got "
            f"{out_of_range}; class names map to ids with pipe.get_label_ids([...])"
        )
    return labels.long().repeat_interleave(num_images_per_prompt)


def check_sampling_arguments(
    num_classes: int,
    class_labels: Any,
    guidance_scale: float,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    output_type: str,
) -> None:
    """A `ValueError` naming the argument for every value sampling cannot use."""
    for name, value in (("guidance_scale", guidance_scale), ("temperature", temperature)):
        check_call_number(name, value)
        if value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if guidance_scale != 1.0 and (num_classes == 0 or class_labels is None):
        raise ValueError(
            f"guidance_scale={guidance_scale} steers samples towards class labels; it needs a class-conditional prior "
            "and class_labels=...; use guidance_scale=1.0 for unconditional samples"
        )
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 (or None for no limit), got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must lie in (0, 1] (or None for no limit), got {top_p!r}")
    check_output_type(output_type)


__all__ = [
    "AutoregressivePipeline",
    "AutoregressivePipelineOutput",
    "GuidedCodeSampler",
    "autoregressive_prior_fields",
    "check_tokenizer",
]
