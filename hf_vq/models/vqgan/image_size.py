"""One source of truth for a VQGAN tokenizer's input size and token grid: its config's `image_size`.

Every consumer reads the config: `config.image_size` is the side of the images the tokenizer was trained on and
`config.token_grid_size` the `(height, width)` grid it makes of them (the token classifier's `grid_size`, the
prior's `grid_height` / `grid_width`, the pipelines' grids, the cards' sizes). The functions here keep the config
telling the truth:

- `set_image_size`: a training run at `--resolution R` records R in the config it saves (before issue 28 the config
  kept the YAML's size while the processor resized to R, and every consumer built the wrong grid);
- `align_image_size_with_processor` (and `align_image_size_with_saved_processor`, which loads the processor): a
  folder saved before that fix, whose config and processor disagree, is read with the processor's size (the size
  the tokenizer was really trained at), with a warning naming both values;
- `check_tokenizer_resolution`: a classifier or prior run reads tokens of the tokenizer's own size; another
  `--resolution` would give another grid than the one recorded, so it is refused with a message saying what to do.

Example:

```python
>>> from hf_vq import VQGANConfig, VQGANImageProcessor
>>> from hf_vq.models.vqgan.image_size import align_image_size_with_processor, set_image_size

>>> config = VQGANConfig(block_out_channels=[16, 32], norm_num_groups=8, latent_channels=8, image_size=16,
...                      attention_resolutions=[8], codebook_size=32, embed_dim=4)
>>> config.token_grid_size
(8, 8)
>>> set_image_size(config, 32).token_grid_size, config.attention_resolutions  # attention stays on its level
((16, 16), [16])
>>> processor = VQGANImageProcessor.from_model_config(config)
>>> align_image_size_with_processor(config, processor).image_size  # they agree: nothing to do
32

```
"""

from __future__ import annotations

import logging
from typing import Any

from ...errors import ConfigError
from .configuration_vqgan import VQGANConfig

logger = logging.getLogger(__name__)


def set_image_size(config: VQGANConfig, image_size: int) -> VQGANConfig:
    """Record in `config` (in place, and returned) that the tokenizer takes `image_size` x `image_size` images.

    The architecture does not change: the levels that have self-attention keep it, their `attention_resolutions`
    entries following the new size (attention at the 8x8 level of 16-pixel images is at 16x16 for 32-pixel
    images), so weights trained or loaded with the old size fit as they are.
    """
    if image_size == config.image_size:
        return config
    factor = config.downsampling_factor
    if not isinstance(image_size, int) or image_size < 1 or image_size % factor:
        raise ValueError(
            f"image size {image_size} is not a positive multiple of the tokenizer's downsampling factor {factor} "
            f"({len(config.block_out_channels)} levels of block_out_channels); use a multiple of {factor}"
        )
    attention_levels = [level for level, has_attention in enumerate(config.level_has_attention) if has_attention]
    config.image_size = image_size
    config.attention_resolutions = [image_size // 2**level for level in attention_levels]
    return config


def align_image_size_with_processor(
    config: VQGANConfig, processor: Any, check_architecture: bool = True
) -> VQGANConfig:
    """Make `config` (in place, and returned) agree with the size of the images `processor` makes.

    Folders saved before issue 28's fix by a run at another `--resolution` than the YAML's `image_size` have a
    config that names the YAML's size while their processor resizes to the size trained at: the processor's size
    wins, with a warning naming both. Channels and downsampling factor are fixed by the weights, so a processor
    that disagrees on those is an error (`check_architecture=False`, what `VQGANModel.from_pretrained` passes: not
    checked, as folders with such a processor loaded before this check existed).
    """
    for name in ("num_channels", "downsampling_factor") if check_architecture else ():
        processor_value, config_value = getattr(processor, name, None), getattr(config, name)
        if processor_value is not None and processor_value != config_value:
            raise ValueError(
                f"the tokenizer's image processor has {name}={processor_value} but its config (and weights) "
                f"{name}={config_value}; save a matching processor with "
                "VQGANImageProcessor.from_model_config(model.config).save_pretrained(folder)"
            )
    height, width = _processed_image_side(processor, "height"), _processed_image_side(processor, "width")
    if height is None or width is None or (height, width) == (config.image_size, config.image_size):
        return config  # a processor that keeps each image's own size says nothing about the training size
    if height != width:
        raise ValueError(
            f"the tokenizer's image processor makes {height}x{width} images; hf_vq tokenizers take square images "
            f"(config image_size={config.image_size}): save a processor with size={{'height': {config.image_size}, "
            f"'width': {config.image_size}}}"
        )
    old_size, old_grid = config.image_size, config.token_grid_size
    set_image_size(config, height)
    logger.warning(
        "the tokenizer's config says image_size=%d (a %dx%d token grid) but its image processor makes %dx%d images: "
        "using the processor's size, %d (a %dx%d token grid). The folder was saved before hf_vq recorded the "
        "training --resolution in the config; to silence this warning re-save it: "
        "VQGANModel.from_pretrained(folder).save_pretrained(folder) (from_pretrained reads the processor's size).",
        old_size,
        *old_grid,
        height,
        width,
        height,
        *config.token_grid_size,
    )
    return config


def align_image_size_with_saved_processor(
    config: VQGANConfig,
    name_or_path: str,
    revision: str | None = None,
    check_architecture: bool = True,
    **lookup_kwargs: Any,
) -> VQGANConfig:
    """`align_image_size_with_processor` with the processor saved beside the model in `name_or_path` (a folder or
    Hub id), when there is one: what a run that starts from a saved tokenizer calls, so that it goes on at the
    size the tokenizer was trained at. `lookup_kwargs` (`subfolder`, `cache_dir`, `token`, `local_files_only`) find
    the processor as they found the model."""
    from .image_processing_vqgan import VQGANImageProcessor

    try:
        processor = VQGANImageProcessor.from_pretrained(name_or_path, revision=revision, **lookup_kwargs)
    except OSError:  # no preprocessor_config.json: the config is all there is
        return config
    return align_image_size_with_processor(config, processor, check_architecture)


def check_tokenizer_resolution(config: VQGANConfig, resolution: int | None) -> int:
    """The side at which a classifier or prior run feeds images to the tokenizer: its `image_size`.

    `resolution` (the run's `--resolution`) may repeat it; another value would make token grids of another size
    than the one the tokenizer was trained at and than the one the saved model records, so it is refused.
    """
    if resolution is not None and resolution != config.image_size:
        raise ConfigError(
            f"--resolution {resolution} differs from the tokenizer's image size {config.image_size} (its config's "
            f"image_size, a {config.token_grid_size[0]}x{config.token_grid_size[1]} token grid): the tokenizer reads "
            "images of the size it was trained at; drop --resolution, or train a tokenizer at that resolution"
        )
    return config.image_size


def _processed_image_side(processor: Any, side: str) -> int | None:
    """Side (`"height"` or `"width"`) of the images `processor` makes, when known in advance (crop, pad or resize)."""
    output_side = getattr(processor, "_output_side", None)
    return output_side(side) if output_side is not None else None


__all__ = [
    "align_image_size_with_processor",
    "align_image_size_with_saved_processor",
    "check_tokenizer_resolution",
    "set_image_size",
]
