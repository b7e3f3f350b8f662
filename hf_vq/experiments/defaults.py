"""Per-architecture defaults of the paper reproduction (and of the comparison study's VQGAN backbone), each with the
reason it was chosen.

The ablation compares quantizer variants at a fixed budget, so everything here is shared by all six
variants of an architecture; only the switches of `methods.ablation_options` differ between them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# The ablation's variants and their options live beside the study's other methods; re-exported here, where they used
# to be defined.
from .methods import VARIANT_METHODS, ablation_options, method_options

__all__ = [
    "ARCHITECTURES",
    "STUDY_ARCHITECTURES",
    "TASK_ARCHITECTURES",
    "VARIANT_METHODS",
    "ArchitectureDefaults",
    "ablation_options",
]


@dataclass(frozen=True)
class ArchitectureDefaults:
    """Quantizer and optimiser settings shared by every variant of one architecture.

    Example:
        >>> ARCHITECTURES["alexnet"].codebook_size
        1024
    """

    task: str
    codebook_size: int
    embed_dim: int
    beta: float
    sync_nu: float
    affine_lr: float
    replace_freq: int
    learning_rate: float
    batch_size: int
    model_options: dict = field(default_factory=dict)
    # Set by the comparison study's methods (methods.py): a code space smaller than embed_dim (LlamaGen's low-
    # dimensional codes, FSQ) and FSQ's levels. None: the codes have embed_dim dimensions.
    code_dim: int | None = None
    fsq_levels: tuple[int, ...] | None = None

    def quantizer_options(self, variant: str) -> dict:
        """Quantizer keyword arguments (besides sizes) for ablation `variant` or a method of the comparison study."""
        return method_options(variant, self)

    def to_dict(self) -> dict:
        return asdict(self)


# Why these values (shared reasons first):
# - beta = 0.95: vqtorch's default for the convex commitment weighting; the codebook term dominates,
#   the encoder is only lightly pulled towards its codes (classic VQ-VAE weight b = 0.05).
# - codebook_size = 1024 for the classifiers: the paper's perplexities reach 600-750, so the codebook
#   must be larger than that for the ablation to show the effect; 512 for the autoencoder (the demo's
#   size), whose 7x7 grid of 64 images per batch gives ~3k vectors per step.
# - sync_nu = 0.2: inside the paper's 0.01-2 range and the value the demo uses too;
#   it is the same for every architecture so that "+sync" means one thing across the table.
# - affine_lr = 2 for the CNNs (low end of vqtorch's 2-10: the conv features are already on an O(1)
#   scale, so a fast scale/shift overshoots); 5 for the ViT, whose un-normalised residual stream drifts
#   more and the shared statistics must follow it faster.
# - replace_freq: a code is revived after this many consecutive batches unused. With thousands of
#   vectors per batch a live code is picked almost every step, so 20 steps (about 1% of the full run)
#   only catches codes that really died, and still revives them several times within a short run.
# - learning rates: Adam 2e-3 for the small CNNs and the autoencoder, 1e-3 for the ViT (attention is
#   less stable at high rates without warm-up). Batch 128 (64 for the autoencoder: its per-step cost is
#   dominated by the full-resolution decoder).
# - vqgan (the comparison study only, see vqgan_backbone.py): the `make demo` tokenizer, its config's model section
#   as it is (model_options replace single fields of it) and its config's sizes and optimiser: 512 codes of
#   embed_dim 8, batch 32, Adam 5e-4 (through the study's loop: constant rate, no warm-up, no EMA weights, like every
#   backbone). The config's quantizer recipe (Huh et al.'s four methods, k-means init, replacement every 100 steps) is
#   not used: as on the other backbones the codes start from the quantizer's N(0, 1) init without k-means, every
#   method sets its own options, and beta, sync_nu, affine_lr and the replace period are the shared values above
#   (the config's beta, nu and affine_lr are these already). Its codes are already 8-d, so l2_lowdim changes only the
#   distance (cosine) here; FSQ changes the code dim to its number of levels, as everywhere.
ARCHITECTURES: dict[str, ArchitectureDefaults] = {
    "alexnet": ArchitectureDefaults(
        task="classification",
        codebook_size=1024,
        embed_dim=64,
        beta=0.95,
        sync_nu=0.2,
        affine_lr=2.0,
        replace_freq=20,
        learning_rate=2e-3,
        batch_size=128,
        model_options={"width": 32},
    ),
    "resnet18": ArchitectureDefaults(
        task="classification",
        codebook_size=1024,
        embed_dim=64,
        beta=0.95,
        sync_nu=0.2,
        affine_lr=2.0,
        replace_freq=20,
        learning_rate=2e-3,
        batch_size=128,
        model_options={"width": 16},
    ),
    "vit": ArchitectureDefaults(
        task="classification",
        codebook_size=1024,
        embed_dim=64,
        beta=0.95,
        sync_nu=0.2,
        affine_lr=5.0,
        replace_freq=20,
        learning_rate=1e-3,
        batch_size=128,
        model_options={"depth": 4, "num_heads": 4},
    ),
    "autoencoder": ArchitectureDefaults(
        task="reconstruction",
        codebook_size=512,
        embed_dim=32,
        beta=0.95,
        sync_nu=0.2,
        affine_lr=2.0,
        replace_freq=20,
        learning_rate=2e-3,
        batch_size=64,
        model_options={"hidden": 64},
    ),
    "vqgan": ArchitectureDefaults(
        task="reconstruction",
        codebook_size=512,
        embed_dim=8,
        beta=0.95,
        sync_nu=0.2,
        affine_lr=2.0,
        replace_freq=20,
        learning_rate=5e-4,
        batch_size=32,
    ),
}

# The paper reproduction's architectures (Huh et al.'s Table 2 and the demo's autoencoder), by task.
TASK_ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "classification": ("alexnet", "resnet18", "vit"),
    "reconstruction": ("autoencoder",),
}
# The comparison study's backbones: those, and the demo's VQGAN tokenizer (not a model of the paper's ablation).
STUDY_ARCHITECTURES: tuple[str, ...] = (
    *TASK_ARCHITECTURES["classification"],
    *TASK_ARCHITECTURES["reconstruction"],
    "vqgan",
)
