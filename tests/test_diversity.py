"""Within-class diversity of token grids (hf_vq/evaluation/diversity.py) and its place in GenerationMetrics."""

import itertools

import pytest
import torch

from hf_vq.evaluation import GenerationMetrics
from hf_vq.evaluation.diversity import WithinClassDiversity, diversity_ratio


def pairwise_by_hand(grids: torch.Tensor) -> float:
    shares = [float((a != b).float().mean()) for a, b in itertools.combinations(grids.reshape(len(grids), -1), 2)]
    return sum(shares) / len(shares)


def class_grids(generator: torch.Generator, label: int, count: int) -> torch.Tensor:
    """Grids whose codes lean towards a class-specific range, as real tokens of a class do."""
    return (torch.randint(0, 6, (count, 4, 4), generator=generator) + 5 * label) % 16


def test_equals_the_mean_over_pairs_by_hand():
    generator = torch.Generator().manual_seed(0)
    grids, labels = torch.randint(0, 3, (9, 2, 3), generator=generator), torch.tensor([0, 1, 0, 0, 1, 2, 0, 1, 1])
    metric = WithinClassDiversity(num_classes=3, codebook_size=3)
    metric.update(grids[:4], labels[:4])
    metric.update(grids[4:], labels[4:])  # counts add up over updates (and over processes: dist_reduce_fx="sum")
    expected = [pairwise_by_hand(grids[labels == c]) for c in (0, 1)]
    torch.testing.assert_close(metric.per_class()[:2], torch.tensor(expected, dtype=torch.float64))
    assert metric.per_class()[2].isnan()  # one grid: no pair
    assert float(metric.compute()) == pytest.approx(sum(expected) / 2)
    pooled = WithinClassDiversity(num_classes=1, codebook_size=3)
    pooled.update(grids)
    assert metric.pooled() == pytest.approx(pairwise_by_hand(grids)) == pytest.approx(float(pooled.compute()))


def test_real_grids_against_themselves_split_give_one_and_a_constant_generator_zero():
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(400) % 4
    grids = torch.stack([class_grids(generator, int(label), 1)[0] for label in labels])
    first, second, constant = (WithinClassDiversity(4, 16) for _ in range(3))
    first.update(grids[:200], labels[:200])
    second.update(grids[200:], labels[200:])
    constant.update(class_grids(torch.Generator().manual_seed(2), 0, 1).expand(200, 4, 4), labels[:200])
    assert diversity_ratio(second, first) == pytest.approx(1.0, abs=0.03)
    assert diversity_ratio(constant, first) == 0.0


def test_a_generator_that_copies_a_few_grids_per_class_scores_low():
    generator = torch.Generator().manual_seed(3)
    labels = torch.arange(200) % 2
    real, copies = WithinClassDiversity(2, 16), WithinClassDiversity(2, 16)
    real.update(torch.stack([class_grids(generator, int(label), 1)[0] for label in labels]), labels)
    few = {label: class_grids(generator, label, 2) for label in (0, 1)}  # two distinct grids per class
    copies.update(torch.stack([few[int(label)][(index // 2) % 2] for index, label in enumerate(labels)]), labels)
    assert 0.3 < diversity_ratio(copies, real) < 0.7  # half the pairs are identical copies


def test_generation_metrics_report_diversity_conditional_and_unconditional():
    generator = torch.Generator().manual_seed(4)
    labels = torch.arange(40) % 2
    real_grids = torch.stack([class_grids(generator, int(label), 1)[0] for label in labels])
    images = torch.zeros(40, 1, 8, 8)
    metrics = GenerationMetrics(codebook_size=16, num_classes=2)
    metrics.update_real(None, labels, real_grids)
    metrics.update_generated(images, labels, real_grids.flip(0))  # the same grids, other order: labels flip too
    result = metrics.compute()
    assert result["generated_diversity"] == pytest.approx(result["real_diversity"])
    assert result["diversity_ratio"] == pytest.approx(1.0)
    unconditional = GenerationMetrics(codebook_size=16, num_classes=2)
    unconditional.update_real(None, labels, real_grids)
    unconditional.update_generated(images, None, real_grids[:1].expand(40, 4, 4))
    assert unconditional.compute()["diversity_ratio"] == 0.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="num_classes and codebook_size must be >= 1"):
        WithinClassDiversity(0, 4)
    with pytest.raises(ValueError, match="got 2 token grids but 3 labels"):
        WithinClassDiversity(2, 4).update(torch.zeros(2, 2, 2, dtype=torch.long), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 1\].*from 0 to 2"):
        WithinClassDiversity(2, 4).update(torch.zeros(2, 2, 2, dtype=torch.long), torch.tensor([0, 2]))
