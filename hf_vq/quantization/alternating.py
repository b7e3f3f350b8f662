"""Idea 2 of Huh et al. (2023): alternating optimisation.

The straight-through gradient is least wrong when the codebook has first been moved towards the
current assignments, and only then is the rest of the network updated with the codes fixed. Inside
the forward pass, after the nearest-code search and before the codes are looked up, each selected
code takes one step towards the mean of the encoder vectors assigned to it (sums and counts from all
ranks); assignments are kept.

The step is taken in the *effective* codebook space and written back through the inverse affine
transform, so it is exact with learned or running-statistics affine codes, and it runs inside each
stage of grouped and residual quantizers on that stage's own input, so no stage updates a stale
codebook. (vqtorch takes an inner optimiser step on the raw weight, which raises with affine codes and
grouped/residual quantizers.) A step size of 1 is a full Lloyd (k-means) update of the selected codes;
for a raw codebook the step is one SGD step on ||sg(z) - c||^2 with a per-code learning rate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .codebook import Codebook
from .distributed import all_reduce_sum


@torch.no_grad()
def alternating_codebook_step(
    codebook: Codebook,
    vectors: torch.Tensor,
    indices: torch.Tensor,
    step_size: float,
    normalize: bool = False,
) -> None:
    """Move each selected code `step_size` of the way towards the mean of its assigned `vectors`."""
    num_codes = codebook.codebook_size
    sums = all_reduce_sum(
        torch.zeros(num_codes, vectors.shape[1], device=vectors.device).index_add_(0, indices, vectors.float())
    )
    counts = all_reduce_sum(torch.bincount(indices, minlength=num_codes).float())
    selected = torch.nonzero(counts > 0).flatten()
    if selected.numel() == 0:
        return
    current = codebook.effective()[selected]
    if normalize:
        current = F.normalize(current, dim=-1)
    means = sums[selected] / counts[selected, None]
    targets = current.lerp(means, step_size)
    if normalize:
        targets = F.normalize(targets, dim=-1)
    codebook.set_effective_codes(selected, targets)
