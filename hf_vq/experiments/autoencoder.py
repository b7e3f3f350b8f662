"""A small convolutional VQ autoencoder for 28x28 (or 32x32) images, and its training loop.

This is the project's smallest end-to-end job: the demo trains it twice on Fashion-MNIST (plain
straight-through and the paper's methods) and compares reconstruction error, perplexity and codebook
usage. The full VQGAN tokenizer lives in hf_vq/models/vqgan.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..quantization.metrics import perplexity_and_usage
from .methods import make_quantizer


class ConvVQAutoencoder(nn.Module):
    """Conv encoder (stride 4) -> VectorQuantizer -> transposed-conv decoder.

    Example:
        >>> import torch
        >>> model = ConvVQAutoencoder(in_channels=1, embed_dim=16, codebook_size=64)
        >>> out = model(torch.randn(2, 1, 28, 28))
        >>> out["reconstruction"].shape, out["indices"].shape
        (torch.Size([2, 1, 28, 28]), torch.Size([2, 7, 7]))
    """

    def __init__(
        self,
        in_channels: int = 1,
        hidden: int = 64,
        embed_dim: int = 32,
        codebook_size: int = 256,
        **quantizer_options,
    ):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, embed_dim, 3, padding=1),
        )
        self.quantizer = make_quantizer(embed_dim, codebook_size, **quantizer_options)
        self.decoder = nn.Sequential(
            nn.Conv2d(embed_dim, hidden, 3, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(hidden, hidden, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(hidden, in_channels, 4, stride=2, padding=1),
        )

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        vq = self.quantizer(self.encoder(images))
        return {
            "reconstruction": self.decoder(vq.quantized),
            "indices": vq.indices,
            "vq_loss": vq.loss,
            "perplexity": vq.perplexity,
            "usage": vq.usage,
        }


@dataclass
class AutoencoderResult:
    """Test-set reconstruction error and codebook statistics of one trained autoencoder."""

    mse: float
    psnr: float
    perplexity: float
    usage: float
    train_seconds: float
    steps: int


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, 1, H, W) in [-1, 1]."""
    return torch.from_numpy(np.array(images, copy=True)).float().div(127.5).sub(1.0).unsqueeze(1)


def train_autoencoder(
    model: ConvVQAutoencoder,
    train_images: torch.Tensor,
    test_images: torch.Tensor,
    steps: int,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    seed: int = 0,
) -> AutoencoderResult:
    """Adam on MSE + the quantizer loss for `steps` batches, then evaluation on `test_images`."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        batch = train_images[torch.randint(len(train_images), (batch_size,), generator=generator)]
        out = model(batch)
        loss = F.mse_loss(out["reconstruction"], batch) + out["vq_loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    train_seconds = time.perf_counter() - start
    return AutoencoderResult(**evaluate_autoencoder(model, test_images), train_seconds=train_seconds, steps=steps)


@torch.no_grad()
def evaluate_autoencoder(model: ConvVQAutoencoder, images: torch.Tensor, batch_size: int = 1000) -> dict[str, float]:
    """MSE and PSNR (images in [-1, 1], so the peak-to-peak range is 2) and codebook statistics
    over the whole set: perplexity and usage from the code histogram of all test images."""
    model.eval()
    squared_error, counts = 0.0, torch.zeros(model.quantizer.codebook_size)
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        out = model(batch)
        squared_error += float(F.mse_loss(out["reconstruction"], batch, reduction="sum"))
        counts += torch.bincount(out["indices"].flatten(), minlength=counts.numel()).float()
    mse = squared_error / images.numel()
    perplexity, usage = perplexity_and_usage(counts)
    return {"mse": mse, "psnr": 10 * math.log10(4.0 / mse), "perplexity": float(perplexity), "usage": float(usage)}


__all__ = [
    "AutoencoderResult",
    "ConvVQAutoencoder",
    "asdict",
    "evaluate_autoencoder",
    "images_to_tensor",
    "train_autoencoder",
]
