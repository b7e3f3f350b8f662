"""Image processor of the VQGAN image tokenizer: images in, pixel values in [-1, 1] out, and back to images."""

from typing import Any

import numpy as np
import PIL.Image
import torch
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import ImageProcessingMixin  # noqa: F401  (see below)
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import ImagesKwargs, Unpack

# `ImageProcessingMixin` is imported for diffusers: a pipeline component from outside its known libraries is recorded
# by module path, and diffusers finds how to load it by looking up its known base classes *in that module*.


# Full scale of the PIL modes whose pixels are not 8-bit: 16-bit integers span 0..65535 (a 16-bit PNG or TIFF
# opens as "I;16*", in older Pillow as "I"), floats 0..1. Converting such an image with PIL's `convert("L")`
# clips every value above 255 to white; dividing by the full scale keeps the picture.
_FULL_SCALE = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}
# Modes with an alpha channel (or a transparent palette entry): composited onto white, not cut to black.
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_TRANSPARENCY_BACKGROUND = (255, 255, 255, 255)


def convert_image_mode(image: PIL.Image.Image, mode: str) -> PIL.Image.Image:
    """`image` as an 8-bit "L" (grayscale) or "RGB" image with its real range, whatever its PIL mode.

    16-bit ("I;16", "I;16B", ..., and "I", read as 16-bit) and float ("F", read as 0..1) images are scaled to
    0..255, not clipped; transparent pixels ("RGBA", "LA", "P" with transparency...) are composited onto white;
    "1", "P", "CMYK", "YCbCr", "LAB", "HSV" go through PIL's own conversion.

    Example:

    ```python
    >>> import numpy as np
    >>> from PIL import Image
    >>> sixteen_bit = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))  # mode "I;16"
    >>> np.asarray(convert_image_mode(sixteen_bit, "L")).tolist()
    [[0, 128, 255]]

    ```
    """
    if mode not in ("L", "RGB"):
        raise ValueError(f"convert_image_mode converts to 'L' or 'RGB', got {mode!r}")
    if image.mode == mode:
        return image
    if image.mode in _FULL_SCALE:
        pixels = np.asarray(image, dtype=np.float64) / _FULL_SCALE[image.mode]
        image = PIL.Image.fromarray(np.round(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8))
    elif image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = PIL.Image.alpha_composite(PIL.Image.new("RGBA", rgba.size, _TRANSPARENCY_BACKGROUND), rgba)
    return image if image.mode == mode else image.convert(mode)


class VQGANImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    num_channels (`int`, *optional*, defaults to 3):
        Channels the model expects: PIL images of any mode are converted to "L" (1) or "RGB" (3) with their real
        range (16-bit and float images scaled, transparency on white: `convert_image_mode`); arrays and tensors
        must already have this many channels (uint16 arrays are read as 16-bit).
    downsampling_factor (`int`, *optional*, defaults to 16):
        The model's downsampling factor; every processed image side must be a multiple of it.
    """

    num_channels: int
    downsampling_factor: int


class VQGANImageProcessor(PilBackend):
    r"""
    Turns images into the `pixel_values` a [`VQGANModel`] encodes (resize, optional center crop and padding, values
    rescaled to [-1, 1], grayscale or RGB channels as configured), and reconstructions back into PIL images with
    [`~VQGANImageProcessor.postprocess`].

    Wrong channel counts, sizes that the downsampling factor does not divide, empty batches and inputs that are not
    images raise a `ValueError` / `TypeError` that says what was wrong and what to do.

    Example:

    ```python
    >>> import numpy as np
    >>> from PIL import Image
    >>> from hf_vq import VQGANImageProcessor

    >>> processor = VQGANImageProcessor(size={"height": 32, "width": 32}, num_channels=1, downsampling_factor=4)
    >>> image = Image.fromarray(np.zeros((28, 28), dtype=np.uint8))
    >>> pixel_values = processor(image, return_tensors="pt").pixel_values
    >>> pixel_values.shape, float(pixel_values.min())
    (torch.Size([1, 1, 32, 32]), -1.0)
    >>> processor.postprocess(pixel_values)[0].size
    (32, 32)

    ```
    """

    valid_kwargs = VQGANImageProcessorKwargs
    model_input_names = ["pixel_values"]

    num_channels = 3
    downsampling_factor = 16
    do_resize = True
    size = {"height": 256, "width": 256}
    resample = PILImageResampling.BICUBIC
    do_center_crop = False
    crop_size = None
    do_rescale = True
    rescale_factor = 1 / 255
    # (x / 255 - 0.5) / 0.5 maps [0, 255] to [-1, 1], the range the decoder reconstructs.
    do_normalize = True
    image_mean = None
    image_std = None
    do_convert_rgb = None
    do_pad = False

    def __init__(self, **kwargs: Unpack[VQGANImageProcessorKwargs]):
        super().__init__(**kwargs)
        if self.num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 (grayscale) or 3 (RGB), got {self.num_channels}")
        # Mean and std follow the channel count, so that one processor class serves grayscale and RGB models.
        if self.image_mean is None:
            self.image_mean = (0.5,) * self.num_channels
        if self.image_std is None:
            self.image_std = (0.5,) * self.num_channels
        self._check_divisible(self._output_side("height"), self._output_side("width"), where="the configured size")

    @classmethod
    def from_model_config(cls, config: Any, **kwargs: Any) -> "VQGANImageProcessor":
        """The processor matching a `VQGANConfig`: its channels, downsampling factor and `image_size`."""
        defaults = {
            "num_channels": config.num_channels,
            "downsampling_factor": config.downsampling_factor,
            "size": {"height": config.image_size, "width": config.image_size},
        }
        return cls(**{**defaults, **kwargs})

    def _output_side(self, side: str) -> int | None:
        """Side of processed images when it is known in advance (from the crop, pad or resize size)."""
        for enabled, size in (
            (self.do_pad, self.pad_size),
            (self.do_center_crop, self.crop_size),
            (self.do_resize, self.size),
        ):
            if enabled and size is not None and getattr(size, side, None):
                return getattr(size, side)
        return None

    def _check_divisible(self, height: int | None, width: int | None, where: str) -> None:
        factor = self.downsampling_factor
        if (height is not None and height % factor) or (width is not None and width % factor):
            raise ValueError(
                f"{where} gives images of {height}x{width} pixels, which the model's downsampling factor {factor} "
                f"does not divide; resize, crop or pad to a multiple of {factor} (e.g. size={{'height': "
                f"{_round_up(height or factor, factor)}, 'width': {_round_up(width or factor, factor)}}})"
            )

    def preprocess(self, images: Any, *args: Any, **kwargs: Unpack[VQGANImageProcessorKwargs]):
        """Images (a PIL image, array or tensor, or a list of them) -> `BatchFeature` with `pixel_values`."""
        _check_image_batch(images)
        return super().preprocess(_with_channel_axis(images), *args, **kwargs)

    def process_image(
        self, image: Any, do_convert_rgb: bool | None = None, input_data_format=None, **kwargs
    ) -> np.ndarray:
        """One image -> channels-first array with `num_channels` channels (PIL images converted, arrays checked)."""
        num_channels = kwargs.get("num_channels") or self.num_channels
        if isinstance(image, PIL.Image.Image):
            # PIL knows what its pixels mean, so converting the mode is safe; arrays are only checked (below).
            image = convert_image_mode(image, "L" if num_channels == 1 else "RGB")
            do_convert_rgb = False
        elif isinstance(image, np.ndarray) and image.dtype == np.uint16:
            # 16-bit pixels on the 8-bit scale that `rescale_factor` (1/255) expects, not 257 times too bright.
            image = image.astype(np.float32) * np.float32(255.0 / 65535.0)
        array = super().process_image(
            image, do_convert_rgb=do_convert_rgb, input_data_format=input_data_format, **kwargs
        )
        if array.shape[0] != num_channels:
            raise ValueError(
                f"VQGANImageProcessor expects images with {num_channels} channel(s) (num_channels={num_channels}), "
                f"got one of shape {tuple(np.shape(image))} with {array.shape[0]} channel(s); convert it first (for "
                f"example PIL's Image.convert('{'L' if num_channels == 1 else 'RGB'}')) or use a processor and model "
                f"built for {array.shape[0]} channel(s)"
            )
        return array

    def _preprocess(self, images: list[np.ndarray], *args: Any, return_tensors: Any = None, **kwargs: Any):
        batch = super()._preprocess(images, *args, return_tensors=None, **kwargs)
        for array in batch["pixel_values"]:
            self._check_divisible(array.shape[-2], array.shape[-1], where="Preprocessing")
        batch["pixel_values"] = [array.astype(np.float32) for array in batch["pixel_values"]]
        batch.convert_to_tensors(return_tensors)
        return batch

    def postprocess(
        self, reconstruction: torch.Tensor | np.ndarray, output_type: str = "pil"
    ) -> list[PIL.Image.Image] | np.ndarray | torch.Tensor:
        """Decoder output `(batch, num_channels, height, width)` in model space -> images.

        `output_type` "pil" gives a list of PIL images (mode "L" or "RGB"), "np" a uint8 array
        `(batch, height, width, channels)`, "pt" a float tensor in [0, 1] `(batch, channels, height, width)`.
        """
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        pixels = torch.as_tensor(
            np.asarray(reconstruction) if not isinstance(reconstruction, torch.Tensor) else reconstruction
        )
        if pixels.ndim != 4 or pixels.shape[1] != self.num_channels or pixels.shape[0] == 0:
            raise ValueError(
                f"postprocess expects a non-empty batch (batch, {self.num_channels}, height, width) as returned by "
                f"VQGANModel.decode(...).reconstruction; got shape {tuple(pixels.shape)}"
            )
        pixels = self._to_unit_range(pixels.detach().float().cpu())
        if output_type == "pt":
            return pixels
        array = (pixels.permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8)
        if output_type == "np":
            return array
        return [PIL.Image.fromarray(image[..., 0] if self.num_channels == 1 else image) for image in array]

    def _to_unit_range(self, pixels: torch.Tensor) -> torch.Tensor:
        """Undo normalisation and rescaling: model space -> [0, 1], clamped."""
        if self.do_normalize:
            mean = torch.tensor(self.image_mean, dtype=pixels.dtype).view(1, -1, 1, 1)
            std = torch.tensor(self.image_std, dtype=pixels.dtype).view(1, -1, 1, 1)
            pixels = pixels * std + mean
        if not self.do_rescale:
            pixels = pixels / 255.0
        elif self.rescale_factor * 255.0 != 1.0:
            # Another rescale than 1/255 (Chameleon's 0.0078: white is 255 * 0.0078 = 1.989 before the mean) spans
            # another range; dividing by 255 * rescale_factor brings white back to 1.
            pixels = pixels / (self.rescale_factor * 255.0)
        return pixels.clamp(0.0, 1.0)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _with_channel_axis(images: Any) -> Any:
    """A 2-d array or tensor is one grayscale image (H, W): give it a channel axis, which transformers requires."""
    if isinstance(images, (list, tuple)):
        return [_with_channel_axis(image) for image in images]
    if isinstance(images, torch.Tensor | np.ndarray) and images.ndim == 2:
        return images[None]
    return images


def _check_image_batch(images: Any) -> None:
    """Reject what transformers would otherwise fail on obscurely (or, for strings, try to download)."""
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    if len(items) == 0:
        raise ValueError(
            "VQGANImageProcessor got an empty batch: pass at least one image (PIL image, array or tensor)"
        )
    for item in items:
        if isinstance(item, (list, tuple)):
            _check_image_batch(item)
        elif isinstance(item, torch.Tensor | np.ndarray):
            if item.size == 0 if isinstance(item, np.ndarray) else item.numel() == 0:
                raise ValueError(f"VQGANImageProcessor got an empty image array of shape {tuple(item.shape)}")
            if item.ndim not in (2, 3, 4):
                raise ValueError(
                    f"VQGANImageProcessor expects image arrays of shape (H, W), (H, W, C) or (C, H, W) (or a batch of "
                    f"them), got shape {tuple(item.shape)}"
                )
        elif isinstance(item, PIL.Image.Image) and 0 in item.size:
            raise ValueError(
                f"VQGANImageProcessor got an empty image of size {item.size}: it needs at least one pixel"
            )
        elif not isinstance(item, PIL.Image.Image):
            raise TypeError(
                f"VQGANImageProcessor expects PIL images, numpy arrays or torch tensors (or a list of them), got "
                f"{type(item).__name__}; open files with PIL.Image.open(path) first"
            )


__all__ = ["VQGANImageProcessor", "convert_image_mode"]
