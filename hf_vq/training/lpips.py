"""LPIPS perceptual loss (Zhang et al., CVPR 2018) with a VGG16 backbone, defined here because torchvision cannot be
installed next to the CPU build of torch.

The module layout matches the `lpips` package and taming-transformers (`net.slice1.0.weight`, ...,
`lin0.model.1.weight`, `scaling_layer.shift`), so their checkpoints load as they are; a torchvision `vgg16` state
dict (`features.N.weight`) is mapped onto the slices. The linear heads default to the calibrated weights that
torchmetrics ships inside its wheel; the VGG16 backbone must come from a file or a Hub repository: nothing is
downloaded behind the user's back, and a missing backbone is a clear `LPIPSWeightsError`.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from ..errors import HfVqUserError

# torchvision's vgg16().features, as (out_channels or "M" for max-pooling); LPIPS taps the ReLU after the last
# conv of each of the five stages.
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# Index ranges of torchvision's `features` that make up each LPIPS slice (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
SLICE_BOUNDS = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


class LPIPSWeightsError(HfVqUserError, FileNotFoundError):
    """LPIPS weights could not be found or do not fit the network."""


def _vgg16_feature_layers() -> list[nn.Module]:
    layers: list[nn.Module] = []
    in_channels = 3
    for entry in VGG16_LAYERS:
        if entry == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, entry, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            in_channels = entry
    return layers


class VGG16Slices(nn.Module):
    """The first 30 layers of VGG16 cut into LPIPS' five slices; children keep torchvision's indices as names."""

    def __init__(self):
        super().__init__()
        layers = _vgg16_feature_layers()
        for number, (start, end) in enumerate(SLICE_BOUNDS, start=1):
            block = nn.Sequential()
            for index in range(start, end):
                block.add_module(str(index), layers[index])
            self.add_module(f"slice{number}", block)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for number in range(1, len(SLICE_BOUNDS) + 1):
            images = getattr(self, f"slice{number}")(images)
            features.append(images)
        return features


class ScalingLayer(nn.Module):
    """Maps [-1, 1] images to the input statistics VGG16 was trained with."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.shift) / self.scale


class NetLinLayer(nn.Module):
    """A 1x1 convolution (no bias) weighting the channels of one feature difference; `model.1` as in lpips."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(p=0.0), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, difference: torch.Tensor) -> torch.Tensor:
        return self.model(difference)


class LPIPS(nn.Module):
    """LPIPS distance between images in [-1, 1]: per-sample `(B,)` values (0 for identical images).

    Grayscale images are repeated to three channels. The network is frozen (eval mode, no gradients to its
    weights); gradients flow to the inputs. Build it with `load_lpips(path_or_repo)` to get real weights; the plain
    constructor gives random weights (for tests and shape checks only).

    Example:
        >>> import torch
        >>> lpips = LPIPS()  # random weights: only for checking shapes
        >>> lpips(torch.zeros(2, 1, 32, 32), torch.ones(2, 1, 32, 32)).shape
        torch.Size([2])
    """

    def __init__(self):
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.net = VGG16Slices()
        for index, channels in enumerate(LPIPS_CHANNELS):
            self.add_module(f"lin{index}", NetLinLayer(channels))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LPIPS":
        # Always in eval mode: the loss network is fixed, whatever mode the training loop sets on its parents.
        return super().train(False)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # noqa: A002 - lpips' name
        if input.shape != target.shape:
            raise ValueError(f"LPIPS needs images of equal shape, got {tuple(input.shape)} and {tuple(target.shape)}")
        if input.shape[1] == 1:
            input, target = input.expand(-1, 3, -1, -1), target.expand(-1, 3, -1, -1)
        if input.shape[1] != 3:
            raise ValueError(f"LPIPS takes 1- or 3-channel images, got {input.shape[1]} channels")
        features_input = self.net(self.scaling_layer(input))
        features_target = self.net(self.scaling_layer(target))
        distance = 0.0
        for index, (first, second) in enumerate(zip(features_input, features_target)):
            difference = (_normalize_channels(first) - _normalize_channels(second)) ** 2
            distance = distance + getattr(self, f"lin{index}")(difference).mean(dim=(1, 2, 3))
        return distance


def _normalize_channels(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return features / (torch.sqrt(torch.sum(features**2, dim=1, keepdim=True)) + eps)


def packaged_linear_weights() -> dict[str, torch.Tensor]:
    """The calibrated LPIPS-VGG linear heads shipped inside torchmetrics' wheel (empty when absent)."""
    try:
        path = resources.files("torchmetrics.functional.image").joinpath("lpips_models/vgg.pth")
        with resources.as_file(path) as file:
            return torch.load(file, map_location="cpu", weights_only=True) if file.is_file() else {}
    except (ModuleNotFoundError, FileNotFoundError):
        return {}


def load_lpips(weights: str | os.PathLike | None, cache_dir: str | None = None) -> LPIPS:
    """An `LPIPS` network with real weights.

    `weights` is a file (a torchvision `vgg16` state dict, or a full lpips / taming-transformers LPIPS state dict),
    a folder of such files (merged), or a Hub repository id whose weight files are fetched with
    `huggingface_hub.snapshot_download`. Linear heads missing from them are taken from torchmetrics' packaged copy.
    Raises `LPIPSWeightsError` naming what is missing.
    """
    if weights is None or str(weights) == "":
        raise LPIPSWeightsError(
            "the LPIPS perceptual loss needs VGG16 weights, and none were given: pass --lpips_weights with a file or "
            "folder holding a torchvision vgg16 state dict (features.N.weight) or a full LPIPS state dict "
            "(net.slice1.0.weight, lin0.model.1.weight), or a Hub repository id that has one; or set "
            "--perceptual_weight 0 to train without it"
        )
    state = _read_state_dicts(_resolve_weight_files(weights, cache_dir))
    state = {**{key: value for key, value in packaged_linear_weights().items() if key not in state}, **state}
    network = LPIPS()
    _load_matching(network, _to_lpips_keys(state), source=str(weights))
    return network


def _resolve_weight_files(weights: str | os.PathLike, cache_dir: str | None) -> list[Path]:
    path = Path(weights).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        return _weight_files_in(path)
    if not REPO_ID.fullmatch(str(weights)):
        raise LPIPSWeightsError(
            f"LPIPS weights {str(weights)!r}: no such file or folder (and not a Hub repository id)"
        )
    return _weight_files_in(_download_repo(str(weights), cache_dir))


def _weight_files_in(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise LPIPSWeightsError(f"no weight file ({', '.join(WEIGHT_SUFFIXES)}) in {folder} for the LPIPS network")
    return files


def _download_repo(repo_id: str, cache_dir: str | None) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=[f"*{s}" for s in WEIGHT_SUFFIXES]))
    except Exception as error:  # the Hub raises many kinds (offline, not found, auth, network)
        raise LPIPSWeightsError(
            f"LPIPS weights {repo_id!r} are neither a local file or folder nor a Hub repository that can be reached "
            f"({type(error).__name__}: {error}); pass --lpips_weights PATH to local VGG16/LPIPS weights, or set "
            "--perceptual_weight 0"
        ) from error


def _read_state_dicts(files: list[Path]) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for file in files:
        if file.name.endswith(".safetensors"):
            from safetensors.torch import load_file

            loaded = load_file(str(file))
        else:
            loaded = torch.load(file, map_location="cpu", weights_only=True)
        # Some checkpoints wrap the weights (`{"state_dict": ...}`, `{"model": ...}`).
        for wrapper in ("state_dict", "model"):
            if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
                loaded = loaded[wrapper]
        state.update({key: value for key, value in loaded.items() if isinstance(value, torch.Tensor)})
    return state


def _to_lpips_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename torchvision's `features.N.*` to `net.sliceK.N.*`; strip common prefixes (`perceptual_loss.`,
    `module.`)."""
    slice_of = {
        index: number for number, (start, end) in enumerate(SLICE_BOUNDS, start=1) for index in range(start, end)
    }
    renamed = {}
    for key, value in state.items():
        for prefix in ("module.", "perceptual_loss.", "lpips."):
            key = key.removeprefix(prefix)
        parts = key.split(".")
        if parts[0] == "features" and len(parts) == 3 and int(parts[1]) in slice_of:
            key = f"net.slice{slice_of[int(parts[1])]}.{parts[1]}.{parts[2]}"
        renamed[key] = value
    return renamed


def _load_matching(network: LPIPS, state: dict[str, torch.Tensor], source: str) -> None:
    expected = network.state_dict()
    missing = [key for key in expected if key not in state and not key.startswith("scaling_layer.")]
    if missing:
        backbone = any(key.startswith("net.") for key in missing)
        raise LPIPSWeightsError(
            f"LPIPS weights from {source} lack {len(missing)} tensors (e.g. {missing[:3]}): "
            + (
                "the VGG16 backbone is missing (a torchvision vgg16 state dict has it as features.N.weight)"
                if backbone
                else "the linear heads are missing (lin0.model.1.weight ...; torchmetrics ships them)"
            )
        )
    wrong = [key for key in expected if key in state and state[key].shape != expected[key].shape]
    if wrong:
        raise LPIPSWeightsError(
            f"LPIPS weights from {source} have wrong shapes for {wrong[:3]}: not a VGG16 LPIPS checkpoint"
        )
    network.load_state_dict({key: state.get(key, expected[key]) for key in expected})
