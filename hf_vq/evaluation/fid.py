"""Feature extractors for rFID: the standard Inception network where its weights can be had, any function elsewhere.

The Frechet distance itself is torchmetrics' `FrechetInceptionDistance`, which accepts any `nn.Module` as its
feature extractor (`feature=module`, with a `num_features` attribute) and keeps its statistics as summed states,
so that it reduces correctly across processes. Only the feature extractor is ours to choose:

- `InceptionFeatureExtractor`: the FID Inception v3 of torch-fidelity (what torchmetrics uses by default), i.e.
  numbers comparable with published rFID. Needs the `torch-fidelity` package and its weights file; without
  them it raises `InceptionWeightsNotFoundError` saying which is missing and where to put it.
- `CallableFeatureExtractor`: any function images -> (B, D) features, e.g. a classifier's penultimate layer
  trained on the same data. Its distances are comparable only with each other, not with published rFID.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

from ..errors import HfVqUserError

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_WEIGHTS_FILE}"
INCEPTION_FEATURE_DIMS = (64, 192, 768, 2048)


@runtime_checkable
class FIDFeatureExtractor(Protocol):
    """What rFID needs: images (B, C, H, W) in [-1, 1] -> features (B, num_features)."""

    num_features: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


class InceptionWeightsNotFoundError(HfVqUserError, FileNotFoundError):
    """The FID Inception network cannot be built: torch-fidelity or its weights file is missing."""


def default_inception_weights_path() -> Path:
    """Where torch-fidelity downloads its Inception weights to (torch hub's checkpoint folder)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE


class InceptionFeatureExtractor(nn.Module):
    """The FID Inception v3 (torch-fidelity's port, as in torchmetrics) on images in [-1, 1], gray or RGB.

    `weights_path` defaults to torch-fidelity's download location (`default_inception_weights_path()`); nothing
    is downloaded here. Images are turned into uint8 RGB, which the network resizes to 299x299 itself.

    Example (needs `pip install torch-fidelity` and the weights file; elsewhere it raises a clear error):

    ```python
    >>> from hf_vq.evaluation import InceptionFeatureExtractor, InceptionWeightsNotFoundError
    >>> try:
    ...     extractor = InceptionFeatureExtractor(weights_path="/nonexistent/inception.pth")
    ... except InceptionWeightsNotFoundError as error:
    ...     print("missing" in str(error))
    True

    ```
    """

    def __init__(self, weights_path: str | Path | None = None, feature_dim: int = 2048) -> None:
        super().__init__()
        if feature_dim not in INCEPTION_FEATURE_DIMS:
            raise ValueError(
                f"feature_dim must be one of {INCEPTION_FEATURE_DIMS} (Inception layers), got {feature_dim}"
            )
        path = Path(weights_path).expanduser() if weights_path is not None else default_inception_weights_path()
        _require_inception(path)
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.inception = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=[str(feature_dim)], feature_extractor_weights_path=str(path)
        )
        self.num_features = feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = ((images.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        return self.inception(pixels)


def _require_inception(weights_path: Path) -> None:
    missing = []
    if not _TORCH_FIDELITY_AVAILABLE:
        missing.append("the torch-fidelity package (`pip install torch-fidelity`)")
    if not weights_path.is_file():
        missing.append(f"the Inception weights file {weights_path} (download {INCEPTION_WEIGHTS_URL} to that path)")
    if missing:
        raise InceptionWeightsNotFoundError(
            f"rFID with the standard Inception network needs {' and '.join(missing)}, which is missing here. "
            f"Provide it (weights_path=... or torch hub's checkpoint folder), leave rFID out, or measure a Frechet "
            f"distance on other features with CallableFeatureExtractor."
        )


class CallableFeatureExtractor(nn.Module):
    """Any function images (B, C, H, W) in [-1, 1] -> features (B, num_features), as an rFID feature extractor.

    An `nn.Module` function (a trained classifier's trunk, say) is registered as a submodule, so that it moves
    with `.to(device)`. Its distances compare runs measured with the same function, not published rFID.

    Example:

    ```python
    >>> import torch
    >>> from hf_vq.evaluation import CallableFeatureExtractor
    >>> extractor = CallableFeatureExtractor(lambda images: images.mean(dim=(2, 3)), num_features=1)
    >>> extractor(torch.zeros(4, 1, 8, 8)).shape
    torch.Size([4, 1])

    ```
    """

    def __init__(self, function: Callable[[torch.Tensor], torch.Tensor], num_features: int) -> None:
        super().__init__()
        if num_features <= 0:
            raise ValueError(f"num_features must be positive, got {num_features}")
        self.function = function
        self.num_features = num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.function(images)
        if features.ndim != 2 or features.shape != (images.shape[0], self.num_features):
            raise ValueError(
                f"the feature function returned shape {tuple(features.shape)}; expected (batch, num_features) = "
                f"({images.shape[0]}, {self.num_features})"
            )
        return features.float()


def as_feature_module(extractor: FIDFeatureExtractor) -> nn.Module:
    """torchmetrics wants an `nn.Module` with `num_features`; wrap plain callables that have one."""
    if isinstance(extractor, nn.Module) and isinstance(getattr(extractor, "num_features", None), int):
        return extractor
    if not isinstance(extractor, FIDFeatureExtractor):
        raise TypeError(
            f"an rFID feature extractor needs a `num_features` int and a __call__ (images -> features), got "
            f"{type(extractor).__name__}; wrap functions in CallableFeatureExtractor(function, num_features)"
        )
    return CallableFeatureExtractor(extractor, extractor.num_features)
