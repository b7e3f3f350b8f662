"""Loading a converted state dict into a freshly built VQGANModel, every tensor accounted for."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

# hf_vq's quantizer state that no other format has: k-means done (True: the codebook is trained) and the dead-code
# counters (zero). A freshly built model holds exactly these values.
HF_VQ_ONLY_BUFFERS = ("quantize.initialized", "quantize.steps_since_used")


def load_converted_weights(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    initialized_prefixes: tuple[str, ...] = (),
) -> nn.Module:
    """Copy `state_dict` (already in VQGANModel's names) into `model`, refusing any tensor left over or missing and
    any shape that differs: a converter that dropped or misplaced a weight must fail here, not give other outputs.
    Tensors under `initialized_prefixes` (e.g. "decoder." of a source without a decoder) are the one exception: the
    caller asked for them to keep `model`'s fresh initialisation, so they must be absent from `state_dict`.
    Returns the model in eval mode (float32, whatever the source's dtype)."""
    expected = model.state_dict()
    unused = sorted(set(state_dict) - set(expected))
    missing = sorted(set(expected) - set(state_dict) - set(HF_VQ_ONLY_BUFFERS))
    initialized = [key for key in missing if key.startswith(initialized_prefixes)] if initialized_prefixes else []
    overwritten = sorted(key for key in state_dict if initialized_prefixes and key.startswith(initialized_prefixes))
    if overwritten:
        raise RuntimeError(
            f"converting {source}: {overwritten[:5]} were to keep their fresh initialisation but the converted "
            "weights hold them; this is a converter bug"
        )
    missing = [key for key in missing if key not in initialized]
    mismatched = sorted(
        f"{key} {tuple(state_dict[key].shape)} vs {tuple(expected[key].shape)}"
        for key in set(state_dict) & set(expected)
        if state_dict[key].shape != expected[key].shape
    )
    if unused or missing or mismatched:
        raise RuntimeError(
            f"converting {source}: the weights do not fit the VQGANModel built from its config (unused: "
            f"{unused[:5]}, missing: {missing[:5]}, other shapes: {mismatched[:5]}); this is a converter bug"
        )
    # `expected` holds the model's own tensors, so what the state dict lacks keeps the model's initialisation.
    model.load_state_dict({**expected, **{key: value.detach() for key, value in state_dict.items()}}, strict=True)
    return model.eval()


__all__ = ["HF_VQ_ONLY_BUFFERS", "load_converted_weights"]
