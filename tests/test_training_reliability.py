"""Training runs that survive a kill at any moment, a failed save, divergence, a failing final evaluation and unusual
images: a real SIGKILL of a real training process inside a checkpoint save, then a resume."""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file

from hf_vq.training.checkpoint_state import load_custom_state
from hf_vq.training.checkpointing import (
    MANIFEST_FILE,
    PAUSE_IN_SAVE_ENV,
    TrainingState,
    checkpoint_problem,
    complete_checkpoint,
    resolve_resume_checkpoint,
    temporary_folder,
)
from hf_vq.training.divergence import DivergenceGuard
from hf_vq.training.errors import CheckpointError, FinalEvaluationError, TrainingDivergedError

from training_helpers import REPO, TINY_CONFIG, train, write_images

# GAN off and few steps: what is tested here is the loop around the model, not the model.
FAST = dict(discriminator_weight=0.0, max_train_steps=6, checkpointing_steps=2)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("data") / "images", count=24, size=20)


def _start_training(output_dir: Path, image_folder: Path, pause_at_step: int) -> subprocess.Popen:
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(REPO),
        **{PAUSE_IN_SAVE_ENV: str(pause_at_step)},
    )
    command = [
        sys.executable,
        "-m",
        "hf_vq.cli",
        "train-tokenizer",
        "--config",
        TINY_CONFIG,
        "--train_data_dir",
        str(image_folder),
        "--output_dir",
        str(output_dir),
        "--checkpoints_total_limit",
        "1",
        "--no-progress_bar",
    ] + [f"--{key}={value}" for key, value in FAST.items()]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(
                f"training ended (code {process.returncode}) before pausing in the save:\n"
                f"{process.stdout.read()[-3000:]}"
            )
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {path} after {timeout} s")
        time.sleep(0.1)


@pytest.mark.slow
def test_a_kill_inside_a_save_leaves_the_previous_checkpoint_and_the_run_resumes_exactly(
    image_folder, tmp_path, caplog
):
    output_dir = tmp_path / "killed"
    process = _start_training(output_dir, image_folder, pause_at_step=4)
    _wait_for(temporary_folder(output_dir, 4) / "paused", process)  # the state of step 4 is written, not completed
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL

    # checkpoints_total_limit=1, yet checkpoint-2 survives: it is pruned only once checkpoint-4 is complete.
    assert checkpoint_problem(output_dir / "checkpoint-2") is None
    assert not (output_dir / "checkpoint-4").exists()
    assert (temporary_folder(output_dir, 4) / "model.safetensors").is_file()  # the kill landed mid-save
    with caplog.at_level(logging.WARNING):
        assert resolve_resume_checkpoint("latest", output_dir) == output_dir / "checkpoint-2"
    assert "checkpoint-4.tmp" in caplog.text

    data = str(image_folder)
    result = train(output_dir, train_data_dir=data, resume_from_checkpoint="latest", checkpoints_total_limit=1, **FAST)
    assert result["global_step"] == 6
    assert sorted(p.name for p in output_dir.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-6"]
    uninterrupted = tmp_path / "uninterrupted"
    train(uninterrupted, train_data_dir=data, **FAST)
    first, second = load_file(uninterrupted / "model.safetensors"), load_file(output_dir / "model.safetensors")
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), f"{key} differs after the kill and the resume"


def _complete(output_dir: Path, step: int, content: bytes = b"weights") -> Path:
    temporary_folder(output_dir, step).mkdir(parents=True)
    (temporary_folder(output_dir, step) / "model.safetensors").write_bytes(content)
    return complete_checkpoint(output_dir, step, num_processes=1)


def test_latest_skips_incomplete_and_damaged_checkpoints_and_names_them(tmp_path, caplog):
    good = _complete(tmp_path, 2)
    (tmp_path / "checkpoint-4").mkdir()  # no manifest: a save that never completed (or an old hf_vq)
    damaged = _complete(tmp_path, 6)
    (damaged / "model.safetensors").write_bytes(b"trunc")  # a file that no longer matches the manifest
    with caplog.at_level(logging.WARNING):
        assert resolve_resume_checkpoint("latest", tmp_path) == good
    assert "checkpoint-4" in caplog.text and MANIFEST_FILE in caplog.text
    assert "checkpoint-6" in caplog.text and "model.safetensors has 5 bytes instead of 7" in caplog.text
    with pytest.raises(CheckpointError, match="cannot resume from .*checkpoint-6"):
        resolve_resume_checkpoint(str(damaged), tmp_path)


def test_latest_falls_back_when_the_newest_checkpoint_does_not_load(image_folder, tmp_path, caplog, capsys):
    output_dir = tmp_path / "run"
    train(output_dir, train_data_dir=str(image_folder), **(FAST | {"max_train_steps": 4}))
    weights = output_dir / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(b"\0" * weights.stat().st_size)  # same size, so the manifest cannot tell: loading can
    with caplog.at_level(logging.WARNING):
        result = train(output_dir, train_data_dir=str(image_folder), resume_from_checkpoint="latest", **FAST)
    assert "could not load" in caplog.text and "checkpoint-4" in caplog.text
    assert re.search(r"resuming from \S*checkpoint-2 \(step 2\)", capsys.readouterr().out)
    assert result["global_step"] == 6


def test_a_failed_save_keeps_the_previous_checkpoints(image_folder, tmp_path, monkeypatch):
    """A full disk during the save of step 4: a clear error, no half-written folder, checkpoint-2 kept."""
    from accelerate import Accelerator

    real_save_state = Accelerator.save_state

    def save_state_on_a_full_disk(self, output_dir=None, **kwargs):
        if output_dir.endswith("checkpoint-4.tmp"):
            Path(output_dir).mkdir()
            Path(output_dir, "model.safetensors").write_bytes(b"partial")
            raise OSError(28, "No space left on device")
        return real_save_state(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", save_state_on_a_full_disk)
    output_dir = tmp_path / "run"
    with pytest.raises(CheckpointError, match=r"checkpoint-4 \(OSError: .*No space left.*newest: .*checkpoint-2"):
        train(output_dir, train_data_dir=str(image_folder), checkpoints_total_limit=1, **FAST)
    assert checkpoint_problem(output_dir / "checkpoint-2") is None
    assert sorted(p.name for p in output_dir.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-2"]


def _nan_at_call(monkeypatch, call: int):
    """Make the tokenizer's reconstruction loss NaN in its `call`-th training batch (= that optimizer step)."""
    from hf_vq.training import tokenizer_loop

    calls = {"count": 0}
    real = tokenizer_loop.reconstruction_loss

    def reconstruction_loss(*args, **kwargs):
        calls["count"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["count"] == call else loss

    monkeypatch.setattr(tokenizer_loop, "reconstruction_loss", reconstruction_loss)


def test_divergence_stops_naming_the_step_and_the_last_good_checkpoint(image_folder, tmp_path, monkeypatch):
    _nan_at_call(monkeypatch, 5)
    output_dir = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=r"at step 5: the generator loss is nan.*checkpoint-4"):
        train(output_dir, train_data_dir=str(image_folder), **FAST)
    assert not (output_dir / "model.safetensors").exists() and not (output_dir / "checkpoint-6").exists()


def test_a_huge_learning_rate_stops_the_run_instead_of_saving_garbage(image_folder, tmp_path):
    for learning_rate in (1e2, 1e5):  # NaN gradients; weights so large that the quantizer sees Inf activations
        output_dir = tmp_path / f"lr{learning_rate:g}"
        with pytest.raises(TrainingDivergedError, match=r"diverged at step \d+"):
            train(output_dir, train_data_dir=str(image_folder), learning_rate=learning_rate, max_grad_norm=0.0, **FAST)
        assert not (output_dir / "model.safetensors").exists()


def test_skip_step_drops_the_bad_update_and_finishes(image_folder, tmp_path, monkeypatch):
    _nan_at_call(monkeypatch, 3)
    result = train(tmp_path / "run", train_data_dir=str(image_folder), on_divergence="skip_step", **FAST)
    assert result["global_step"] == 6 and result["metrics"]["skipped_steps"] == 1
    assert all(torch.isfinite(tensor).all() for tensor in load_file(tmp_path / "run" / "model.safetensors").values())


def test_the_classifier_loop_stops_on_divergence_too(tokenizer_dir, tmp_path, monkeypatch):
    """train-classifier (and any command on `train_single_model`) has the same guard and the same checkpoints."""
    from hf_vq.training import classifier_loop
    from hf_vq.training.classifier_command import train_classifier

    real_loss, calls = classifier_loop.classification_loss, {"count": 0}

    def nan_in_the_third_step(model, batch):
        calls["count"] += 1
        loss, logs = real_loss(model, batch)
        return (loss * float("nan") if calls["count"] == 3 else loss), logs

    monkeypatch.setattr(classifier_loop, "classification_loss", nan_in_the_third_step)
    labeled = tmp_path / "labeled"  # imagefolder: a subfolder per class, train/ and test/ splits
    for split, count in (("train", 8), ("test", 2)):
        for seed, name in enumerate(("a", "b")):
            write_images(labeled / split / name, count=count, size=16, seed=seed)
    output_dir = tmp_path / "classifier"
    with pytest.raises(TrainingDivergedError, match=r"at step 3: the loss is nan.*checkpoint-2"):
        train_classifier(
            {
                "config": str(REPO / "configs" / "token_vit_tiny.yaml"),
                "tokenizer_name_or_path": str(tokenizer_dir),
                "train_data_dir": str(labeled),
                "output_dir": str(output_dir),
                "cache_dir": str(tmp_path / "cache"),
                "checkpointing_steps": 2,
                "progress_bar": False,
            }
        )
    assert checkpoint_problem(output_dir / "checkpoint-2") is None and not (output_dir / "model.safetensors").exists()


def test_the_guard_stops_a_loss_that_jumps_above_its_running_average():
    guard = DivergenceGuard(None, TrainingState(), "nowhere", factor=10.0)
    weight = torch.nn.Parameter(torch.ones(3))
    weight.grad = torch.ones(3)
    for step in range(12):
        assert guard.check(torch.tensor(1.0 + 0.1 * (step % 3)), [weight])
        guard.state.global_step += 1
    assert guard.check(torch.tensor(5.0), [weight])  # a bump, not a divergence
    with pytest.raises(TrainingDivergedError, match=r"step 13: the loss jumped to 50.*--divergence_factor 10"):
        guard.check(torch.tensor(50.0), [weight])
    overfit = DivergenceGuard(None, TrainingState(), "nowhere", factor=10.0)
    for loss in [2.0] * 10 + [1e-3] * 30:  # a loss that fell from 2 to 0.001...
        assert overfit.check(torch.tensor(loss), [weight])
    assert overfit.check(torch.tensor(0.05), [weight])  # ...spikes 50-fold in noise, still below the start: no stop
    weight.grad = torch.tensor([1.0, float("inf"), 0.0])
    skipping = DivergenceGuard(None, TrainingState(), "nowhere", on_divergence="skip_step")
    assert not skipping.check(torch.tensor(1.0), [weight]) and skipping.state.skipped_steps == 1


def test_the_final_model_is_saved_before_a_failing_final_evaluation(image_folder, tmp_path, monkeypatch):
    from hf_vq.models.vqgan import VQGANImageProcessor, VQGANModel
    from hf_vq.training import tokenizer_loop

    def failing_evaluation(*args, **kwargs):
        raise RuntimeError("metric backend crashed")

    monkeypatch.setattr(tokenizer_loop, "evaluate_reconstructions", failing_evaluation)
    output_dir = tmp_path / "run"
    with pytest.raises(FinalEvaluationError, match=f"metric backend crashed.*saved in {output_dir}"):
        train(output_dir, train_data_dir=str(image_folder), eval_steps=0, **FAST)
    VQGANModel.from_pretrained(output_dir)
    VQGANImageProcessor.from_pretrained(output_dir)
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 6 and "metric backend crashed" in metrics["evaluation_error"]


def test_train_time_and_throughput_add_up_across_a_resume(image_folder, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from hf_vq.training import loop

    def clock(tick: float) -> SimpleNamespace:  # the loop's clock, advancing `tick` seconds per reading
        now = [0.0]
        return SimpleNamespace(perf_counter=lambda: now.__setitem__(0, now[0] + tick) or now[0])

    output_dir = tmp_path / "run"
    monkeypatch.setattr(loop, "time", clock(10.0))  # a slow first part...
    first = train(output_dir, train_data_dir=str(image_folder), **(FAST | {"max_train_steps": 2}))["metrics"]
    state = load_custom_state(output_dir / "checkpoint-2", 0)  # the TrainingState, stored as JSON (no pickle)
    assert 20 <= state["train_seconds"] <= first["train_seconds"]
    monkeypatch.setattr(loop, "time", clock(0.001))  # ...and a fast resumed part: the total keeps the first
    resumed = train(output_dir, train_data_dir=str(image_folder), resume_from_checkpoint="latest", **FAST)["metrics"]
    assert state["train_seconds"] < resumed["train_seconds"] < state["train_seconds"] + 1
    assert resumed["images_seen"] > first["images_seen"] > 0  # counted over the whole run, like the time
    assert resumed["train_images_per_second"] == pytest.approx(
        resumed["images_seen"] / resumed["train_seconds"], rel=0.01
    )


# ------------------------------------------------------------------------------------------------ images


def _ramp(dtype, high) -> np.ndarray:
    return np.linspace(0, high, 16 * 16).reshape(16, 16).astype(dtype)


def test_sixteen_bit_png_keeps_its_range_in_training_data_and_in_the_processor(tmp_path):
    from hf_vq.data import ImageTransform
    from hf_vq.models.vqgan import VQGANImageProcessor

    path = tmp_path / "ramp16.png"
    PIL.Image.fromarray(_ramp(np.uint16, 65535)).save(path)
    assert PIL.Image.open(path).mode == "I;16"
    processor = VQGANImageProcessor(size={"height": 16, "width": 16}, num_channels=1, downsampling_factor=4)
    for pixel_values in (
        ImageTransform(num_channels=1)(str(path)),
        ImageTransform(processor)(str(path)),
        processor(PIL.Image.open(path), return_tensors="pt").pixel_values[0],
        processor(_ramp(np.uint16, 65535), return_tensors="pt").pixel_values[0],
    ):
        # A ramp over the full 16-bit range: black to white, mid-grey on average (clipping gave nearly all white).
        assert float(pixel_values.min()) == -1.0 and float(pixel_values.max()) == 1.0
        assert abs(float(pixel_values.mean())) < 0.01


@pytest.mark.parametrize(
    "make_image, expected_mean",
    [
        (lambda: PIL.Image.fromarray(_ramp(np.uint16, 65535).byteswap().view(">u2")), 127.5),  # I;16B
        (lambda: PIL.Image.fromarray(_ramp(np.int32, 65535)), 127.5),  # "I", as older Pillow reads 16-bit PNGs
        (lambda: PIL.Image.fromarray(_ramp(np.float32, 1.0)), 127.5),  # "F", 0..1
        (lambda: PIL.Image.new("LA", (16, 16), (0, 0)), 255.0),  # fully transparent: the white background
        (lambda: _transparent_palette_image(), 255.0),
        (lambda: PIL.Image.new("CMYK", (16, 16), (0, 0, 0, 0)), 255.0),  # no ink: white
        (lambda: PIL.Image.new("1", (16, 16), 1), 255.0),
    ],
)
def test_unusual_modes_are_converted_with_their_real_range(make_image, expected_mean):
    from hf_vq.models.vqgan.image_processing_vqgan import convert_image_mode

    image = make_image()
    for mode in ("L", "RGB"):
        converted = convert_image_mode(image, mode)
        assert converted.mode == mode
        assert np.asarray(converted, dtype=np.float64).mean() == pytest.approx(expected_mean, abs=1.0), image.mode


def _transparent_palette_image() -> PIL.Image.Image:
    image = PIL.Image.new("P", (16, 16), 0)
    image.putpalette([0, 0, 0] * 256)
    image.info["transparency"] = 0
    return image


def test_a_corrupt_file_is_named_in_its_warning(caplog, monkeypatch):
    from hf_vq.data import transforms

    monkeypatch.setattr(transforms, "_warnings_given", 0)
    with caplog.at_level(logging.WARNING):
        assert transforms.ImageTransform(num_channels=3)({"bytes": b"not a png", "path": "shelf/cat_042.png"}) is None
    assert "shelf/cat_042.png" in caplog.text
