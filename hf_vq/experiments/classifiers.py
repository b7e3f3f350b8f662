"""Image classifiers with a vector-quantization bottleneck in the middle, as in Huh et al. (2023), Table 2.

The paper measures how well a VQ layer can be *optimised* by putting one inside an otherwise ordinary
classifier: every image is forced through a discrete code per spatial position (or token), and test
accuracy tells how much information the codebook lets through. Three families, all sized for 28x28
(Fashion-MNIST) and 32x32 (CIFAR-10) inputs and small enough to train on a CPU:

- `AlexNetVQ`: five convolutions and three fully connected layers (AlexNet's shape, narrower).
- `ResNet18VQ`: the 18-layer residual network (BasicBlocks [2, 2, 2, 2]) with a CIFAR-style 3x3 stem and
  no max-pool; `width` sets the first stage's channels (64 in the original; 16 by default here).
- `ViTVQ`: a small vision transformer on 4x4 patches with mean-pooled tokens.

Each forward returns a dict with the logits and the quantizer's loss, perplexity, usage and indices.
"""

from __future__ import annotations

import torch
from torch import nn

from ..quantization import VectorQuantizerOutput
from .methods import make_quantizer


def _classifier_output(logits: torch.Tensor, vq: VectorQuantizerOutput) -> dict[str, torch.Tensor]:
    return {
        "logits": logits,
        "vq_loss": vq.loss,
        "perplexity": vq.perplexity,
        "usage": vq.usage,
        "indices": vq.indices,
    }


class AlexNetVQ(nn.Module):
    """AlexNet-style CNN (5 conv + 3 FC) with a VQ layer on the feature map after the third convolution.

    The VQ sits at the middle of the conv stack, on `embed_dim` channels at 1/4 of the input resolution
    (7x7 for 28x28 inputs, 8x8 for 32x32), so each image becomes a small grid of codes.

    Example:
        >>> import torch
        >>> model = AlexNetVQ(in_channels=1, num_classes=10, embed_dim=32, codebook_size=64, width=16)
        >>> out = model(torch.randn(2, 1, 28, 28))
        >>> out["logits"].shape, out["indices"].shape
        (torch.Size([2, 10]), torch.Size([2, 7, 7]))
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        embed_dim: int = 64,
        codebook_size: int = 1024,
        width: int = 32,
        **quantizer_options,
    ):
        super().__init__()
        self.before = nn.Sequential(
            nn.Conv2d(in_channels, width, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, embed_dim, 3, padding=1),
        )
        self.quantizer = make_quantizer(embed_dim, codebook_size, **quantizer_options)
        self.after = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(embed_dim, 4 * width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4 * width, 4 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d(3),
            nn.Flatten(),
            nn.Linear(4 * width * 9, 8 * width),
            nn.ReLU(),
            nn.Linear(8 * width, 8 * width),
            nn.ReLU(),
            nn.Linear(8 * width, num_classes),
        )

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        vq = self.quantizer(self.before(images))
        return _classifier_output(self.after(vq.quantized), vq)


class BasicBlock(nn.Module):
    """ResNet's two-convolution residual block, with a 1x1 projection when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def _stage(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(in_channels, out_channels, stride), BasicBlock(out_channels, out_channels))


class ResNet18VQ(nn.Module):
    """ResNet-18 (CIFAR stem) with a VQ layer between the second and the third stage.

    The second stage's output (2 * width channels at 1/2 resolution) is projected to `embed_dim` by a
    1x1 convolution, quantized, and projected back; the projection keeps the codebook's dimension
    independent of the network width, and quantizing the pre-activation (not the post-ReLU block
    output) keeps the vectors centred, as for the other two families.

    Example:
        >>> import torch
        >>> model = ResNet18VQ(in_channels=3, num_classes=10, embed_dim=32, codebook_size=64, width=8)
        >>> out = model(torch.randn(2, 3, 32, 32))
        >>> out["logits"].shape, out["indices"].shape
        (torch.Size([2, 10]), torch.Size([2, 16, 16]))
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        embed_dim: int = 64,
        codebook_size: int = 1024,
        width: int = 16,
        **quantizer_options,
    ):
        super().__init__()
        self.before = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            _stage(width, width, 1),
            _stage(width, 2 * width, 2),
            nn.Conv2d(2 * width, embed_dim, 1),
        )
        self.quantizer = make_quantizer(embed_dim, codebook_size, **quantizer_options)
        self.after = nn.Sequential(
            nn.Conv2d(embed_dim, 2 * width, 1),
            nn.ReLU(),
            _stage(2 * width, 4 * width, 2),
            _stage(4 * width, 8 * width, 2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8 * width, num_classes),
        )

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        vq = self.quantizer(self.before(images))
        return _classifier_output(self.after(vq.quantized), vq)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: self-attention and an MLP, each with a residual connection."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.mlp = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim)
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        normed = self.attention_norm(tokens)
        tokens = tokens + self.attention(normed, normed, normed, need_weights=False)[0]
        return tokens + self.mlp(tokens)


class ViTVQ(nn.Module):
    """A small ViT on 4x4 patches with a VQ layer on the tokens after half of the blocks.

    Tokens are quantized along their feature axis (`channel_dim=-1`), so each patch position becomes
    one code. 28x28 inputs give 7x7 tokens, 32x32 inputs 8x8. Classification reads the mean token.

    Example:
        >>> import torch
        >>> model = ViTVQ(in_channels=1, num_classes=10, image_size=28, dim=32, depth=2, num_heads=2, codebook_size=64)
        >>> out = model(torch.randn(2, 1, 28, 28))
        >>> out["logits"].shape, out["indices"].shape
        (torch.Size([2, 10]), torch.Size([2, 49]))
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        patch_size: int = 4,
        dim: int = 64,
        depth: int = 4,
        num_heads: int = 4,
        codebook_size: int = 1024,
        code_dim: int | None = None,
        **quantizer_options,
    ):
        super().__init__()
        if image_size % patch_size != 0:
            raise ValueError(f"image_size={image_size} must be a multiple of patch_size={patch_size}")
        num_tokens = (image_size // patch_size) ** 2
        self.patch_embedding = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.position_embedding = nn.Parameter(torch.randn(1, num_tokens, dim) * 0.02)
        self.blocks_before = nn.Sequential(*(TransformerBlock(dim, num_heads) for _ in range(depth // 2)))
        # code_dim < dim: the codes live in a smaller space, between two linear projections (methods.py).
        self.quantizer = make_quantizer(
            code_dim or dim, codebook_size, channel_dim=-1, model_dim=dim, **quantizer_options
        )
        self.blocks_after = nn.Sequential(*(TransformerBlock(dim, num_heads) for _ in range(depth - depth // 2)))
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.patch_embedding(images).flatten(2).transpose(1, 2) + self.position_embedding
        vq = self.quantizer(self.blocks_before(tokens))
        logits = self.head(self.blocks_after(vq.quantized).mean(dim=1))
        return _classifier_output(logits, vq)


CLASSIFIERS: dict[str, type[nn.Module]] = {"alexnet": AlexNetVQ, "resnet18": ResNet18VQ, "vit": ViTVQ}
