"""Exact behaviour of the models (issue 25): which input position and which class token a prior's logits depend on,
where the classifier reads its prediction, the configs' grids and bounds, the image processor's reading of 16-bit,
float and transparent images, and the Auto classes the packages register. Each test pins a behaviour that a
plausible one-line bug changes (scripts/mutants.toml)."""

import importlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import AutoModel

from hf_vq import (
    MaskGITConfig,
    MaskGITModel,
    TokenViTConfig,
    TokenViTForImageClassification,
    VQGANConfig,
    VQGANImageProcessor,
)

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def without_attention(model: torch.nn.Module) -> torch.nn.Module:
    """Zero every attention output projection: positions no longer exchange information, so what a position's output
    depends on shows which input position (and which embedding) feeds it."""
    with torch.no_grad():
        for layer in model.layers:
            layer.attention.proj.weight.zero_()
            layer.attention.proj.bias.zero_()
    return model


def changed_positions(before: torch.Tensor, after: torch.Tensor) -> list[int]:
    """Positions (axis 1) whose outputs differ."""
    return (before - after).abs().flatten(2).amax(dim=2)[0].gt(1e-6).nonzero()[:, 0].tolist()


# ------------------------------------------------------------------------------------------- MaskGIT prior


@pytest.fixture
def prior() -> MaskGITModel:
    torch.manual_seed(0)
    config = MaskGITConfig(codebook_size=16, grid_height=3, grid_width=4, num_classes=5, initializer_range=0.5, **TINY)
    return MaskGITModel(config).eval()


@pytest.mark.parametrize("position", [0, 5, 11])
def test_maskgit_logits_of_a_position_come_from_that_input_position(prior, position):
    without_attention(prior)
    tokens = torch.randint(0, 16, (1, 12), generator=torch.Generator().manual_seed(1))
    changed = tokens.clone()
    changed[0, position] = 16 if tokens[0, position] != 16 else 0  # masked
    with torch.no_grad():
        before, after = prior(tokens).logits, prior(changed).logits
    assert changed_positions(before, after) == [position]


def test_maskgit_class_label_is_a_token_every_position_attends_to(prior):
    tokens = torch.randint(0, 17, (1, 3, 4), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        by_label = [prior(tokens, class_labels=torch.tensor([label])).logits for label in (0, 3)]
        null = prior(tokens).logits
    assert changed_positions(*by_label) == list(range(12))  # every position sees the class token
    torch.testing.assert_close(null, prior(tokens, class_labels=torch.tensor([5])).logits)  # None is the null label
    without_attention(prior)
    with torch.no_grad():
        # Not added to the positions: without attention the label reaches none of them.
        torch.testing.assert_close(
            prior(tokens, class_labels=torch.tensor([0])).logits, prior(tokens, class_labels=torch.tensor([3])).logits
        )


def test_maskgit_attention_is_bidirectional(prior):
    """The first position's prediction depends on the last position's token (MaskGIT reads the whole grid)."""
    tokens = torch.full((1, 12), 16)
    changed = tokens.clone()
    changed[0, -1] = 3
    with torch.no_grad():
        before, after = prior(tokens).logits, prior(changed).logits
    assert changed_positions(before, after) == list(range(12))


def test_maskgit_config_bounds_and_grid():
    config = MaskGITConfig(codebook_size=16, grid_height=2, grid_width=5, **TINY)
    assert config.num_positions == 10
    assert MaskGITModel(config)(torch.zeros(1, 2, 5, dtype=torch.long)).logits.shape == (1, 10, 16)
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        with pytest.raises(StrictDataclassClassValidationError, match=rf"{name} must lie in \[0, 1\)"):
            MaskGITConfig(**{name: 1.0})
        MaskGITConfig(**{name: 0.0})


def test_maskgit_folder_loads_through_auto_model(prior, tmp_path):
    prior.save_pretrained(tmp_path / "prior")
    loaded = AutoModel.from_pretrained(tmp_path / "prior")
    assert type(loaded) is MaskGITModel
    tokens = torch.randint(0, 17, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(tokens).logits, prior(tokens).logits)


# ------------------------------------------------------------------------------------------- token ViT


@pytest.fixture
def classifier() -> TokenViTForImageClassification:
    torch.manual_seed(0)
    config = TokenViTConfig(codebook_size=16, grid_size=[2, 3], num_labels=4, initializer_range=0.5, **TINY)
    return TokenViTForImageClassification(config).eval()


def test_token_vit_predicts_from_its_class_token(classifier):
    """Without attention the class token's output does not depend on the image tokens: the prediction is read there,
    not at a grid position."""
    tokens = torch.randint(0, 16, (1, 2, 3), generator=torch.Generator().manual_seed(0))
    other = (tokens + 5) % 16
    with torch.no_grad():
        assert not torch.allclose(classifier(image_tokens=tokens).logits, classifier(image_tokens=other).logits)
        without_attention(classifier)
        torch.testing.assert_close(classifier(image_tokens=tokens).logits, classifier(image_tokens=other).logits)


def test_token_vit_takes_a_non_square_grid(classifier):
    assert classifier.config.num_positions == 6
    tokens = torch.randint(0, 16, (2, 2, 3))
    with torch.no_grad():
        logits = classifier(image_tokens=tokens).logits
        torch.testing.assert_close(classifier(image_tokens=tokens.reshape(2, 6)).logits, logits)
    with pytest.raises(ValueError, match=r"expects \(batch, 2, 3\) or \(batch, 6\)"):
        classifier(image_tokens=torch.zeros(1, 2, 2, dtype=torch.long))


def test_token_vit_refuses_the_first_id_past_the_codebook(classifier):
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 15\]"):
        classifier(image_tokens=torch.full((1, 6), 16))


# ------------------------------------------------------------------------------------------- image processor


def rgb_processor(**kwargs) -> VQGANImageProcessor:
    return VQGANImageProcessor(size={"height": 4, "width": 4}, num_channels=3, downsampling_factor=2, **kwargs)


def test_transparent_pixels_are_composited_onto_white():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[:2] = (0, 0, 0, 255)  # opaque black above, fully transparent below
    pixels = rgb_processor()(PIL.Image.fromarray(rgba, mode="RGBA"), return_tensors="pt").pixel_values[0]
    torch.testing.assert_close(pixels[:, :2], torch.full((3, 2, 4), -1.0))
    torch.testing.assert_close(pixels[:, 2:], torch.full((3, 2, 4), 1.0))


def test_sixteen_bit_arrays_and_float_images_keep_their_range():
    processor = VQGANImageProcessor(size={"height": 4, "width": 4}, num_channels=1, downsampling_factor=2)
    sixteen = np.full((4, 4), 65535, dtype=np.uint16)
    sixteen[0] = 0
    pixels = processor(sixteen, return_tensors="pt").pixel_values[0, 0]
    torch.testing.assert_close(pixels[1:], torch.ones(3, 4))
    torch.testing.assert_close(pixels[0], -torch.ones(4))
    unit = np.full((4, 4), 1.0, dtype=np.float32)
    unit[0] = 0.5
    floats = processor(PIL.Image.fromarray(unit, mode="F"), return_tensors="pt").pixel_values[0, 0]
    torch.testing.assert_close(floats[1:], torch.ones(3, 4))
    torch.testing.assert_close(floats[0], torch.full((4,), 1 / 255), atol=1 / 255, rtol=0)  # 128 of 255


@pytest.mark.parametrize(
    "options", [{"do_rescale": False}, {"image_mean": (0.2, 0.4, 0.1), "image_std": (0.3, 0.7, 0.9)}]
)
def test_postprocess_inverts_preprocessing_without_rescaling_and_with_any_normalisation(options):
    """Postprocessing undoes what preprocessing did: without rescaling (pixels stay 0..255 before normalising), and
    with a mean and standard deviation that differ from each other."""
    processor = rgb_processor(do_resize=False, **options)
    image = np.random.default_rng(0).integers(0, 256, size=(8, 6, 3), dtype=np.uint8)
    pixel_values = processor(image, return_tensors="pt").pixel_values
    if not options.get("do_rescale", True):
        assert float(pixel_values.max()) > 2  # not rescaled
    np.testing.assert_array_equal(processor.postprocess(pixel_values, output_type="np")[0], image)


# ------------------------------------------------------------------------------------------- packages

LAZY_PACKAGES = {
    "hf_vq.pipelines": ["MaskGITPipeline", "MaskGITPipelineOutput", "VQGANPipeline", "VQGANPipelineOutput"],
    "hf_vq.pipelines.maskgit": ["MaskGITPipeline", "MaskGITPipelineOutput"],
    "hf_vq.pipelines.vqgan": ["VQGANPipeline", "VQGANPipelineOutput"],
    "hf_vq.pipelines.autoregressive": [
        "AutoregressivePipeline",
        "AutoregressivePipelineOutput",
        "GuidedCodeSampler",
        "autoregressive_prior_fields",
        "check_tokenizer",
    ],
    "hf_vq.schedulers": ["MaskGITScheduler", "MaskGITSchedulerOutput"],
}


@pytest.mark.parametrize("package", sorted(LAZY_PACKAGES))
def test_lazy_packages_resolve_each_name_to_its_definition_and_refuse_others(package):
    """Each name a package imports on first use is the object of that name in the package's own module; a name it
    does not have is an AttributeError (so `from package import Typo` fails), never a silent None."""
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(LAZY_PACKAGES[package])
    for name in LAZY_PACKAGES[package]:
        value = getattr(module, name)
        assert value.__name__ == name and value.__module__.startswith(package + "."), (name, value.__module__)
    with pytest.raises(AttributeError, match="has no attribute 'Typo'"):
        module.Typo  # noqa: B018


def test_models_package_exports_every_model_class_of_its_folders():
    import hf_vq.models
    from hf_vq.models import maskgit, token_vit, vqgan

    for folder in (maskgit, token_vit, vqgan):
        for name in folder.__all__:
            if isinstance(getattr(folder, name), type):
                assert name in hf_vq.models.__all__ and getattr(hf_vq.models, name) is getattr(folder, name), name


def test_saved_models_load_through_the_auto_classes_they_register(tokenizer_dir, tmp_path):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from hf_vq import VQGANModel

    assert type(AutoModel.from_pretrained(tokenizer_dir)) is VQGANModel
    assert type(AutoImageProcessor.from_pretrained(tokenizer_dir)) is VQGANImageProcessor
    config = TokenViTConfig(codebook_size=32, grid_size=[8, 8], num_labels=2, **TINY)
    TokenViTForImageClassification(config).save_pretrained(tmp_path / "classifier")
    for auto_class in (AutoModel, AutoModelForImageClassification):
        assert type(auto_class.from_pretrained(tmp_path / "classifier")) is TokenViTForImageClassification


# ------------------------------------------------------------------------------------------- image size


@pytest.mark.parametrize("resolution", [8, 32])
def test_a_resolution_other_than_the_tokenizers_is_refused_above_and_below(resolution):
    """A smaller --resolution would make a coarser token grid than the one recorded, as a larger one a finer grid."""
    from hf_vq.errors import ConfigError
    from hf_vq.models.vqgan.image_size import check_tokenizer_resolution

    config = VQGANConfig.from_yaml(Path(__file__).parents[1] / "configs" / "vqgan_tiny.yaml")
    assert check_tokenizer_resolution(config, None) == check_tokenizer_resolution(config, 16) == 16
    with pytest.raises(ConfigError, match=f"--resolution {resolution} differs from the tokenizer's image size 16"):
        check_tokenizer_resolution(config, resolution)
