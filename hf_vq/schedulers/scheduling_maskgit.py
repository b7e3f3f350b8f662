"""MaskGIT decoding (Chang et al., CVPR 2022) as a diffusers scheduler: iterative, confidence-based unmasking.

Sampling starts from a grid where every token is the mask id. At step `i` of `N` the prior's logits give a code for
every still-masked position; the `floor(L * cos(pi / 2 * (i + 1) / N))` least confident of those new codes are masked
again (at least one until the last step, and always fewer than were masked before), all others are fixed for good.
Confidence is the log-probability of the sampled code plus Gumbel noise scaled by `temperature * (1 - (i + 1) / N)`,
so early steps explore and the last ones pick the most likely tokens.

Why our own scheduler and not diffusers' `AmusedScheduler` (which does import cleanly in diffusers 0.42, from
`diffusers.schedulers`, while its pipelines moved to the deprecated folder): it differs from MaskGIT in what matters
here. Its Gumbel noise follows `linspace(temperature, 0.01)` fixed in `set_timesteps` instead of MaskGIT's
`temperature * (1 - progress)` at `step`; its 2-d layout expects logits `(B, codebook, h, w)` where transformers
models return `(B, positions, codebook)`; and nothing upstream tests or changes it any more (aMUSEd was its only user).
This file is small, depends only on torch and diffusers, and travels as remote code with every saved pipeline.

It is also the one home of MaskGIT's masking schedule: `cosine_mask_ratio` is the share of the grid masked at a given
progress, used by sampling (`MaskGITScheduler.step`, at `(i + 1) / N`) and by training (`mask_tokens`, at a uniform
random progress), so the two cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import overload

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

# The label of a position the loss ignores (PyTorch's cross_entropy default, transformers' convention).
IGNORE_INDEX = -100


@overload
def cosine_mask_ratio(progress: float) -> float: ...
@overload
def cosine_mask_ratio(progress: torch.Tensor) -> torch.Tensor: ...
def cosine_mask_ratio(progress: float | torch.Tensor) -> float | torch.Tensor:
    """MaskGIT's schedule: the share of a token grid that is masked at `progress` in [0, 1], `cos(pi / 2 * progress)`
    (1 at the start of sampling, 0 at its end)."""
    if isinstance(progress, torch.Tensor):
        return torch.cos(math.pi / 2 * progress)
    return math.cos(math.pi / 2 * progress)


def mask_tokens(
    image_tokens: torch.Tensor, mask_token_id: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask a random share of each sample's tokens, as MaskGIT trains: `cosine_mask_ratio(u)`, `u ~ U(0, 1]`.

    Per sample, `ceil(ratio * L)` positions (at least one) out of `L` are replaced with `mask_token_id`. Returns
    `(masked_inputs, labels)`: `labels` hold the original ids at masked positions and -100 elsewhere, so that
    `MaskGITModel(masked_inputs, labels=labels).loss` is computed on the masked positions only.

    Example:

    ```python
    >>> import torch
    >>> from hf_vq.schedulers.scheduling_maskgit import mask_tokens
    >>> tokens = torch.randint(0, 32, (4, 8, 8))
    >>> inputs, labels = mask_tokens(tokens, mask_token_id=32, generator=torch.Generator().manual_seed(0))
    >>> bool(((inputs == 32) == (labels != -100)).all()), bool((labels[labels != -100] == tokens[inputs == 32]).all())
    (True, True)

    ```
    """
    if image_tokens.is_floating_point() or image_tokens.ndim < 2 or image_tokens.numel() == 0:
        raise ValueError(
            "image_tokens must be a non-empty integer tensor (batch, ...), "
            f"got {image_tokens.dtype} of shape {tuple(image_tokens.shape)}"
        )
    batch = image_tokens.shape[0]
    flat = image_tokens.reshape(batch, -1)
    length = flat.shape[1]
    device = generator.device if generator is not None else flat.device
    # 1 - U[0, 1) is U(0, 1]: u = 0 (ratio 1, everything masked) is excluded as in MaskGIT, u = 1 gives ratio 0,
    # which the at-least-one rule turns into one masked token.
    u = 1.0 - torch.rand(batch, generator=generator, device=device)
    ratio = cosine_mask_ratio(u)
    num_masked = torch.ceil(ratio * length).clamp(min=1, max=length).long().to(flat.device)
    # A random rank per position: the positions ranked below num_masked are masked.
    ranks = torch.rand(batch, length, generator=generator, device=device).argsort(dim=1).argsort(dim=1).to(flat.device)
    masked = ranks < num_masked[:, None]
    inputs = torch.where(masked, torch.full_like(flat, mask_token_id), flat)
    labels = torch.where(masked, flat, torch.full_like(flat, IGNORE_INDEX))
    return inputs.reshape(image_tokens.shape), labels.reshape(image_tokens.shape)


@dataclass
class MaskGITSchedulerOutput(BaseOutput):
    """
    Output of [`MaskGITScheduler.step`].

    Args:
        prev_sample (`torch.LongTensor` of the shape of `sample`):
            The tokens after this step: fixed codes, and the mask id where the next step decides.
        pred_original_sample (`torch.LongTensor` of the shape of `sample`):
            This step's guess of the whole grid (every masked position filled with its sampled code).
    """

    prev_sample: torch.LongTensor
    pred_original_sample: torch.LongTensor


class MaskGITScheduler(SchedulerMixin, ConfigMixin):
    r"""
    Confidence-based iterative unmasking with a cosine mask schedule, for MaskGIT priors over image tokens.

    Args:
        mask_token_id (`int`):
            The id of a masked position (the prior's `config.mask_token_id`, i.e. its `codebook_size`).

    Example:

    ```python
    >>> import torch
    >>> from hf_vq import MaskGITScheduler
    >>> scheduler = MaskGITScheduler(mask_token_id=32)
    >>> scheduler.set_timesteps(4)
    >>> sample = torch.full((1, 16), 32)
    >>> generator = torch.Generator().manual_seed(0)
    >>> for t in scheduler.timesteps:
    ...     logits = torch.randn(1, 16, 32, generator=generator)  # the prior's output
    ...     sample = scheduler.step(logits, t, sample, generator=generator).prev_sample
    ...     print(int((sample == 32).sum()))
    14
    11
    6
    0

    ```
    """

    order = 1

    @register_to_config
    def __init__(self, mask_token_id: int):
        if not isinstance(mask_token_id, int) or mask_token_id < 1:
            raise ValueError(
                f"mask_token_id must be a positive integer (the prior's codebook_size), got {mask_token_id!r}"
            )
        self.num_inference_steps: int | None = None
        self.timesteps: torch.Tensor | None = None

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Prepare `num_inference_steps` steps: `timesteps` counts down from `num_inference_steps - 1` to 0."""
        if (
            isinstance(num_inference_steps, bool)
            or not isinstance(num_inference_steps, int)
            or num_inference_steps < 1
        ):
            raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.arange(num_inference_steps - 1, -1, -1, device=device)

    def mask_ratio(self, step_index: int) -> float:
        """Share of the grid still masked after step `step_index` (0-based): `cosine_mask_ratio(progress)`, with
        `progress = (step_index + 1) / N`."""
        progress = (step_index + 1) / self.num_inference_steps
        return 0.0 if step_index == self.num_inference_steps - 1 else cosine_mask_ratio(progress)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.LongTensor,
        temperature: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> MaskGITSchedulerOutput | tuple:
        """One decoding step.

        Args:
            model_output (`torch.Tensor` of shape `(batch, positions, codebook_size)`):
                The prior's logits (after classifier-free guidance, if any).
            timestep (`int`):
                The current entry of `timesteps`.
            sample (`torch.LongTensor` of shape `(batch, positions)` or `(batch, height, width)`):
                Current tokens, the mask id where still undecided.
            temperature (`float`, *optional*, defaults to 1.0):
                Scale of the Gumbel noise added to the confidences, annealed as `temperature * (1 - progress)`; 0 keeps
                the most likely tokens.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Randomness of the sampled codes and of the Gumbel noise; a list gives each sample its own generator
                (diffusers' convention for per-image seeds), so a sample does not depend on the others in its batch.
            return_dict (`bool`, *optional*, defaults to `True`):
                Return a `MaskGITSchedulerOutput` rather than a tuple.
        """
        step_index = self._step_index(timestep)
        tokens = sample.reshape(sample.shape[0], -1)
        if model_output.ndim != 3 or model_output.shape[:2] != tokens.shape:
            raise ValueError(
                f"model_output must be logits (batch, positions, codebook_size) matching sample "
                f"{tuple(sample.shape)}, got {tuple(model_output.shape)}"
            )
        check_temperature(temperature)
        check_generators(generator, tokens.shape[0])
        masked = tokens == self.config.mask_token_id
        log_probs = model_output.float().log_softmax(dim=-1)
        sampled = _sample_categorical(log_probs, generator)
        predicted = torch.where(masked, sampled, tokens)

        confidence = log_probs.gather(-1, sampled[..., None])[..., 0]
        noise_scale = temperature * (1.0 - (step_index + 1) / self.num_inference_steps)
        confidence = confidence + noise_scale * _gumbel_like(confidence, generator)
        # Tokens fixed earlier are never masked again.
        confidence = torch.where(masked, confidence, torch.full_like(confidence, math.inf))
        num_masked = self._num_to_mask(step_index, masked)
        rank = confidence.argsort(dim=-1).argsort(dim=-1)
        remask = rank < num_masked[:, None]
        prev_sample = torch.where(remask, torch.full_like(predicted, self.config.mask_token_id), predicted)

        prev_sample, predicted = prev_sample.reshape(sample.shape), predicted.reshape(sample.shape)
        if not return_dict:
            return prev_sample, predicted
        return MaskGITSchedulerOutput(prev_sample=prev_sample, pred_original_sample=predicted)

    def _step_index(self, timestep: int | torch.Tensor) -> int:
        if self.timesteps is None:
            raise ValueError("call set_timesteps(num_inference_steps) before step()")
        timestep = int(timestep)
        if not 0 <= timestep < self.num_inference_steps:
            raise ValueError(
                f"timestep {timestep} is not one of scheduler.timesteps (0 to {self.num_inference_steps - 1})"
            )
        return self.num_inference_steps - 1 - timestep

    def _num_to_mask(self, step_index: int, masked: torch.Tensor) -> torch.Tensor:
        """Per sample: positions that stay masked after this step (MaskGIT's rule)."""
        still_masked = masked.sum(dim=-1)
        if step_index == self.num_inference_steps - 1:
            return torch.zeros_like(still_masked)
        scheduled = math.floor(masked.shape[-1] * self.mask_ratio(step_index))
        # Unmask at least one token per step, but keep at least one masked until the last step.
        return torch.clamp(still_masked - 1, max=scheduled).clamp(min=1).minimum(still_masked)


def check_temperature(temperature: float) -> None:
    """A finite temperature >= 0: NaN or inf noise would pick tokens arbitrarily and return a degenerate image."""
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")


def check_generators(generator: torch.Generator | list[torch.Generator] | None, batch_size: int) -> None:
    """A list of generators holds one per sample (diffusers' convention); anything else is a clear error."""
    if isinstance(generator, list):
        if len(generator) != batch_size:
            raise ValueError(
                f"generator is a list of {len(generator)} generators, but {batch_size} images are generated: pass one "
                "generator per image (class_labels times num_images_per_prompt) or a single generator"
            )
        for item in generator:
            check_generators(item, batch_size)
    elif generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}")


def uniform_noise(
    shape: tuple[int, ...], generator: torch.Generator | list[torch.Generator] | None, device: torch.device
) -> torch.Tensor:
    """Uniform [0, 1) float32 numbers of `shape` on `device`, drawn on the generator's device (so that a seed gives the
    same numbers whatever device the pipeline runs on) and moved; a list of generators draws row `i` with `i`'s."""
    if isinstance(generator, list):
        return torch.cat([uniform_noise((1, *shape[1:]), item, device) for item in generator])
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source, dtype=torch.float32).to(device)


def _sample_categorical(
    log_probs: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None
) -> torch.Tensor:
    """One code per position, drawn from softmax(log_probs) by inverting the cumulative distribution: one uniform
    number per position (Gumbel-max would need two logarithms per code, 10x slower on CPU at 512 codes)."""
    cumulative = log_probs.exp().cumsum(dim=-1)
    uniform = uniform_noise((*log_probs.shape[:-1], 1), generator, log_probs.device)
    # Scaled by the total, which rounding leaves slightly off 1; a zero-probability code is never picked.
    sampled = torch.searchsorted(cumulative, uniform * cumulative[..., -1:], right=True)[..., 0]
    return sampled.clamp(max=log_probs.shape[-1] - 1)


def _gumbel_like(tensor: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None) -> torch.Tensor:
    """Standard Gumbel noise of `tensor`'s shape, drawn on the generator's device (for reproducibility) and moved."""
    uniform = uniform_noise(tuple(tensor.shape), generator, tensor.device)
    exponential = -torch.log(uniform.clamp(min=1e-20))
    return -torch.log(exponential.clamp(min=1e-20))


__all__ = ["MaskGITScheduler", "MaskGITSchedulerOutput", "cosine_mask_ratio", "mask_tokens"]
