"""PatchGAN discriminator (pix2pix; taming-transformers' `NLayerDiscriminator`)."""

from __future__ import annotations

import torch
from torch import nn

NORMS = ("batch", "group", "none")


def _norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(32, channels), channels)
    return nn.Identity()


class NLayerDiscriminator(nn.Module):
    """A PatchGAN: a stack of 4x4 convolutions that scores each overlapping patch of an image as real or fake.

    Returns raw logits `(B, 1, h, w)` (no sigmoid: the hinge loss works on logits). With the defaults
    (`num_layers=3`, `base_channels=64`, batch norm) it is taming-transformers' discriminator, initialised as
    there (conv weights N(0, 0.02), norm weights N(1, 0.02)). `norm="group"` or `"none"` avoids batch statistics,
    which differ between the real and fake batches it is called on separately.

    Example:
        >>> import torch
        >>> disc = NLayerDiscriminator(in_channels=1, num_layers=2, base_channels=16)
        >>> disc(torch.randn(2, 1, 32, 32)).shape
        torch.Size([2, 1, 6, 6])
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3, norm: str = "batch"):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"discriminator norm must be one of {NORMS}, got {norm!r}")
        if num_layers < 1 or base_channels < 1:
            raise ValueError(f"num_layers and base_channels must be >= 1, got {num_layers} and {base_channels}")
        use_bias = norm != "batch"  # a bias before batch norm is cancelled by its mean subtraction
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        channels = base_channels
        for index in range(1, num_layers + 1):
            next_channels = base_channels * min(2**index, 8)
            stride = 2 if index < num_layers else 1  # the last of these keeps the resolution, as in pix2pix
            layers += [
                nn.Conv2d(channels, next_channels, 4, stride=stride, padding=1, bias=use_bias),
                _norm_layer(norm, next_channels),
                nn.LeakyReLU(0.2),
            ]
            channels = next_channels
        layers.append(nn.Conv2d(channels, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(_init_weights)

        self.num_layers = num_layers

    @property
    def minimum_image_size(self) -> int:
        """Smallest image side that leaves at least one patch: each stride-2 conv halves the side, the two
        stride-1 4x4 convs each take one pixel off."""
        return 3 * 2**self.num_layers

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if min(images.shape[-2:]) < self.minimum_image_size:
            raise ValueError(
                f"images of {images.shape[-2]}x{images.shape[-1]} are too small for a {self.num_layers}-layer "
                f"PatchGAN (minimum side {self.minimum_image_size}); use fewer discriminator layers "
                f"(--discriminator_layers)"
            )
        return self.main(images)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
