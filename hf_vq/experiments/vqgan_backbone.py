"""The VQGAN tokenizer of `make demo` as a backbone of the comparison study ("at demo scale", issue 13).

hf_vq's own `VQGANModel` with the `model:` section of configs/vqgan_fashion_mnist_cpu.yaml (0.99M parameters, 32x32
grayscale images -> 8x8 codes), trained by the study's loop (`runner.run_one`) on that config's reconstruction loss
(L1) plus the quantizer loss. No GAN and no LPIPS: the config's discriminator_weight is 0, and LPIPS weights cannot be
downloaded here.

Only the quantizer changes between methods, exactly as on the other backbones: the config's own quantizer recipe
(Huh et al.'s four methods, k-means init, replacement every 100 steps) is dropped, the method's options
(`methods.method_options`, named as `QuantizerConfig`'s fields, which `VQGANConfig` stores) become the config's
quantizer fields, and every field a method does not set keeps `QuantizerConfig`'s default: what the other backbones'
quantizers get.

The 28x28 Fashion-MNIST images are resized to the config's 32x32 by `hf_vq.data.ImageTransform`, the transform of
the tokenizer's training data (`hf_vq/training/data.py`): bicubic resize of the shorter side, crop (a no-op for square
images), pixels to [-1, 1].

On the photo patches (`--dataset photos`, 64x64 RGB) the model is the photo tokenizer's instead
(configs/vqgan_photos64_cpu.yaml, through `tokenizer_model_options` as the dataset's `model_options` in
`reproduce.DATASET_OVERRIDES`): the patches are at its size already, and only the quantizer changes, as above.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from ..config_files import TOKENIZER_CONFIG
from ..data import ImageTransform
from ..models.vqgan import VQGANConfig, VQGANModel
from ..quantization import QuantizerConfig
from .datasets import ClassificationData
from .defaults import ArchitectureDefaults

# The VQGANConfig fields of the quantizer besides its sizes (which come from ArchitectureDefaults): what a method may
# set; the demo config's values for them are replaced by QuantizerConfig's defaults.
QUANTIZER_FIELDS = tuple(
    name for name in QuantizerConfig.architecture_fields() if name not in ("embed_dim", "codebook_size")
)


def demo_tokenizer_config() -> Path:
    """configs/vqgan_fashion_mnist_cpu.yaml, the `make demo` tokenizer's config."""
    return TOKENIZER_CONFIG


def tokenizer_model_options(config_path: str | os.PathLike) -> dict:
    """The `model:` section of a tokenizer YAML as the vqgan backbone's `model_options`: every field but the
    quantizer's (the method sets those) and the channel count (the data's). How the study trains the photo tokenizer's
    model (`--dataset photos`) instead of the demo's.

    Example:
        >>> from hf_vq.config_files import PHOTO_TOKENIZER_CONFIG
        >>> options = tokenizer_model_options(PHOTO_TOKENIZER_CONFIG)
        >>> options["image_size"], "codebook_size" in options, "num_channels" in options
        (64, False, False)
    """
    model = QuantizerConfig.canonical_names(yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))["model"])
    not_model = {*QUANTIZER_FIELDS, "embed_dim", "codebook_size", "num_channels"}
    return {name: value for name, value in model.items() if name not in not_model}


def config_quantizer_fields(options: dict, embed_dim: int, codebook_size: int) -> dict:
    """`VQGANConfig` fields for the study's quantizer `options` (as `methods.method_options` returns them).

    Example:
        >>> fields = config_quantizer_fields({"quantizer_type": "fsq", "levels": [8, 8, 8]}, 3, 512)
        >>> fields["quantizer_type"], fields["fsq_levels"], fields["kmeans_init"]
        ('fsq', [8, 8, 8], False)
    """
    options = QuantizerConfig.canonical_names(options)
    unknown = sorted(set(options) - set(QUANTIZER_FIELDS))
    if unknown:
        raise ValueError(
            f"quantizer option {unknown[0]}={options[unknown[0]]!r} has no VQGANConfig field, so the vqgan backbone "
            f"cannot run this method; the config's quantizer fields are {sorted(QUANTIZER_FIELDS)}"
        )
    defaults = QuantizerConfig.__dataclass_fields__
    fields = {name: defaults[name].default for name in QUANTIZER_FIELDS}
    return {**fields, **options, "embed_dim": embed_dim, "codebook_size": codebook_size}


def _backbone_options(defaults: ArchitectureDefaults) -> dict:
    """`model_options` (VQGANConfig fields replacing the demo config's, e.g. a smaller model for --quick): never the
    quantizer's, which the method sets."""
    clash = sorted(set(defaults.model_options) & {*QUANTIZER_FIELDS, "embed_dim", "codebook_size"})
    if clash:
        raise ValueError(
            f"model_options {clash} are quantizer settings; the study sets those from ArchitectureDefaults and the "
            "method"
        )
    return dict(defaults.model_options)


def vqgan_config(defaults: ArchitectureDefaults, variant: str, num_channels: int) -> VQGANConfig:
    """The demo tokenizer's config with the quantizer of method `variant` at (method-adjusted) `defaults`."""
    fields = config_quantizer_fields(
        defaults.quantizer_options(variant), defaults.code_dim or defaults.embed_dim, defaults.codebook_size
    )
    return VQGANConfig.from_yaml(
        demo_tokenizer_config(), **_backbone_options(defaults), num_channels=num_channels, **fields
    )


class VQGANBackbone(nn.Module):
    """A `VQGANModel` behind the interface `runner.run_one` and `runner.evaluate` use for every backbone.

    Example:
        >>> from hf_vq.experiments import ARCHITECTURES
        >>> model = VQGANBackbone(vqgan_config(ARCHITECTURES["vqgan"], "baseline", num_channels=1))
        >>> out = model(torch.zeros(2, 1, 32, 32))
        >>> out["reconstruction"].shape, out["indices"].shape
        (torch.Size([2, 1, 32, 32]), torch.Size([2, 8, 8]))
    """

    def __init__(self, config: VQGANConfig):
        super().__init__()
        self.model = VQGANModel(config)

    @property
    def quantizer(self) -> nn.Module:
        return self.model.quantize

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(images)
        return {
            "reconstruction": out.reconstruction,
            # The config's own pixel loss (L1): runner.task_loss uses it instead of the other backbones' MSE.
            "reconstruction_loss": out.reconstruction_loss,
            "vq_loss": self.model.config.quantizer_loss_weight * out.quantizer_loss,
            "indices": out.image_tokens,
            "perplexity": out.perplexity,
            "usage": out.usage,
        }


# (source, side, resized) of the last call: a worker process runs one dataset, so it resizes it once.
_last_resized: list[tuple[ClassificationData, int, ClassificationData]] = []


def vqgan_data(data: ClassificationData, defaults: ArchitectureDefaults) -> ClassificationData:
    """`data` at the tokenizer config's image size, resized as the tokenizer's training data path does it."""
    side = VQGANConfig.from_yaml(demo_tokenizer_config(), **_backbone_options(defaults)).image_size
    if data.image_size == side:
        return data
    if not _last_resized or _last_resized[0][0] is not data or _last_resized[0][1] != side:
        # ImageTransform without the processor: the same resize and crop, and pixels identical to the processor's
        # rescale + normalise (tests/test_compare_quantizers.py checks it) at 40% of the cost per image. The crop is
        # centred: after the resize the image is square, so the tokenizer's random crop takes all of it too.
        transform = ImageTransform(resolution=side, center_crop=True, random_flip=False, num_channels=data.in_channels)
        resized = ClassificationData(
            _resize(data.train_images, transform),
            data.train_labels,
            _resize(data.test_images, transform),
            data.test_labels,
        )
        _last_resized[:] = [(data, side, resized)]
    return _last_resized[0][2]


def _resize(images: torch.Tensor, transform: ImageTransform) -> torch.Tensor:
    # The loaded tensors are uint8 pixels / 127.5 - 1, so this gives the original pixels back exactly.
    pixels = ((images + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels  # (H, W) grayscale, (H, W, 3) RGB: what PIL reads
    return torch.stack([transform(np.ascontiguousarray(image)) for image in pixels])


__all__ = [
    "VQGANBackbone",
    "config_quantizer_fields",
    "demo_tokenizer_config",
    "tokenizer_model_options",
    "vqgan_config",
    "vqgan_data",
]
