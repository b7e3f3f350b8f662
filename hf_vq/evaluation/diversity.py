"""Within-class diversity of token grids: how different the samples of one class are from each other.

A class-conditional prior can score a high conditional accuracy and a fair FID while drawing near-copies of a few
images per class; guidance and low temperature push it that way. The measure here is the mean, over pairs of grids of
the same class, of the share of positions where their tokens differ, averaged over classes. Generated grids are
compared with real ones through the ratio of the two: 1.0 is as diverse as the data, 0 is one grid per class.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


class WithinClassDiversity(Metric):
    r"""Mean pairwise share of differing tokens between grids of the same class.

    For class `c` with `N_c` grids and `n_{c,p,k}` of them holding code `k` at position `p`, the mean over pairs of
    grids of the share of differing positions is `1 - mean_p sum_k n_{c,p,k} (n_{c,p,k} - 1) / (N_c (N_c - 1))`: exact,
    from per-position code counts, so memory does not grow with the number of grids and counts add up across
    processes. `compute()` averages it over the classes that have at least two grids; `per_class()` gives each.
    Labels `None` put every grid in class 0 (an unconditional prior).

    Example:

    ```python
    >>> import torch
    >>> diversity = WithinClassDiversity(num_classes=2, codebook_size=4)
    >>> diversity.update(torch.tensor([[[0, 1]], [[0, 2]], [[3, 3]], [[3, 3]]]), torch.tensor([0, 0, 1, 1]))
    >>> diversity.per_class().tolist(), round(float(diversity.compute()), 3)
    ([0.5, 0.0], 0.25)

    ```
    """

    full_state_update = False

    def __init__(self, num_classes: int, codebook_size: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_classes < 1 or codebook_size < 1:
            raise ValueError(f"num_classes and codebook_size must be >= 1, got {num_classes} and {codebook_size}")
        self.num_classes, self.codebook_size = num_classes, codebook_size
        self.add_state("grids", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        # (classes, positions, codes), allocated at the first update, when the grid size is known.
        self.add_state("counts", default=torch.zeros(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, image_tokens: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        tokens = image_tokens.reshape(image_tokens.shape[0], -1).long()
        labels = torch.zeros(tokens.shape[0], dtype=torch.long) if labels is None else labels.long().reshape(-1)
        labels = labels.to(tokens.device)
        if labels.shape[0] != tokens.shape[0]:
            raise ValueError(f"got {tokens.shape[0]} token grids but {labels.shape[0]} labels")
        if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < self.num_classes:
            raise ValueError(
                f"labels must be class ids in [0, {self.num_classes - 1}] (num_classes={self.num_classes}), got "
                f"values from {int(labels.min())} to {int(labels.max())}"
            )
        if self.counts.numel() == 0:
            self.counts = torch.zeros(
                self.num_classes, tokens.shape[1], self.codebook_size, dtype=torch.long, device=tokens.device
            )
        positions = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
        flat = (labels[:, None] * tokens.shape[1] + positions) * self.codebook_size + tokens
        self.counts += torch.bincount(flat.reshape(-1), minlength=self.counts.numel()).reshape(self.counts.shape)
        self.grids += torch.bincount(labels, minlength=self.num_classes)

    def per_class(self) -> torch.Tensor:
        """Diversity of each class; NaN for a class with fewer than two grids."""
        if self.counts.numel() == 0:
            return torch.full((self.num_classes,), float("nan"), dtype=torch.float64)
        return _diversity(self.counts.double(), self.grids.double())

    def pooled(self) -> float:
        """Diversity of all grids taken as one class (to compare an unconditional prior with labelled data)."""
        if self.counts.numel() == 0:
            return float("nan")
        return float(
            _diversity(self.counts.double().sum(dim=0, keepdim=True), self.grids.double().sum(dim=0)[None])[0]
        )

    def compute(self) -> torch.Tensor:
        values = self.per_class()
        values = values[~values.isnan()]
        return values.mean() if values.numel() else torch.tensor(float("nan"), dtype=torch.float64)


def _diversity(counts: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    """Per class: 1 - (ordered pairs of grids that agree at a position, averaged over positions) / (ordered pairs)."""
    same = (counts * (counts - 1)).sum(dim=-1).mean(dim=-1)
    pairs = grids * (grids - 1)
    return torch.where(pairs > 0, 1 - same / pairs.clamp(min=1), torch.full_like(pairs, float("nan")))


def diversity_ratio(generated: WithinClassDiversity, real: WithinClassDiversity, pooled: bool = False) -> float:
    """Generated over real diversity, over the classes measured in both (1.0: as diverse as the data); `pooled`
    compares all grids as one class (an unconditional prior's samples against labelled data)."""
    if pooled:
        real_value = real.pooled()
        return generated.pooled() / real_value if real_value > 0 else float("nan")
    generated_values, real_values = generated.per_class(), real.per_class()
    both = ~generated_values.isnan() & ~real_values.isnan() & (real_values > 0)
    if not both.any():
        return float("nan")
    return float(generated_values[both].mean() / real_values[both].mean())


__all__ = ["WithinClassDiversity", "diversity_ratio"]
