"""Grouped (product) quantization: the channels are split into groups, each quantized with its own
codebook, so G groups of K codes express K**G combinations at the cost of G * K codes."""

from __future__ import annotations

import torch

from .config import QuantizerConfig
from .registry import register_quantizer
from .vector_quantizer import QuantizerBase, VectorQuantizer, _Match, vector_options


@register_quantizer("grouped")
class GroupedVectorQuantizer(QuantizerBase):
    """`num_groups` independent `VectorQuantizer`s over equal slices of the channels.

    Every option of `VectorQuantizer` applies to each group (the alternating step, k-means and
    replacement run per group on that group's slice). Indices get a trailing axis of size `num_groups`.

    Example:
        >>> import torch
        >>> from hf_vq.quantization import GroupedVectorQuantizer
        >>> vq = GroupedVectorQuantizer(
        ...     embed_dim=8, codebook_size=16, num_groups=2, affine="learned", alternating=True
        ... )
        >>> vq(torch.randn(2, 8, 4, 4)).indices.shape
        torch.Size([2, 4, 4, 2])
    """

    def __init__(
        self,
        embed_dim: int,
        codebook_size: int,
        num_groups: int,
        beta: float = 0.95,
        sync_nu: float = 0.0,
        channel_dim: int = 1,
        gradient_estimator: str = "ste",
        **kwargs,
    ):
        # The gradient estimator acts on the whole output vector (all groups / the sum of the stages).
        config = QuantizerConfig(
            quantizer_type="grouped",
            embed_dim=embed_dim,
            codebook_size=codebook_size,
            num_groups=num_groups,
            beta=beta,
            sync_nu=sync_nu,
            channel_dim=channel_dim,
            gradient_estimator=gradient_estimator,
            **kwargs,
        )  # validates every option, each error naming the fix
        super().__init__(embed_dim, beta, sync_nu, channel_dim, gradient_estimator)
        self.quantizer_config = config  # every option, validated
        self.codebook_size = codebook_size
        self.num_groups = num_groups
        self.groups = torch.nn.ModuleList(
            VectorQuantizer(embed_dim // num_groups, codebook_size, beta=beta, channel_dim=-1, **kwargs)
            for _ in range(num_groups)
        )

    @classmethod
    def from_config(cls, config: QuantizerConfig) -> "GroupedVectorQuantizer":
        return cls(num_groups=config.num_groups, **vector_options(config))

    @property
    def codebook(self) -> torch.Tensor:
        """Effective codebooks, (num_groups, codebook_size, embed_dim // num_groups)."""
        return torch.stack([group.codebook for group in self.groups])

    def _match(self, vectors: torch.Tensor) -> _Match:
        slices = vectors.split(self.embed_dim // self.num_groups, dim=1)
        matches = [group._match(part) for group, part in zip(self.groups, slices)]
        inputs = torch.cat([m.inputs for m in matches], dim=1)
        codes = torch.cat([m.codes for m in matches], dim=1)
        return _Match.average(matches, inputs, codes)

    def _lookup(self, indices: torch.Tensor) -> torch.Tensor:
        self._check_stage_axis(indices, self.num_groups, "groups")
        return torch.cat([group._lookup(indices[:, g]) for g, group in enumerate(self.groups)], dim=1)

    def _check_stage_axis(self, indices: torch.Tensor, expected: int, what: str) -> None:
        if indices.ndim != 2 or indices.shape[1] != expected:
            raise ValueError(
                f"indices need a trailing axis of size {expected} (one per {what}), got shape {tuple(indices.shape)}"
            )
