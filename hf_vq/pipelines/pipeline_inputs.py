"""Checks of the arguments of hf_vq's pipelines, shared by all of them: each bad input is a `ValueError` that names the
argument and says what to pass instead.

This file imports only torch and the standard library: it is copied into every saved pipeline folder beside the
pipeline's own file, so that the pipeline also checks its inputs where it runs as remote code without hf_vq.
"""

from __future__ import annotations

import math
from typing import Any

import torch


# What `output_type` a pipeline returns: diffusers' three image kinds, or "latent" (the token grids, undecoded).
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def check_output_type(output_type: Any) -> None:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}")


def class_label_tensor(class_labels: Any) -> torch.Tensor:
    """`class_labels` (an int or a list of ints) as a 1-d tensor. Booleans are ints to Python and torch, but a mask
    passed by mistake would silently generate classes 0 and 1: refused, as floats and empty lists are."""
    labels = torch.as_tensor([class_labels] if isinstance(class_labels, int) else class_labels)
    if labels.ndim != 1 or labels.numel() == 0 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"class_labels must be an int or a non-empty list of ints, got {class_labels!r}")
    return labels


def check_call_number(name: str, value: Any) -> None:
    """A real, finite number: NaN or inf in a sampling argument silently returns a degenerate image."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")


def check_callback_tensor_inputs(requested: list[str], allowed: list[str]) -> None:
    """`callback_on_step_end_tensor_inputs` names only tensors the pipeline has (its `_callback_tensor_inputs`)."""
    unknown = [name for name in requested if name not in allowed]
    if unknown:
        raise ValueError(
            f"callback_on_step_end_tensor_inputs names {unknown}, which this pipeline does not have; "
            f"choose from {allowed}"
        )


def check_generator_devices(
    generator: torch.Generator | list[torch.Generator] | None, batch_size: int, device: torch.device | str
) -> None:
    """diffusers' rule for generators: one, or a list of one per image; each on the CPU (numbers drawn there and
    moved, the same on every device) or on the pipeline's own device type."""
    generators = generator if isinstance(generator, list) else [generator]
    if isinstance(generator, list) and len(generator) != batch_size:
        raise ValueError(
            f"generator is a list of {len(generator)} generators, but {batch_size} images are generated: pass one "
            "generator per image (class_labels times num_images_per_prompt) or a single generator"
        )
    device = torch.device(device)
    for item in generators:
        if item is None:
            continue
        if not isinstance(item, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or a list of them, got {type(item).__name__}")
        if item.device.type not in ("cpu", device.type):
            raise ValueError(
                f"generator is on {item.device} but the pipeline runs on {device}: pass torch.Generator('cpu') "
                f"(the same images on every device) or torch.Generator('{device.type}')"
            )


__all__ = ["check_call_number", "check_callback_tensor_inputs", "check_generator_devices"]


def class_names(config: Any) -> dict[int, str]:
    """Class id -> name of a prior with `config.num_classes` classes, as its training data named them
    (`config.id2label`; transformers' placeholder `LABEL_<i>` where a name is missing)."""
    names = {int(index): name for index, name in (getattr(config, "id2label", None) or {}).items()}
    return {index: names.get(index, f"LABEL_{index}") for index in range(config.num_classes)}


def label_ids(id2label: dict[int, str], label: str | list[str]) -> list[int]:
    """Ids of class names (diffusers' DiT pipeline's `get_label_ids`); an unknown name is a `ValueError` listing the
    valid ones."""
    names = [label] if isinstance(label, str) else list(label)
    by_name = {name: index for index, name in id2label.items()}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(f"unknown class name(s) {unknown}; this prior's classes are: {sorted(by_name)}")
    return [by_name[name] for name in names]
