"""VQGANImageProcessor: resize / rescale to [-1, 1], grayscale and RGB, postprocess, and every bad input."""

import numpy as np
import PIL.Image
import pytest
import torch

from hf_vq import VQGANConfig, VQGANImageProcessor


def gray_processor(**kwargs) -> VQGANImageProcessor:
    return VQGANImageProcessor(
        **{"size": {"height": 32, "width": 32}, "num_channels": 1, "downsampling_factor": 4, **kwargs}
    )


def random_uint8(*shape: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)


def test_fashion_mnist_images_are_resized_to_32_and_rescaled_to_minus_one_one():
    processor = gray_processor()
    images = [PIL.Image.fromarray(random_uint8(28, 28)), PIL.Image.fromarray(np.full((28, 28), 255, np.uint8))]
    pixel_values = processor(images, return_tensors="pt").pixel_values
    assert pixel_values.shape == (2, 1, 32, 32) and pixel_values.dtype == torch.float32
    assert float(pixel_values.min()) >= -1.0 and float(pixel_values.max()) <= 1.0
    torch.testing.assert_close(pixel_values[1], torch.ones(1, 32, 32))


def test_processor_from_model_config_matches_the_model():
    config = VQGANConfig.from_yaml("configs/vqgan_fashion_mnist.yaml")
    processor = VQGANImageProcessor.from_model_config(config)
    assert (processor.num_channels, processor.downsampling_factor, processor.size.height) == (1, 4, 32)


def test_pil_images_are_converted_to_the_configured_channels():
    rgb = PIL.Image.fromarray(random_uint8(16, 16, 3))
    assert gray_processor()(rgb, return_tensors="pt").pixel_values.shape == (1, 1, 32, 32)
    rgb_processor = VQGANImageProcessor(size={"height": 16, "width": 16}, num_channels=3, downsampling_factor=4)
    gray = PIL.Image.fromarray(random_uint8(16, 16))
    assert rgb_processor(gray, return_tensors="pt").pixel_values.shape == (1, 3, 16, 16)
    arrays = [random_uint8(16, 16, 3), torch.from_numpy(random_uint8(3, 16, 16))]
    assert rgb_processor(arrays, return_tensors="pt").pixel_values.shape == (2, 3, 16, 16)


def test_postprocess_inverts_preprocessing_exactly_without_resizing():
    processor = gray_processor(do_resize=False)
    image = random_uint8(28, 28)
    pixel_values = processor(PIL.Image.fromarray(image), return_tensors="pt").pixel_values
    restored = processor.postprocess(pixel_values)
    assert isinstance(restored[0], PIL.Image.Image) and restored[0].mode == "L"
    np.testing.assert_array_equal(np.asarray(restored[0]), image)
    np.testing.assert_array_equal(processor.postprocess(pixel_values, output_type="np")[0, ..., 0], image)
    assert float(processor.postprocess(pixel_values * 5, output_type="pt").max()) <= 1.0  # clamped


def test_processor_saves_and_loads(tmp_path):
    processor = gray_processor(resample=PIL.Image.Resampling.BILINEAR)
    processor.save_pretrained(tmp_path)
    loaded = VQGANImageProcessor.from_pretrained(tmp_path)
    assert (loaded.num_channels, loaded.downsampling_factor, loaded.size.height) == (1, 4, 32)
    image = PIL.Image.fromarray(random_uint8(28, 28))
    torch.testing.assert_close(
        loaded(image, return_tensors="pt").pixel_values, processor(image, return_tensors="pt").pixel_values
    )


def test_wrong_channel_counts_raise():
    with pytest.raises(ValueError, match=r"1 channel\(s\).*got .*3 channel"):
        gray_processor()(random_uint8(16, 16, 3))
    rgb_processor = VQGANImageProcessor(size={"height": 16, "width": 16}, num_channels=3, downsampling_factor=4)
    with pytest.raises(ValueError, match=r"3 channel\(s\).*Image.convert\('RGB'\)"):
        rgb_processor(random_uint8(16, 16))
    with pytest.raises(ValueError, match="num_channels must be 1"):
        VQGANImageProcessor(num_channels=4)


def test_sizes_the_downsampling_factor_does_not_divide_raise():
    with pytest.raises(ValueError, match="downsampling factor 4 does not divide"):
        VQGANImageProcessor(size={"height": 30, "width": 30}, num_channels=1, downsampling_factor=4)
    processor = gray_processor(do_resize=False, downsampling_factor=8)
    with pytest.raises(ValueError, match=r"28x28 .*factor 8.*'height': 32"):
        processor(PIL.Image.fromarray(random_uint8(28, 28)))


def test_empty_batches_and_non_images_raise():
    processor = gray_processor()
    with pytest.raises(ValueError, match="empty batch"):
        processor([])
    with pytest.raises(ValueError, match="empty image"):
        processor(np.zeros((0, 28), np.uint8))
    with pytest.raises(TypeError, match="got str"):
        processor("cat.png")
    with pytest.raises(TypeError, match="got NoneType"):
        processor([None])
    with pytest.raises(TypeError, match="got int"):
        processor(3)
    with pytest.raises(ValueError, match="shape"):
        processor(np.zeros((2, 2, 2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"\(batch, 1, height, width\)"):
        processor.postprocess(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="output_type"):
        processor.postprocess(torch.zeros(1, 1, 8, 8), output_type="latent")
