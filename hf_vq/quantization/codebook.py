"""The codebook: raw code vectors plus the optional affine or SimVQ re-parameterisation, trained by gradients or
by EMA statistics.

Everything outside this file sees only the *effective* codes (`Codebook.effective()`), and writes codes
only through `set_effective_codes`, which inverts the affine transform. That is what makes k-means
initialisation, dead-code replacement and the alternating step correct with affine codes (vqtorch
writes the raw weight, so a revived code does not land where it was meant to).
"""

from __future__ import annotations

import torch
from torch import nn

from .affine import RunningStatisticsAffine, _grouped, build_affine
from .config import AFFINE_MODES, CODEBOOK_UPDATES
from .ema import EMACodebookStatistics
from .simvq import LinearCodebookTransform

__all__ = ["AFFINE_MODES", "CODEBOOK_UPDATES", "Codebook"]  # the constants are re-exported from config.py

# Running-statistics codes depend on the statistics of all raw codes, so writing some codes shifts
# the group's statistics; fixed-point rounds (each shrinks the error geometrically) make the written
# codes land on their targets. Writing most of a group at once cannot be exact: its effective codes
# keep the encoder's mean and variance, and the rounds stop at the closest such codebook.
_RUNNING_INVERSE_MAX_ROUNDS = 25
_RUNNING_INVERSE_TOLERANCE = 1e-6


class Codebook(nn.Module):
    """`codebook_size` codes of `embed_dim` dimensions.

    affine: None, "learned" / "running" (per-dimension scale and shift, affine.py) or "linear" (SimVQ: raw codes
        frozen, one learned D x D matrix, simvq.py).
    codebook_update: "gradient" (the raw codes are a parameter trained by the optimizer) or "ema" (moving averages
        of the cluster means, ema.py; the raw codes then take no gradient).

    The options are not checked here: the quantizers check them all through `QuantizerConfig` before they build their
    codebook.
    """

    def __init__(
        self,
        codebook_size: int,
        embed_dim: int,
        affine: str | None = None,
        affine_groups: int = 1,
        affine_lr: float = 1.0,
        affine_momentum: float = 0.1,
        codebook_update: str = "gradient",
        ema_decay: float = 0.99,
    ):
        super().__init__()
        # The options are checked by QuantizerConfig (every quantizer builds one before its codebook).
        self.codebook_size = codebook_size
        self.embed_dim = embed_dim
        # SimVQ freezes the raw codes; EMA codes move by their statistics only. Both stay a Parameter (without
        # gradient) so that checkpoints and exports keep one layout.
        self.weight = nn.Parameter(
            torch.empty(codebook_size, embed_dim), requires_grad=affine != "linear" and codebook_update == "gradient"
        )
        self.affine = (
            LinearCodebookTransform(embed_dim)
            if affine == "linear"
            else build_affine(affine, embed_dim, affine_groups, affine_lr, affine_momentum)
        )
        self.ema = EMACodebookStatistics(codebook_size, embed_dim, ema_decay) if codebook_update == "ema" else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Standard normal raw codes (k-means, affine codes and replacement move them from there), and EMA statistics
        that start as clusters of size 1 at those codes. The affine transform initialises itself."""
        nn.init.normal_(self.weight)
        if self.ema is not None:
            self.ema.reset_statistics(self.weight.detach())

    @torch.no_grad()
    def ema_update(self, vectors: torch.Tensor, indices: torch.Tensor) -> None:
        """EMA codebooks only: fold this step's assignments into the statistics and move the codes."""
        self.ema.update(self.weight, vectors, indices)

    def effective(self) -> torch.Tensor:
        """The codes the quantizer searches and returns, (K, D), after the affine transform."""
        if self.affine is None:
            return self.weight
        if isinstance(self.affine, LinearCodebookTransform):
            return self.affine(self.weight)
        scale, shift = self.affine.scale_and_shift(self.weight)
        grouped = _grouped(self.weight, self.affine.num_groups)
        return (grouped * scale[:, None] + shift[:, None]).reshape(self.weight.shape)

    @torch.no_grad()
    def start_from(self, codes: torch.Tensor) -> None:
        """Make `codes` (K, D) the effective codebook with the re-parameterisation at the identity (affine scale 1
        and shift 0, SimVQ's matrix I) and EMA statistics of clusters of size 1 at the codes: how a pretrained
        codebook starts a fine-tuning run with affine codes, so that its first step reproduces the pretrained
        model exactly. Raises `ValueError` for a re-parameterisation that cannot hold `codes` unchanged."""
        if tuple(codes.shape) != tuple(self.weight.shape):
            raise ValueError(f"codes of shape {tuple(codes.shape)} for a codebook of {tuple(self.weight.shape)}")
        self.weight.copy_(codes.to(self.weight.dtype))
        if isinstance(self.affine, LinearCodebookTransform):
            self.affine.reset_parameters()
        elif self.affine is not None:
            self.affine.start_at_identity(self.weight)
        if self.ema is not None:
            self.ema.reset_statistics(self.weight.detach())

    def update_statistics(self, vectors: torch.Tensor) -> None:
        if isinstance(self.affine, RunningStatisticsAffine):
            self.affine.update(vectors)

    @torch.no_grad()
    def set_effective_codes(self, code_indices: torch.Tensor, targets: torch.Tensor) -> None:
        """Write raw codes so that the effective codes at `code_indices` equal `targets` (M, D)."""
        if self.ema is not None:
            self.ema.reset_codes(code_indices, targets)
        if self.affine is None:
            self.weight[code_indices] = targets.to(self.weight.dtype)
            return
        if isinstance(self.affine, LinearCodebookTransform):
            self.weight[code_indices] = self.affine.inverse(targets).to(self.weight.dtype)
            return
        group_of_code = code_indices // (self.codebook_size // self.affine.num_groups)
        rounds = _RUNNING_INVERSE_MAX_ROUNDS if isinstance(self.affine, RunningStatisticsAffine) else 1
        tolerance = _RUNNING_INVERSE_TOLERANCE * (1.0 + targets.abs().max())
        for _ in range(rounds):
            scale, shift = self.affine.scale_and_shift(self.weight)
            raw = (targets - shift[group_of_code]) / scale[group_of_code]
            self.weight[code_indices] = raw.to(self.weight.dtype)
            if rounds > 1 and (self.effective()[code_indices] - targets).abs().max() <= tolerance:
                break
