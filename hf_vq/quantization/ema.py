"""EMA codebook updates (van den Oord et al. 2017, appendix; VQ-VAE-2; SoundStream), the most used baseline.

The codebook is not trained by gradients. Each training step, with n_k the number of vectors assigned to code k
and s_k their sum (over all processes),

    N_k <- decay * N_k + (1 - decay) * n_k          (cluster sizes)
    m_k <- decay * m_k + (1 - decay) * s_k          (cluster sums)
    c_k  = m_k / N~_k,   N~_k = (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j   (Laplace smoothing)

so each code is an exponential moving average of the mean of its cluster (online k-means). The smoothing keeps
N~_k > 0 for a code that is never picked. Dead codes are restarted by the quantizer's dead-code replacement
(`replace_freq`): every code written from outside (k-means, replacement) gets its statistics reset through
`reset_codes`, to a cluster of size 1 holding the new code, as in SoundStream / vector-quantize-pytorch.
"""

from __future__ import annotations

import torch
from torch import nn

from .distributed import all_reduce_sum


class EMACodebookStatistics(nn.Module):
    """Cluster sizes N_k and sums m_k of an EMA codebook, and the update that turns them into codes.

    Example:
        >>> import torch
        >>> stats = EMACodebookStatistics(codebook_size=4, embed_dim=2, decay=0.9)
        >>> codes = torch.zeros(4, 2)
        >>> stats.reset_codes(torch.arange(4), codes)
        >>> stats.update(codes, torch.ones(3, 2), torch.tensor([1, 1, 1]))
        >>> codes[1]  # a tenth of the way (1 - decay) towards the cluster mean (1, 1), in weight terms
        tensor([0.2500, 0.2500])
    """

    def __init__(self, codebook_size: int, embed_dim: int, decay: float = 0.99, eps: float = 1e-5):
        super().__init__()
        self.decay = decay
        self.eps = eps
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("cluster_sum", torch.zeros(codebook_size, embed_dim))

    @torch.no_grad()
    def update(self, codes: torch.Tensor, vectors: torch.Tensor, indices: torch.Tensor) -> None:
        """Fold this step's assignments (from all processes) into the statistics and write the codes in place."""
        num_codes = self.cluster_size.shape[0]
        # Statistics initialised without their codes (see reset_parameters) start here as clusters at the codes.
        absent = self.cluster_sum.isnan()
        self.cluster_sum.copy_(torch.where(absent, codes.to(self.cluster_sum.dtype), self.cluster_sum))
        counts = all_reduce_sum(torch.bincount(indices, minlength=num_codes).float())
        sums = all_reduce_sum(torch.zeros_like(self.cluster_sum).index_add_(0, indices, vectors.float()))
        self.cluster_size.lerp_(counts, 1.0 - self.decay)
        self.cluster_sum.lerp_(sums, 1.0 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + num_codes * self.eps) * total
        codes.copy_((self.cluster_sum / smoothed[:, None]).to(codes.dtype))

    @torch.no_grad()
    def reset_codes(self, code_indices: torch.Tensor, codes: torch.Tensor) -> None:
        """Codes written from outside start a fresh cluster of size 1 at their new position."""
        self.cluster_size[code_indices] = 1.0
        self.cluster_sum[code_indices] = codes.to(self.cluster_sum.dtype)

    @torch.no_grad()
    def reset_statistics(self, codes: torch.Tensor) -> None:
        """Every code a cluster of size 1 at `codes` (K, D), the codebook's initial codes (the owning `Codebook`
        calls this when it initialises its codes)."""
        nn.init.ones_(self.cluster_size)
        self.cluster_sum.copy_(codes.to(self.cluster_sum.dtype))

    def reset_parameters(self) -> None:
        """Statistics without their codes, which this module does not hold: clusters of size 1 whose sums are NaN,
        which the next `update` replaces by the codes it is given. A model loading a checkpoint that has the codes
        but lacks these statistics calls this."""
        nn.init.ones_(self.cluster_size)
        nn.init.constant_(self.cluster_sum, float("nan"))
