"""The quantizer variants of the paper's ablation (Huh et al. 2023, Table 2), as VectorQuantizer options.

Each variant switches on one method on top of plain straight-through training; "all" switches on all
four. Shared settings (codebook size, beta, ...) come from the caller, so every variant trains with
the same budget and seeds.
"""

from __future__ import annotations

# Why these values: nu = 0.2 sits in the paper's recommended 0.01-2 range and matched vqtorch's
# examples; affine_lr = 2 is the low end of vqtorch's 2-10, safe for small models; replacement every
# 20 steps revives codes quickly in short runs while leaving codes time to be picked.
SYNC_NU = 0.2
AFFINE_LR = 2.0
REPLACE_FREQ = 20

VARIANTS: dict[str, dict] = {
    "baseline": {},
    "affine": {"affine": "learned", "affine_lr": AFFINE_LR},
    "sync": {"sync_nu": SYNC_NU},
    "alternating": {"alternating": True},
    "replace": {"replace_freq": REPLACE_FREQ},
    "all": {
        "affine": "learned",
        "affine_lr": AFFINE_LR,
        "sync_nu": SYNC_NU,
        "alternating": True,
        "replace_freq": REPLACE_FREQ,
    },
}


def variant_options(name: str, **shared) -> dict:
    """VectorQuantizer keyword arguments for variant `name`, on top of the `shared` ones."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose from {sorted(VARIANTS)}")
    return {**shared, **VARIANTS[name]}
