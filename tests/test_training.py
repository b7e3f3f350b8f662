"""End-to-end tokenizer training on tiny data: a loadable checkpoint, exact resume, skipped corrupt images, and
clear errors for data that cannot be used."""

import json

import pytest
import torch
from safetensors.torch import load_file

from hf_vq.data import ImageDatasetError
from hf_vq.models.vqgan import VQGANImageProcessor, VQGANModel

from training_helpers import assert_same_weights, train, train_and_resume_from_step_2, write_images


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("data") / "images", count=24, size=20)


def test_a_few_steps_end_with_a_loadable_checkpoint(image_folder, tmp_path):
    output_dir = tmp_path / "run"
    result = train(
        output_dir,
        train_data_dir=str(image_folder),
        max_train_steps=6,
        checkpointing_steps=2,
        checkpoints_total_limit=2,
        discriminator_start=3,
        eval_steps=3,
        use_ema=True,
    )
    assert result["global_step"] == 6
    assert sorted(p.name for p in output_dir.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    metrics = json.loads((output_dir / "metrics.json").read_text())
    for key in ("psnr", "ssim", "codebook_usage", "perplexity", "train_images_per_second", "skipped_images"):
        assert key in metrics, key
    assert 0 < metrics["codebook_usage"] <= 1 and metrics["skipped_images"] == 0
    assert (output_dir / "samples.png").is_file() and (output_dir / "samples-3.png").is_file()
    log = [json.loads(line) for line in (output_dir / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert any("discriminator_loss" in record for record in log)  # the GAN started at step 3
    assert any("eval/psnr" in record for record in log)

    model = VQGANModel.from_pretrained(output_dir).eval()
    processor = VQGANImageProcessor.from_pretrained(output_dir)
    pixel_values = processor(
        torch.randint(0, 255, (20, 20, 3), dtype=torch.uint8).numpy(), return_tensors="pt"
    ).pixel_values
    assert model.encode(pixel_values).image_tokens.shape == (1, 8, 8)
    # With --use_ema the folder holds the EMA weights (compared by name: every parameter), and the live buffers.
    live = result["model"].state_dict()
    ema = _ema_weights_in_checkpoint(output_dir / "checkpoint-6", result["model"])
    saved = load_file(output_dir / "model.safetensors")
    assert saved.keys() == live.keys()
    for key, value in saved.items():
        assert torch.equal(value, ema.get(key, live[key])), key
    assert any(not torch.equal(ema[key], live[key]) for key in ema if key.startswith("decoder."))


def _ema_weights_in_checkpoint(checkpoint, model) -> dict:
    """The EMA weights a checkpoint holds (diffusers' EMAModel state, `shadow_params` in parameter order), by name."""
    from hf_vq.training.checkpoint_state import load_custom_state

    for index in range(len(list(checkpoint.glob("custom_state_*.json")))):  # stored as JSON + safetensors
        state = load_custom_state(checkpoint, index)
        if isinstance(state, dict) and "shadow_params" in state:
            names = [name for name, _ in model.named_parameters()]
            assert len(names) == len(state["shadow_params"])
            return dict(zip(names, state["shadow_params"]))
    raise AssertionError(f"no EMA state in {checkpoint}")


def test_resume_mid_epoch_continues_with_the_next_batch(image_folder, tmp_path):
    """Fast exactness check of resuming (the slow test below adds the GAN, EMA and flips): a run resumed from its
    step-2 checkpoint ends with the same weights as the run that went on, so it trained on the same third batch."""
    uninterrupted, resumed = train_and_resume_from_step_2(tmp_path, train_data_dir=str(image_folder))
    assert resumed["metrics"]["images_seen"] == uninterrupted["metrics"]["images_seen"] == 12
    assert_same_weights(uninterrupted, resumed)


@pytest.mark.slow
def test_resumed_run_matches_an_uninterrupted_one(image_folder, tmp_path):
    # Everything that could break exactness is on: a GAN that starts mid-run, LeCam, EMA, random flips, a resume
    # in the middle of an epoch (23 training images, batches of 4: 6 batches per epoch, resume after 5).
    flags = dict(
        train_data_dir=str(image_folder),
        checkpointing_steps=5,
        discriminator_start=3,
        lecam_weight=0.01,
        use_ema=True,
        random_flip=True,
        lr_scheduler="constant_with_warmup",
        lr_warmup_steps=2,
    )
    uninterrupted = tmp_path / "uninterrupted"
    train(uninterrupted, max_train_steps=10, resume_from_checkpoint="latest", **flags)  # nothing yet: a fresh start
    resumed = tmp_path / "resumed"
    train(resumed, max_train_steps=5, **flags)
    result = train(resumed, max_train_steps=10, resume_from_checkpoint="latest", **flags)
    assert result["global_step"] == 10
    for name in ("model.safetensors", "checkpoint-10/model.safetensors", "checkpoint-10/model_1.safetensors"):
        first, second = load_file(uninterrupted / name), load_file(resumed / name)
        for key in first:
            assert torch.equal(first[key], second[key]), f"{name}: {key} differs after resuming"


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    folder = tmp_path / "images"
    write_images(folder / "train", count=12, corrupt=2)
    write_images(folder / "test", count=4, seed=1)
    # 14 files, batches of 4: one epoch is 4 steps, and no batch is all corrupt.
    result = train(
        tmp_path / "run",
        train_data_dir=str(folder),
        max_train_steps=None,
        num_train_epochs=1,
        discriminator_weight=0.0,
        checkpointing_steps=0,
    )
    assert result["global_step"] == 4
    assert result["metrics"]["skipped_images"] == 2
    assert result["metrics"]["images_seen"] == 12


def test_only_corrupt_images_is_a_clear_error(tmp_path):
    folder = write_images(tmp_path / "images", count=0, corrupt=3)
    with pytest.raises(RuntimeError, match="no readable image"):
        train(tmp_path / "run", train_data_dir=str(folder), discriminator_weight=0.0)


def test_missing_image_column_is_a_clear_error(image_folder, tmp_path):
    with pytest.raises(ImageDatasetError, match="no column 'pixels'"):
        train(tmp_path / "run", train_data_dir=str(image_folder), image_column="pixels")


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ImageDatasetError, match="empty gives no 'train' split with images"):
        train(tmp_path / "run", train_data_dir=str(tmp_path / "empty"))


def test_unavailable_loss_and_metric_weights_fail_before_training(image_folder, tmp_path):
    from hf_vq.evaluation import InceptionWeightsNotFoundError
    from hf_vq.training import LPIPSWeightsError

    with pytest.raises(LPIPSWeightsError, match="--lpips_weights"):
        train(tmp_path / "lpips", train_data_dir=str(image_folder), perceptual_weight=0.1)
    with pytest.raises(InceptionWeightsNotFoundError, match="missing"):
        train(tmp_path / "rfid", train_data_dir=str(image_folder), rfid=True, rfid_weights=str(tmp_path / "none.pth"))
    assert not (tmp_path / "lpips" / "model.safetensors").exists()


def test_push_to_hub_uploads_the_saved_folder_to_a_real_hub(image_folder, tmp_path, monkeypatch):
    """--push_to_hub sends the saved folder to a Hub server on loopback through huggingface_hub's real client."""
    from huggingface_hub import HfApi, constants
    from hub_server import HubServer

    server = HubServer(tmp_path / "hub", tokens={"hf_test_token": "me"}).start()
    try:
        endpoint = server.url
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-file"))
        train(
            tmp_path / "run",
            train_data_dir=str(image_folder),
            max_train_steps=1,
            discriminator_weight=0.0,
            push_to_hub=True,
            hub_model_id="me/tiny-vqgan",
            hub_token="hf_test_token",
        )
        info = HfApi(endpoint=endpoint, token="hf_test_token").model_info("me/tiny-vqgan", files_metadata=False)
        files = {sibling.rfilename for sibling in info.siblings}
    finally:
        server.stop()
    assert {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "metrics.json",
        "samples.png",
        "training_config.json",
        "README.md",
    } <= files
    assert "hf_test_token" not in (tmp_path / "run" / "training_config.json").read_text()
