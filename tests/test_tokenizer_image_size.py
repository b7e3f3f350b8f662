"""Issue 28: one source of truth for a tokenizer's input size and token grid.

A tokenizer trained at `--resolution R` saves a config whose `image_size` is R, so that the classifier and the prior
trained on its tokens fit the grid it makes; a folder saved before that fix (config and processor disagreeing) still
loads and works, its processor's size winning with a warning that names both values."""

import json
import logging

import pytest
import torch

from transformers import AutoModel

from hf_vq import MaskGITConfig, TokenViTConfig, VQGANConfig, VQGANImageProcessor, VQGANModel
from hf_vq.errors import ConfigError
from hf_vq.models.vqgan.image_size import align_image_size_with_processor, set_image_size
from hf_vq.training.classifier_command import train_classifier
from hf_vq.training.prior_command import train_prior
from hf_vq.training.tokenizer_loop import build_model_and_processor

from training_helpers import REPO, one_thread, reset_accelerate, train, training_args

TINY_CLASSIFIER = str(REPO / "configs" / "token_vit_tiny.yaml")
TINY_PRIOR = str(REPO / "configs" / "maskgit_tiny.yaml")


def _consumer_flags(config, tokenizer_dir, image_dir, output_dir, **overrides):
    return {
        "config": config,
        "tokenizer_name_or_path": str(tokenizer_dir),
        "train_data_dir": str(image_dir),
        "output_dir": str(output_dir),
        "cache_dir": str(output_dir.parent / "cache"),
        "max_train_steps": 2,
        **overrides,
    }


def _train_consumer(command, flags):
    reset_accelerate()
    with one_thread():
        return command(flags)


def test_tokenizer_trained_at_another_resolution_feeds_a_classifier_and_a_prior(labelled_image_dir, tmp_path):
    tokenizer_dir = tmp_path / "tokenizer"
    # The loss flags override the config too, and are recorded like the resolution (the same class of bug).
    train(
        tokenizer_dir,
        train_data_dir=str(labelled_image_dir),
        resolution=32,
        max_train_steps=2,
        discriminator_weight=0.0,
        max_eval_samples=4,
        num_sample_images=2,
        reconstruction_loss="l2",
        quantizer_loss_weight=0.5,
    )
    config = json.loads((tokenizer_dir / "config.json").read_text())
    processor = json.loads((tokenizer_dir / "preprocessor_config.json").read_text())
    assert config["image_size"] == 32 and processor["size"] == {"height": 32, "width": 32}
    # The YAML's attention (at the 8x8 level of 16-pixel images) stays on the same level: 16x16 for 32-pixel images.
    assert config["attention_resolutions"] == [16]
    assert (config["reconstruction_loss_type"], config["quantizer_loss_weight"]) == ("mse", 0.5)

    classifier = _train_consumer(
        train_classifier, _consumer_flags(TINY_CLASSIFIER, tokenizer_dir, labelled_image_dir, tmp_path / "classifier")
    )
    assert classifier["metrics"]["global_step"] == 2
    assert json.loads((tmp_path / "classifier" / "config.json").read_text())["grid_size"] == [16, 16]

    _train_consumer(
        train_prior,
        _consumer_flags(TINY_PRIOR, tokenizer_dir, labelled_image_dir, tmp_path / "prior", num_eval_images=0),
    )
    prior_config = json.loads((tmp_path / "prior" / "transformer" / "config.json").read_text())
    assert (prior_config["grid_height"], prior_config["grid_width"]) == (16, 16)


@pytest.fixture(scope="module")
def disagreeing_tokenizer_dir(tmp_path_factory):
    """A folder as saved before issue 28's fix by a run at --resolution 32 on configs/vqgan_tiny.yaml: config.json
    says image_size 16, preprocessor_config.json resizes to 32x32 (hence 16x16 token grids)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("old_tokenizer")
    config = VQGANConfig.from_yaml(REPO / "configs" / "vqgan_tiny.yaml")
    processor = VQGANImageProcessor.from_model_config(config, size={"height": 32, "width": 32})
    VQGANModel(config).eval().save_pretrained(folder, image_processor=processor)
    return folder


def test_a_classifier_trains_on_a_folder_whose_config_and_processor_disagree(
    disagreeing_tokenizer_dir, labelled_image_dir, tmp_path, caplog
):
    with caplog.at_level(logging.WARNING):
        _train_consumer(
            train_classifier,
            _consumer_flags(TINY_CLASSIFIER, disagreeing_tokenizer_dir, labelled_image_dir, tmp_path / "classifier"),
        )
    assert json.loads((tmp_path / "classifier" / "config.json").read_text())["grid_size"] == [16, 16]
    assert "image_size=16" in caplog.text and "32x32" in caplog.text


def test_a_prior_trains_on_a_folder_whose_config_and_processor_disagree(
    disagreeing_tokenizer_dir, labelled_image_dir, tmp_path, caplog
):
    from diffusers import DiffusionPipeline

    with caplog.at_level(logging.WARNING):
        _train_consumer(
            train_prior,
            _consumer_flags(
                TINY_PRIOR, disagreeing_tokenizer_dir, labelled_image_dir, tmp_path / "prior", num_eval_images=0
            ),
        )
    assert "image_size=16" in caplog.text
    # The pipeline's tokenizer component is saved with the size it works at; the pipeline loads and generates.
    assert json.loads((tmp_path / "prior" / "vqgan" / "config.json").read_text())["image_size"] == 32
    pipeline = DiffusionPipeline.from_pretrained(tmp_path / "prior", trust_remote_code=True)
    images = pipeline(class_labels=[0], num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 32, 32, 3)


def test_an_old_folder_loads_with_its_processors_size_and_identical_outputs(disagreeing_tokenizer_dir, caplog):
    with caplog.at_level(logging.WARNING):
        model = AutoModel.from_pretrained(disagreeing_tokenizer_dir).eval()  # VQGANModel.from_pretrained aligns
    assert "image_size=16 (a 8x8 token grid)" in caplog.text and "makes 32x32 images" in caplog.text
    assert model.config.image_size == 32 and model.config.token_grid_size == (16, 16)
    as_saved = AutoModel.from_config(VQGANConfig.from_pretrained(disagreeing_tokenizer_dir)).eval()
    as_saved.load_state_dict(model.state_dict())
    assert as_saved.config.image_size == 16  # the config file alone still says the stale size
    pixel_values = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        before, after = as_saved(pixel_values), model(pixel_values)
    assert torch.equal(before.image_tokens, after.image_tokens) and after.image_tokens.shape == (2, 16, 16)
    assert torch.equal(before.reconstruction, after.reconstruction)


def test_python_consumers_of_an_old_folder_build_the_grid_its_tokenizer_makes(disagreeing_tokenizer_dir, tmp_path):
    from hf_vq import MaskGITModel, TokenViTForImageClassification

    classifier = TokenViTForImageClassification.from_tokenizer(str(disagreeing_tokenizer_dir), num_labels=2)
    prior = MaskGITModel.from_tokenizer(str(disagreeing_tokenizer_dir))
    assert tuple(classifier.config.grid_size) == (16, 16)
    assert (prior.config.grid_height, prior.config.grid_width) == (16, 16)
    VQGANModel.from_pretrained(disagreeing_tokenizer_dir).save_pretrained(tmp_path / "resaved")
    assert VQGANConfig.from_pretrained(tmp_path / "resaved").image_size == 32  # the warning's re-save fixes it


def test_set_image_size_keeps_the_architecture_and_refuses_sizes_the_factor_does_not_divide():
    config = VQGANConfig.from_yaml(REPO / "configs" / "vqgan_tiny.yaml")
    model = VQGANModel(config).eval()
    resized = set_image_size(VQGANConfig.from_yaml(REPO / "configs" / "vqgan_tiny.yaml"), 48)
    assert (resized.image_size, resized.attention_resolutions, resized.token_grid_size) == (48, [24], (24, 24))
    assert resized.level_has_attention == config.level_has_attention
    rebuilt = VQGANModel(resized).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)  # same modules, same shapes
    pixel_values = torch.rand(1, 3, 48, 48) * 2 - 1
    with torch.no_grad():
        assert torch.equal(rebuilt(pixel_values).reconstruction, model(pixel_values).reconstruction)
    with pytest.raises(ValueError, match="not a positive multiple of the tokenizer's downsampling factor 2"):
        set_image_size(resized, 33)


def test_a_processor_with_other_channels_than_the_weights_is_refused():
    config = VQGANConfig.from_yaml(REPO / "configs" / "vqgan_tiny.yaml")
    processor = VQGANImageProcessor.from_model_config(config, num_channels=1)
    with pytest.raises(ValueError, match="num_channels=1 but its config \\(and weights\\) num_channels=3"):
        align_image_size_with_processor(config, processor)


def test_a_resolution_the_factor_does_not_divide_is_a_flag_error(tmp_path):
    with pytest.raises(ConfigError, match=r"--resolution 33.*multiple"):
        build_model_and_processor(training_args(tmp_path, train_data_dir=str(tmp_path), resolution=33))


def test_fine_tuning_an_old_folder_goes_on_at_its_processors_size(
    disagreeing_tokenizer_dir, labelled_image_dir, tmp_path, caplog
):
    with caplog.at_level(logging.WARNING):
        model, processor = build_model_and_processor(
            training_args(
                tmp_path,
                train_data_dir=str(labelled_image_dir),
                pretrained_model_name_or_path=str(disagreeing_tokenizer_dir),
            )
        )
    assert "image_size=16" in caplog.text
    assert model.config.image_size == 32 and processor.size["height"] == 32


def test_a_classifier_resolution_other_than_the_tokenizers_is_refused(tokenizer_dir, labelled_image_dir, tmp_path):
    with pytest.raises(ConfigError, match="--resolution 32 differs from the tokenizer's image size 16"):
        _train_consumer(
            train_classifier,
            _consumer_flags(
                TINY_CLASSIFIER, tokenizer_dir, labelled_image_dir, tmp_path / "classifier", resolution=32
            ),
        )


@pytest.mark.parametrize("overrides", [{"grid_size": [8, 8]}, {"codebook_size": 64}])
def test_a_classifier_config_cannot_override_what_the_tokenizer_fixes(overrides):
    tokenizer_config = set_image_size(VQGANConfig.from_yaml(REPO / "configs" / "vqgan_tiny.yaml"), 32)
    name = next(iter(overrides))
    with pytest.raises(ValueError, match=f"{name}=.* \\(the tokenizer's: .*\\): these come from the tokenizer"):
        TokenViTConfig.from_tokenizer_config(tokenizer_config, "my/tokenizer", **overrides)


def test_a_prior_config_cannot_override_the_tokenizers_grid():
    tokenizer_config = set_image_size(VQGANConfig.from_yaml(REPO / "configs" / "vqgan_tiny.yaml"), 32)
    fitted = MaskGITConfig.from_tokenizer_config(tokenizer_config)
    assert (fitted.grid_height, fitted.grid_width) == (16, 16)
    expected = "grid_height=8 \\(the tokenizer's: 16\\), grid_width=8 \\(the tokenizer's: 16\\)"
    with pytest.raises(ValueError, match=expected):
        MaskGITConfig.from_tokenizer_config(tokenizer_config, grid_height=8, grid_width=8)


def test_a_processor_of_non_square_images_is_refused():
    config = VQGANConfig.from_yaml(REPO / "configs" / "vqgan_tiny.yaml")
    processor = VQGANImageProcessor.from_model_config(config, size={"height": 32, "width": 16})
    with pytest.raises(ValueError, match="makes 32x16 images; hf_vq tokenizers take square images"):
        align_image_size_with_processor(config, processor)


def test_a_saved_tokenizer_without_a_processor_keeps_its_configs_size(tokenizer_dir, tmp_path):
    folder = tmp_path / "no_processor"
    folder.mkdir()
    for path in tokenizer_dir.iterdir():
        if path.name != "preprocessor_config.json":
            (folder / path.name).write_bytes(path.read_bytes())
    model, processor = build_model_and_processor(
        training_args(tmp_path, train_data_dir=str(tmp_path), pretrained_model_name_or_path=str(folder))
    )
    assert model.config.image_size == 16 and processor.size["height"] == 16


def test_the_card_of_an_old_folder_states_its_processors_size(disagreeing_tokenizer_dir):
    from hf_vq.hub.model_card import render_model_card
    from hf_vq.hub.model_folder import load_model_folder

    card = render_model_card(load_model_folder(disagreeing_tokenizer_dir), "me/old-tokenizer").text
    assert "(32x32 pixels)" in card and "| `image_size` | 32 |" in card and "| `image_size` | 16 |" not in card
