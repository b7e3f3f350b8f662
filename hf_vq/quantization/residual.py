"""Residual quantization: each stage quantizes what the previous stages left over, and the output is
the sum of the stages' codes (SoundStream, RQ-VAE)."""

from __future__ import annotations

import torch

from .config import QuantizerConfig
from .registry import register_quantizer
from .vector_quantizer import QuantizerBase, VectorQuantizer, _Match, vector_options


@register_quantizer("residual")
class ResidualVectorQuantizer(QuantizerBase):
    """`num_quantizers` `VectorQuantizer` stages applied to successive residuals.

    Each stage runs its own k-means, replacement and alternating step on its own input (the residual
    after the stages before it, computed with their already-updated codes), so no stage works on a
    stale codebook. Indices get a trailing axis of size `num_quantizers`.

    Example:
        >>> import torch
        >>> from hf_vq.quantization import ResidualVectorQuantizer
        >>> vq = ResidualVectorQuantizer(embed_dim=8, codebook_size=16, num_quantizers=3, alternating=True)
        >>> vq(torch.randn(2, 8, 4, 4)).indices.shape
        torch.Size([2, 4, 4, 3])
    """

    def __init__(
        self,
        embed_dim: int,
        codebook_size: int,
        num_quantizers: int,
        beta: float = 0.95,
        sync_nu: float = 0.0,
        channel_dim: int = 1,
        gradient_estimator: str = "ste",
        **kwargs,
    ):
        # The gradient estimator acts on the whole output vector (all groups / the sum of the stages).
        config = QuantizerConfig(
            quantizer_type="residual",
            embed_dim=embed_dim,
            codebook_size=codebook_size,
            num_quantizers=num_quantizers,
            beta=beta,
            sync_nu=sync_nu,
            channel_dim=channel_dim,
            gradient_estimator=gradient_estimator,
            **kwargs,
        )  # validates every option, each error naming the fix
        super().__init__(embed_dim, beta, sync_nu, channel_dim, gradient_estimator)
        self.quantizer_config = config  # every option, validated
        self.codebook_size = codebook_size
        self.num_quantizers = num_quantizers
        self.stages = torch.nn.ModuleList(
            VectorQuantizer(embed_dim, codebook_size, beta=beta, channel_dim=-1, **kwargs)
            for _ in range(num_quantizers)
        )

    @classmethod
    def from_config(cls, config: QuantizerConfig) -> "ResidualVectorQuantizer":
        return cls(num_quantizers=config.num_quantizers, **vector_options(config))

    @property
    def codebook(self) -> torch.Tensor:
        """Effective codebooks, (num_quantizers, codebook_size, embed_dim)."""
        return torch.stack([stage.codebook for stage in self.stages])

    def _match(self, vectors: torch.Tensor) -> _Match:
        residual, codes, matches = vectors, torch.zeros_like(vectors), []
        for stage in self.stages:
            match = stage._match(residual)
            matches.append(match)
            codes = codes + match.codes
            residual = residual - match.codes.detach()
        return _Match.average(matches, vectors, codes)

    def _lookup(self, indices: torch.Tensor) -> torch.Tensor:
        if indices.ndim != 2 or indices.shape[1] != self.num_quantizers:
            raise ValueError(
                f"indices need a trailing axis of size {self.num_quantizers} (one per stage), "
                f"got shape {tuple(indices.shape)}"
            )
        return sum(stage._lookup(indices[:, s]) for s, stage in enumerate(self.stages))
