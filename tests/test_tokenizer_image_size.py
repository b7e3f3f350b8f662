"""Issue 28: one source of truth for a tokenizer's input size and token grid.

A tokenizer trained at `--resolution R` saves a config whose `image_size` is R, so that the classifier and the prior
trained on its tokens fit the grid it makes; a folder saved before that fix (config and processor disagreeing) still
loads and works, its processor's size winning with a warning that names both values."""

import json
import logging

import pytest
import torch

from hf_vq import VQGANConfig, VQGANImageProcessor, VQGANModel
from hf_vq.training.classifier_command import train_classifier
from hf_vq.training.prior_command import train_prior

from training_helpers import REPO, one_thread, reset_accelerate, train

TINY_CLASSIFIER = str(REPO / "configs" / "token_vit_tiny.yaml")
TINY_PRIOR = str(REPO / "configs" / "maskgit_tiny.yaml")


def _consumer_flags(config, tokenizer_dir, image_dir, output_dir, **overrides):
    return {"config": config, "tokenizer_name_or_path": str(tokenizer_dir), "train_data_dir": str(image_dir),
            "output_dir": str(output_dir), "cache_dir": str(output_dir.parent / "cache"), "max_train_steps": 2,
            **overrides}


def _train_consumer(command, flags):
    reset_accelerate()
    with one_thread():
        return command(flags)


def test_tokenizer_trained_at_another_resolution_feeds_a_classifier_and_a_prior(labelled_image_dir, tmp_path):
    tokenizer_dir = tmp_path / "tokenizer"
    train(tokenizer_dir, train_data_dir=str(labelled_image_dir), resolution=32, max_train_steps=2,
          discriminator_weight=0.0, max_eval_samples=4, num_sample_images=2)
    config = json.loads((tokenizer_dir / "config.json").read_text())
    processor = json.loads((tokenizer_dir / "preprocessor_config.json").read_text())
    assert config["image_size"] == 32 and processor["size"] == {"height": 32, "width": 32}
    # The YAML's attention (at the 8x8 level of 16-pixel images) stays on the same level: 16x16 for 32-pixel images.
    assert config["attention_resolutions"] == [16]

    classifier = _train_consumer(train_classifier, _consumer_flags(TINY_CLASSIFIER, tokenizer_dir, labelled_image_dir,
                                                                  tmp_path / "classifier"))
    assert classifier["metrics"]["global_step"] == 2
    assert json.loads((tmp_path / "classifier" / "config.json").read_text())["grid_size"] == [16, 16]

    _train_consumer(train_prior, _consumer_flags(TINY_PRIOR, tokenizer_dir, labelled_image_dir, tmp_path / "prior",
                                                 num_eval_images=0))
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
        disagreeing_tokenizer_dir, labelled_image_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        _train_consumer(train_classifier, _consumer_flags(TINY_CLASSIFIER, disagreeing_tokenizer_dir,
                                                          labelled_image_dir, tmp_path / "classifier"))
    assert json.loads((tmp_path / "classifier" / "config.json").read_text())["grid_size"] == [16, 16]
    assert "image_size=16" in caplog.text and "32x32" in caplog.text
