"""Idea 1 of Huh et al. (2023): affine re-parameterisation of the code vectors.

The effective codebook is c_k = scale * c'_k + shift, with one scale and one shift vector per feature
dimension shared by a whole group of codes. Because every code in the group moves when the shared
statistics move, codes that no encoder vector selects still follow the embedding distribution
instead of being left behind (the main cause of codebook collapse under straight-through training).

Two ways to obtain scale and shift:

- `LearnedAffine`: scale = 1 + lr * s and shift = lr * b with parameters s, b initialised to zero (the
  identity); `lr` (vqtorch's `affine_lr`) scales their effective learning rate.
- `RunningStatisticsAffine`: scale = sqrt(var(z) / var(c')) and shift = mean(z) - scale * mean(c'),
  where mean(z) and var(z) are exponential moving averages of the encoder output tracked during
  training and frozen at inference, and mean(c'), var(c') are the raw codes' statistics per group.

Both transforms can be inverted, which is how the rest of the quantizer writes codes *in the effective
space* (k-means initialisation, dead-code replacement, the alternating codebook step).
"""

from __future__ import annotations

import torch
from torch import nn

from .distributed import all_reduce_sum

EPS = 1e-6


def _grouped(codes: torch.Tensor, num_groups: int) -> torch.Tensor:
    """(K, D) -> (num_groups, K / num_groups, D): consecutive codes share one affine transform."""
    return codes.reshape(num_groups, -1, codes.shape[-1])


class LearnedAffine(nn.Module):
    """Learned per-dimension scale and shift, the identity at initialisation."""

    def __init__(self, embed_dim: int, num_groups: int = 1, lr: float = 1.0):
        super().__init__()
        self.num_groups = num_groups
        self.lr = lr
        self.scale = nn.Parameter(torch.zeros(num_groups, embed_dim))
        self.shift = nn.Parameter(torch.zeros(num_groups, embed_dim))

    def scale_and_shift(self, raw_codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per group (G, D) scale and shift."""
        return 1.0 + self.lr * self.scale, self.lr * self.shift

    def update(self, vectors: torch.Tensor) -> None:
        """Learned transforms change through the optimizer only."""

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.scale)
        nn.init.zeros_(self.shift)

    @torch.no_grad()
    def start_at_identity(self, raw_codes: torch.Tensor) -> None:
        """Scale 1 and shift 0: the effective codebook is `raw_codes`."""
        self.reset_parameters()


class RunningStatisticsAffine(nn.Module):
    """Scale and shift that match the codes' statistics to running statistics of the encoder output."""

    def __init__(self, embed_dim: int, num_groups: int = 1, momentum: float = 0.1):
        super().__init__()
        self.num_groups = num_groups
        self.momentum = momentum
        self.register_buffer("running_mean", torch.zeros(embed_dim))
        self.register_buffer("running_var", torch.ones(embed_dim))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def scale_and_shift(self, raw_codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code_mean, code_var = self._code_statistics(raw_codes)
        scale = torch.sqrt(self.running_var + EPS) / torch.sqrt(code_var + EPS)
        return scale, self.running_mean - scale * code_mean

    def _code_statistics(self, raw_codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per group (G, D) mean and variance of the raw codes."""
        grouped = _grouped(raw_codes, self.num_groups)
        code_mean = grouped.mean(dim=1)
        # Two-pass variance: as accurate as Tensor.var, whose reduction over this middle axis runs about
        # 15x slower on CPU; it is evaluated every forward and in every round of set_effective_codes.
        code_var = (grouped - code_mean[:, None]).square().mean(dim=1)
        return code_mean, code_var

    @torch.no_grad()
    def start_at_identity(self, raw_codes: torch.Tensor) -> None:
        """Running statistics equal to the codes' own, so that scale is exactly 1 and shift exactly 0: the effective
        codebook is `raw_codes` (a pretrained codebook kept as it is). They then count as one update already, so
        the first training batch is folded in with the momentum instead of replacing them.

        Only one group can start so: every group's effective codes take the same running mean and variance, which a
        codebook whose groups differ in their statistics does not have."""
        if self.num_groups != 1:
            raise ValueError(
                f"affine='running' with affine_groups={self.num_groups} cannot start from a given codebook "
                "unchanged (all groups take the same running statistics): use affine_groups=1 or affine='learned'"
            )
        code_mean, code_var = self._code_statistics(raw_codes)
        self.running_mean.copy_(code_mean[0])
        self.running_var.copy_(code_var[0])
        self.num_updates.fill_(1)

    @torch.no_grad()
    def update(self, vectors: torch.Tensor) -> None:
        """Fold the statistics of one batch of encoder vectors (N, D), summed over all ranks, into the
        moving averages. The first batch sets them directly so that early steps are not biased to 0/1."""
        count = all_reduce_sum(torch.tensor(float(vectors.shape[0]), device=vectors.device))
        total = all_reduce_sum(vectors.sum(dim=0))
        total_sq = all_reduce_sum(vectors.pow(2).sum(dim=0))
        mean = total / count
        var = (total_sq / count - mean.pow(2)).clamp_min(0)
        momentum = 1.0 if int(self.num_updates) == 0 else self.momentum
        self.running_mean.lerp_(mean, momentum)
        self.running_var.lerp_(var, momentum)
        self.num_updates += 1

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.running_mean)
        nn.init.ones_(self.running_var)
        nn.init.zeros_(self.num_updates)


def build_affine(mode: str | None, embed_dim: int, num_groups: int, lr: float, momentum: float) -> nn.Module | None:
    if mode is None:
        return None
    if mode == "learned":
        return LearnedAffine(embed_dim, num_groups, lr)
    if mode == "running":
        return RunningStatisticsAffine(embed_dim, num_groups, momentum)
    raise ValueError(f"unknown affine mode {mode!r}; use None, 'learned' or 'running'")
