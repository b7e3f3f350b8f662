"""The end of run every training command shares (hf_vq/training/end_of_run.py): the EMA weight swap, the one place
the final folder is written, metrics.json when the final evaluation fails (fast: no training run)."""

import json
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel

from hf_vq.training.args import TOKENIZER_COMMAND, resolve_args
from hf_vq.training.checkpointing import TrainingState
from hf_vq.training.end_of_run import ema_weights, finish_run, save_final_folder
from hf_vq.training.errors import FinalEvaluationError, TrainingDivergedError

from training_helpers import TINY_CONFIG, reset_accelerate, write_images


@pytest.fixture
def accelerator():
    reset_accelerate()
    return Accelerator(cpu=True)


@pytest.fixture
def config(tmp_path):
    images = write_images(tmp_path / "images", 2)
    return resolve_args(
        TOKENIZER_COMMAND,
        {
            "config": TINY_CONFIG,
            "train_data_dir": str(images),
            "output_dir": str(tmp_path / "run"),
            "hub_token": "hf_secret",
        },
    )


def test_ema_weights_are_held_inside_the_block_and_the_live_ones_come_back(accelerator):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ema = EMAModel(model.parameters(), decay=0.5, use_ema_warmup=False)
    for _ in range(2):  # diffusers' first EMA step copies the weights; the second one averages
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(1.0)
        ema.step(model.parameters())
    trained = [parameter.detach().clone() for parameter in model.parameters()]
    averaged = [shadow.clone() for shadow in ema.shadow_params]
    assert not torch.equal(averaged[0], trained[0])
    with ema_weights(accelerator, model, ema) as unwrapped:
        for parameter, average in zip(unwrapped.parameters(), averaged):
            torch.testing.assert_close(parameter, average)
    for parameter, after in zip(model.parameters(), trained):
        torch.testing.assert_close(parameter, after)
    with ema_weights(accelerator, model, None) as unwrapped:  # no EMA: the model as it is
        assert unwrapped is model


def test_the_final_folder_is_written_once_with_the_flags_and_never_with_bad_weights(accelerator, config, tmp_path):
    model, written = torch.nn.Linear(2, 2), []
    folder = save_final_folder(config, accelerator, model, 3, written.append)
    # Written once, into a staging folder inside --output_dir that then replaces the earlier model (final_save.py).
    assert len(written) == 1 and written[0].parent == folder and folder == (tmp_path / "run").resolve()
    assert not written[0].exists()
    flags = json.loads((folder / "training_config.json").read_text())
    assert flags["learning_rate"] == config.learning_rate and flags["model_config"]["codebook_size"] == 32
    assert "hub_token" not in flags and "hf_secret" not in (folder / "training_config.json").read_text()
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(TrainingDivergedError, match="Linear.weight holds NaN"):
        save_final_folder(config, accelerator, model, 4, written.append)
    assert len(written) == 1


def test_a_failed_final_evaluation_keeps_the_summary_and_names_the_folder(accelerator, config):
    state = TrainingState()
    state.global_step = 5

    def failing_evaluation() -> dict:
        raise RuntimeError("judge weights missing")

    with pytest.raises(FinalEvaluationError, match="saved in .*run"):
        finish_run(config, accelerator, state, {"train_steps": 5}, failing_evaluation)
    metrics = json.loads((Path(config.output_dir) / "metrics.json").read_text())
    assert metrics == {"train_steps": 5, "evaluation_error": "RuntimeError: judge weights missing"}
    result = finish_run(config, accelerator, state, {"train_steps": 5}, lambda: {"psnr": float("nan"), "ssim": 0.5})
    assert result["metrics"] == {"psnr": None, "ssim": 0.5, "train_steps": 5} and result["global_step"] == 5


@pytest.mark.parametrize("command", ["train-tokenizer", "train-classifier"])
def test_the_push_gets_the_tokenizer_repo_a_classifier_reads(accelerator, config, tmp_path, monkeypatch, command):
    """A classifier's (or prior's) `--tokenizer_hub_id` reaches the push that links its card to the tokenizer; the
    tokenizer's own command has no such flag. Stopped at the network: the upload itself is tested in test_hub*.py."""
    import dataclasses

    from hf_vq.hub import push as push_module
    from hf_vq.training.args import ClassifierTrainingConfig, flag_values
    from hf_vq.training.end_of_run import publish_final_metrics

    uploads = []
    monkeypatch.setattr(push_module, "push_to_hub", lambda folder, repo_id, **options: uploads.append(options))
    hub = {"push_to_hub": True, "hub_model_id": "org/model"}
    if command == "train-tokenizer":
        run_config = dataclasses.replace(config, **hub)
    else:
        shared = {item.name for item in dataclasses.fields(ClassifierTrainingConfig)} & set(flag_values(config))
        flags = {name: value for name, value in flag_values(config).items() if name in shared}
        run_config = ClassifierTrainingConfig(**{**flags, **hub, "tokenizer_hub_id": "org/tokenizer"})
    publish_final_metrics(run_config, accelerator, tmp_path, {"accuracy": 0.5}, step=1)
    expected = "org/tokenizer" if command == "train-classifier" else None
    assert len(uploads) == 1 and uploads[0]["tokenizer_hub_id"] == expected
