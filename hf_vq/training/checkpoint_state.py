"""hf_vq's own checkpoint state without pickle.

Accelerate stores the objects registered with `register_for_checkpointing` (hf_vq's `TrainingState`, the EMA of
the weights, the LeCam anchors) as `custom_checkpoint_<i>.pkl` and loads them with `torch.load(weights_only=False)`:
a checkpoint folder from elsewhere could run code on resume. hf_vq saves them instead as `custom_state_<i>.json`
(the structure, numbers and strings) and `custom_state_<i>.safetensors` (the tensors), and loads them itself. The rest
of a checkpoint (weights as safetensors; optimizer, scheduler, sampler and RNG states) Accelerate already loads with
`weights_only=True`.

Checkpoints of older hf_vq versions hold `custom_checkpoint_<i>.pkl`: each is first read with
`torch.load(weights_only=True)`, which only rebuilds tensors and plain containers, so hf_vq's own state (counters,
EMA tensors) passes and a crafted pickle is refused (`CheckpointError`) before Accelerate touches it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .checkpointing import checksum_problem
from .errors import CheckpointError

LEGACY_PICKLE_PATTERN = re.compile(r"custom_checkpoint_(\d+)\.pkl")
TENSOR_KEY = "__tensor__"
TUPLE_KEY = "__tuple__"


def custom_state_files(folder: Path, index: int) -> tuple[Path, Path]:
    return folder / f"custom_state_{index}.json", folder / f"custom_state_{index}.safetensors"


def save_training_state(accelerator, folder: str | Path) -> None:
    """`accelerator.save_state(folder)` with the registered custom objects written as JSON + safetensors (by the
    main process) instead of pickles."""
    folder = Path(folder)
    custom_objects = _registered_objects(accelerator)
    accelerator._custom_objects = []  # Accelerate would pickle them
    try:
        accelerator.save_state(str(folder))
    finally:
        accelerator._custom_objects = custom_objects
    if accelerator.is_main_process:
        for index, obj in enumerate(custom_objects):
            save_custom_state(obj.state_dict(), folder, index)


def load_training_state(accelerator, folder: str | Path) -> None:
    """`accelerator.load_state(folder)` for checkpoints of this and of older hf_vq versions (see the module
    docstring). Raises `CheckpointError` before anything is loaded when a file does not match its checksum (a
    same-size corruption that Accelerate would skip with an INFO log for the RNG state: an inexact resume) or a
    pickle is not plain data."""
    folder = Path(folder)
    problem = checksum_problem(folder)
    if problem is not None:
        raise CheckpointError(f"{folder}: {problem}")
    pickles = sorted(path for path in folder.iterdir() if LEGACY_PICKLE_PATTERN.fullmatch(path.name))
    for path in pickles:
        _check_plain_pickle(path)
    if pickles:  # an older hf_vq's checkpoint: Accelerate loads the (checked) pickles itself
        accelerator.load_state(str(folder))
        return
    custom_objects = _registered_objects(accelerator)
    states = [load_custom_state(folder, index) for index in range(len(custom_objects))]
    accelerator._custom_objects = []
    try:
        accelerator.load_state(str(folder))
    finally:
        accelerator._custom_objects = custom_objects
    for obj, state in zip(custom_objects, states):
        obj.load_state_dict(state)


def save_custom_state(state: dict[str, Any], folder: Path, index: int) -> None:
    tensors: dict[str, torch.Tensor] = {}
    structure = _to_json(state, tensors, "state")
    structure_file, tensor_file = custom_state_files(folder, index)
    structure_file.write_text(json.dumps(structure, indent=1, sort_keys=True))
    save_file({key: value.detach().cpu().contiguous() for key, value in tensors.items()}, str(tensor_file))


def load_custom_state(folder: Path, index: int) -> dict[str, Any]:
    structure_file, tensor_file = custom_state_files(folder, index)
    if not structure_file.is_file() or not tensor_file.is_file():
        raise CheckpointError(
            f"{folder} lacks {structure_file.name} or {tensor_file.name}: it was not written for this "
            "run's configuration (another command, or EMA/LeCam switched on or off)"
        )
    return _from_json(json.loads(structure_file.read_text()), load_file(str(tensor_file)))


def _registered_objects(accelerator) -> list[Any]:
    # Accelerate keeps the objects of `register_for_checkpointing` in this list; there is no public accessor.
    return list(accelerator._custom_objects)


def _check_plain_pickle(path: Path) -> None:
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for a forbidden global, or anything a crafted file triggers
        raise CheckpointError(
            f"refusing to load {path}: it is not hf_vq's checkpoint state (unpickling it would run code or build "
            f"objects other than tensors and plain values: {type(error).__name__}: {str(error).splitlines()[0]}). "
            "Resume only from checkpoints you or hf_vq wrote"
        ) from error


def _to_json(value: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if torch.is_tensor(value):
        tensors[path] = value
        return {TENSOR_KEY: path}
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise TypeError(f"checkpoint state {path} has keys that are not strings: {list(value)[:5]}")
        return {key: _to_json(item, tensors, f"{path}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_to_json(item, tensors, f"{path}.{index}") for index, item in enumerate(value)]
        return {TUPLE_KEY: items} if isinstance(value, tuple) else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        f"checkpoint state {path} is a {type(value).__name__}: only tensors, numbers, strings, lists "
        "and dicts can be stored without pickle"
    )


def _from_json(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict) and set(value) == {TENSOR_KEY}:
        return tensors[value[TENSOR_KEY]]
    if isinstance(value, dict) and set(value) == {TUPLE_KEY}:
        return tuple(_from_json(item, tensors) for item in value[TUPLE_KEY])
    if isinstance(value, dict):
        return {key: _from_json(item, tensors) for key, item in value.items()}
    if isinstance(value, list):
        return [_from_json(item, tensors) for item in value]
    return value
