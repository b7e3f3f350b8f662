"""SimVQ (Zhu et al., 2024, "Addressing Representation Collapse in Vector Quantized Models with One Linear Layer").

The raw codebook C (K x D) is frozen at its random initialisation and the effective codebook is its image under
one learned linear map W (D x D):

    c_k = W c'_k        i.e.  codebook = C @ W^T

Only W is trained. Because every code is a function of the same W, a gradient reaching any selected code moves
the whole codebook (the full-matrix generalisation of the per-dimension affine codes of Huh et al.), so codes that
no vector selects still follow the encoder's distribution. W starts at the identity, so at step 0 the quantizer
is the plain one.

The map is invertible while W is, which is how k-means initialisation, dead-code replacement and the alternating
step write codes in the effective space (`inverse`): raw = targets @ W^{-T}.
"""

from __future__ import annotations

import torch
from torch import nn


class LinearCodebookTransform(nn.Module):
    """The learned D x D matrix W of SimVQ; `forward(raw)` returns `raw @ W^T`.

    Example:
        >>> import torch
        >>> transform = LinearCodebookTransform(4)
        >>> raw = torch.randn(8, 4)
        >>> torch.allclose(transform(raw), raw)  # the identity at initialisation
        True
    """

    def __init__(self, embed_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(embed_dim, embed_dim))
        self.reset_parameters()

    def forward(self, raw_codes: torch.Tensor) -> torch.Tensor:
        return raw_codes @ self.weight.t()

    @torch.no_grad()
    def inverse(self, targets: torch.Tensor) -> torch.Tensor:
        """Raw codes whose image is `targets` (M, D): solves raw @ W^T = targets in float64 for accuracy."""
        solution = torch.linalg.solve(self.weight.double(), targets.double().t()).t()
        return solution.to(targets.dtype)

    def reset_parameters(self) -> None:
        nn.init.eye_(self.weight)  # the identity: at step 0 the codebook is the raw one
