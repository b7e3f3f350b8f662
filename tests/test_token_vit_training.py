"""`hf-vq train-classifier`: tokenization cached by datasets.map and reused, the Accelerate loop, the saved
folder, the pixel-ViT reference, resume, and flags that cannot work."""

import json

import datasets
import numpy as np
import pytest
import torch
import transformers

from hf_vq import VQGANImageProcessor, VQGANModel
from hf_vq.cli import main as cli_main
from hf_vq.data import ImageTransform
from hf_vq.training.args import ConfigError
from hf_vq.training.classifier_command import resolve_classifier_args, train_classifier
from hf_vq.training.token_data import ImageEncoder, encode_split

from training_helpers import CLASSES

TINY_CONFIG = "configs/token_vit_tiny.yaml"


@pytest.fixture(scope="module")
def image_dir(labelled_image_dir):
    return labelled_image_dir


def _flags(tokenizer_dir, image_dir, tmp_path, **overrides):
    return {
        "config": TINY_CONFIG,
        "tokenizer_name_or_path": str(tokenizer_dir),
        "train_data_dir": str(image_dir),
        "output_dir": str(tmp_path / "classifier"),
        "cache_dir": str(tmp_path / "cache"),
        **overrides,
    }


def test_training_saves_a_pipeline_ready_folder_and_reuses_the_cached_tokens(
    tokenizer_dir, image_dir, tmp_path, monkeypatch
):
    result = train_classifier(_flags(tokenizer_dir, image_dir, tmp_path, hub_token="hf_never_written"))
    output_dir = tmp_path / "classifier"
    for written in [output_dir / "training_config.json", *(output_dir / "logs").iterdir()]:
        assert "hf_never_written" not in written.read_text(), written
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics == result["metrics"]
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert "top5_accuracy" not in metrics  # 3 classes: the top 5 hold them all, so it says nothing
    assert (metrics["eval_examples"], metrics["global_step"], metrics["model_type"]) == (9, 4, "token_vit")
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "training_config.json"} <= {
        path.name for path in output_dir.iterdir()
    }
    assert sorted(path.name for path in output_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    config = json.loads((output_dir / "config.json").read_text())
    assert set(config["id2label"].values()) == set(CLASSES)
    assert config["tokenizer_name_or_path"] == str(tokenizer_dir.resolve())
    predictions = transformers.pipeline("image-classification", model=str(output_dir))(
        str(image_dir / "test/red/0.png")
    )
    assert {p["label"] for p in predictions} == set(CLASSES)

    # A second run must not tokenize anything: the encoder fails if it is called at all.
    cache_files = sorted((tmp_path / "cache").rglob("*.arrow"))
    monkeypatch.setattr(ImageEncoder, "__call__", lambda self, batch: pytest.fail("tokenized again despite the cache"))
    again = train_classifier(_flags(tokenizer_dir, image_dir, tmp_path, output_dir=str(tmp_path / "again")))
    assert again["metrics"]["accuracy"] == metrics["accuracy"]  # same seed, same tokens, same model
    assert sorted((tmp_path / "cache").rglob("*.arrow")) == cache_files


def test_cache_key_follows_the_tokenizer_weights_and_the_data(tokenizer_dir, tmp_path):
    tokenizer = VQGANModel.from_pretrained(tokenizer_dir).eval()
    transform = ImageTransform(VQGANImageProcessor.from_pretrained(tokenizer_dir), resolution=16)
    images = [np.full((16, 16, 3), value, dtype=np.uint8) for value in (0, 100, 200)]
    dataset = datasets.Dataset.from_dict({"image": images, "label": [0, 1, 2]})

    def encode(model, data):
        encoder = ImageEncoder(transform, model, "image", "label")
        encoded, cache_file = encode_split(data, encoder, tmp_path, batch_size=2, split_name="train")
        return encoder.calls, encoded, cache_file

    calls, encoded, first_file = encode(tokenizer, dataset)
    rows = encoded[:]
    assert calls == 2 and rows["image_tokens"].shape == (3, 8, 8) and rows["labels"].tolist() == [0, 1, 2]
    expected = tokenizer.encode(torch.stack([transform(image) for image in images])).image_tokens
    torch.testing.assert_close(rows["image_tokens"].long(), expected)
    assert encode(tokenizer, dataset)[0] == 0  # cached
    with torch.no_grad():
        next(tokenizer.parameters()).add_(0.01)
    calls, _, changed_file = encode(tokenizer, dataset)
    assert calls == 2 and changed_file != first_file  # new weights, new tokens
    assert encode(tokenizer, dataset.select([0, 1]))[0] == 1  # other data, new tokens


def test_cli_trains_the_pixel_reference_and_resumes(tokenizer_dir, image_dir, tmp_path, capsys):
    flags = _flags(tokenizer_dir, image_dir, tmp_path, output_dir=str(tmp_path / "pixel"))
    argv = ["train-classifier", "--model_type", "pixel_vit"] + [f"--{key}={value}" for key, value in flags.items()]
    cli_main(argv + ["--max_train_steps", "2"])
    metrics = json.loads((tmp_path / "pixel/metrics.json").read_text())
    assert (metrics["model_type"], metrics["global_step"]) == ("pixel_vit", 2)  # the flag beat the YAML's 4 steps
    model = transformers.AutoModelForImageClassification.from_pretrained(tmp_path / "pixel")
    assert isinstance(model, transformers.ViTForImageClassification)
    assert (model.config.patch_size, model.config.hidden_size) == (2, 32)  # tokenizer's downsampling factor, same size
    cli_main(argv + ["--max_train_steps", "4", "--resume_from_checkpoint", "latest"])
    printed = capsys.readouterr().out
    assert "resuming from" in printed and "checkpoint-2" in printed
    assert json.loads((tmp_path / "pixel/metrics.json").read_text())["global_step"] == 4


@pytest.mark.parametrize(
    "override, message",
    [
        ({"tokenizer_name_or_path": None}, "no tokenizer"),
        ({"streaming": True}, "unknown flag --streaming"),  # the images are tokenized once: no streaming flag at all
        ({"train_batch_size": 0}, "train_batch_size must be >= 1"),
    ],
)
def test_flags_that_cannot_work_are_refused(override, message, tokenizer_dir, image_dir, tmp_path):
    with pytest.raises(ConfigError, match=message):
        resolve_classifier_args(_flags(tokenizer_dir, image_dir, tmp_path, **override))


def test_unknown_config_keys_are_refused(tmp_path, tokenizer_dir):
    config = tmp_path / "bad.yaml"
    config.write_text("training:\n  max_train_step: 3\n")
    with pytest.raises(ConfigError, match="max_train_step"):
        resolve_classifier_args({"config": str(config), "tokenizer_name_or_path": str(tokenizer_dir)})
