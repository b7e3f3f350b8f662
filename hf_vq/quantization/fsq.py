"""Finite scalar quantization (Mentzer et al., 2023, "Finite Scalar Quantization: VQ-VAE Made Simple").

No codebook: each of the d = len(levels) channels is bounded to L_i values and rounded,

    bound(z)_i = tanh(z_i + shift_i) * half_i - offset_i,
    half_i = (L_i - 1)(1 + eps) / 2,  offset_i = 0.5 if L_i is even else 0,  shift_i = atanh(offset_i / half_i),
    q_i = round(bound(z)_i) / floor(L_i / 2)              (straight-through rounding)

so q lies on a grid of prod(L_i) points in [-1, 1]^d (the implicit codebook). A grid point's index is its mixed-
radix number: index = sum_i (q_i * floor(L_i / 2) + floor(L_i / 2)) * prod_{j < i} L_j. There is no codebook to
collapse, no loss (it is returned as zero) and nothing to synchronise across processes.
"""

from __future__ import annotations

import math

import torch

from .config import QuantizerConfig
from .distributed import all_reduce_sum
from .metrics import code_counts as count_codes
from .metrics import perplexity_and_usage
from .registry import register_quantizer
from .vector_quantizer import QuantizerBase, _Match

EPS = 1e-3


@register_quantizer("fsq")
class FiniteScalarQuantizer(QuantizerBase):
    """FSQ with `levels[i]` values on channel i; the same output fields as `VectorQuantizer`.

    Args:
        levels: number of values per channel (each >= 2); embed_dim = len(levels), codebook_size = prod(levels).
        channel_dim: axis of the input holding the len(levels) channels (1 for (B, C, H, W)).

    Example:
        >>> import torch
        >>> from hf_vq.quantization import FiniteScalarQuantizer
        >>> fsq = FiniteScalarQuantizer(levels=[8, 5, 5, 5])
        >>> out = fsq(torch.randn(2, 4, 3, 3))
        >>> fsq.codebook_size, out.indices.shape, float(out.loss)
        (1000, torch.Size([2, 3, 3]), 0.0)
        >>> torch.equal(fsq.get_codebook_entry(out.indices), out.quantized)
        True
    """

    def __init__(self, levels: list[int] | tuple[int, ...], channel_dim: int = 1):
        levels = list(levels)
        config = QuantizerConfig(quantizer_type="fsq", fsq_levels=levels, channel_dim=channel_dim)  # checks levels
        super().__init__(len(levels), beta=0.0, sync_nu=0.0, channel_dim=channel_dim)
        self.quantizer_config = config  # every option, validated
        self.levels = levels
        self.codebook_size = math.prod(levels)
        # Constants built from the Python list on use, not buffers: a checkpoint then holds no FSQ entries, and
        # loading (which re-initialises buffers that a checkpoint lacks) cannot overwrite them.

    @classmethod
    def from_config(cls, config: QuantizerConfig) -> "FiniteScalarQuantizer":
        return cls(config.fsq_levels, channel_dim=config.channel_dim)

    def _levels(self, device: torch.device) -> torch.Tensor:
        return torch.tensor(self.levels, dtype=torch.float32, device=device)

    def _half_width(self, device: torch.device) -> torch.Tensor:
        return torch.floor(self._levels(device) / 2)

    def _basis(self, device: torch.device) -> torch.Tensor:
        """Place value of each channel's digit: prod(L_j) for j < i."""
        return torch.tensor([math.prod(self.levels[:i]) for i in range(len(self.levels))], device=device)

    @property
    def _index_depth(self) -> int:
        return 0

    @property
    def codebook(self) -> torch.Tensor:
        """The implicit codebook: every grid point, (codebook_size, len(levels)), row k = code of index k."""
        return self._lookup(torch.arange(self.codebook_size))

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash each channel into the range that rounds to its L_i integer values."""
        levels = self._levels(z.device)
        half = (levels - 1) * (1 + EPS) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def _match(self, vectors: torch.Tensor) -> _Match:
        half_width = self._half_width(vectors.device)
        bounded = self.bound(vectors) / half_width  # the differentiable input of the rounding, in [-1, 1]
        codes = torch.round(self.bound(vectors.detach())) / half_width
        indices = self._codes_to_indices(codes)
        counts = count_codes(indices, self.codebook_size)
        if self.training:  # usage over all processes, as VectorQuantizer reports it
            counts = all_reduce_sum(counts)
        perplexity, usage = perplexity_and_usage(counts)
        zero = vectors.new_zeros(())
        return _Match(bounded, codes, indices, zero, zero, zero, perplexity, usage)

    def _codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        half_width = self._half_width(codes.device)
        digits = torch.round(codes * half_width + half_width).long()
        return (digits * self._basis(codes.device)).sum(dim=-1)

    def _lookup(self, indices: torch.Tensor) -> torch.Tensor:
        self._check_indices(indices, self.codebook_size)
        half_width = self._half_width(indices.device)
        digits = (indices[:, None] // self._basis(indices.device)) % self._levels(indices.device).long()
        return (digits.float() - half_width) / half_width
