"""What surrounds the checkpoints: an atomic final folder (real kills inside the final save), checksums that catch a
same-size corruption, no pickle from a checkpoint folder running code, the divergence guard's first steps, one run
per output directory, and SIGINT/SIGTERM to a real training process."""

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_vq.training.checkpoint_state import custom_state_files, load_custom_state
from hf_vq.training.checkpointing import (
    MANIFEST_FILE,
    PAUSE_IN_SAVE_ENV,
    TrainingState,
    checkpoint_problem,
    complete_checkpoint,
    temporary_folder,
)
from hf_vq.training.divergence import WARMUP_STEPS, DivergenceGuard
from hf_vq.training.errors import CheckpointError, TrainingDivergedError
from hf_vq.training.final_save import (
    OLD_FOLDER,
    PAUSE_IN_FINAL_SAVE_ENV,
    STAGING_FOLDER,
    FinalSaveError,
    recover_interrupted_final_save,
    write_folder_atomically,
)
from hf_vq.training.interrupts import InterruptHandler
from hf_vq.training.run_lock import LOCK_FILE, RunLockedError, acquire_run_lock, release_run_lock

from training_helpers import REPO, TINY_CONFIG, child_pids, train, write_images

FAST = dict(discriminator_weight=0.0, max_train_steps=4, checkpointing_steps=2)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("data") / "images", count=24, size=20)


def _command(output_dir: Path, image_folder: Path, **flags) -> list[str]:
    flags = FAST | flags
    return [
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
        "--no-progress_bar",
    ] + [f"--{key}={value}" for key, value in flags.items()]


def _start(output_dir: Path, image_folder: Path, env: dict[str, str] | None = None, **flags) -> subprocess.Popen:
    environment = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.Popen(
        _command(output_dir, image_folder, **flags),
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"training ended (code {process.returncode}) before {what}:\n{process.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"not {what} after {timeout} s")
        time.sleep(0.1)


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)


# ------------------------------------------------------------------------------------------------ the final folder


def _fingerprint(folder: Path) -> dict[str, object]:
    """What identifies a run's final model in `folder`: its weights, its config, its flags."""
    return {
        "weights": {key: value.sum().item() for key, value in load_file(folder / "model.safetensors").items()},
        "config": json.loads((folder / "config.json").read_text()),
        "flags": json.loads((folder / "training_config.json").read_text())["seed"],
    }


def test_the_final_folder_replaces_the_previous_model_and_keeps_the_rest(tmp_path):
    (tmp_path / "config.json").write_text('{"old": true}')
    (tmp_path / "metrics.json").write_text('{"old": true}')  # the previous model's metrics: they go with it
    (tmp_path / "old_component").mkdir()
    (tmp_path / "old_component" / "config.json").write_text("{}")
    (tmp_path / "model_index.json").write_text('{"_class_name": "X", "old_component": ["m", "C"]}')
    for kept in ("checkpoint-2/model.safetensors", "logs/train_log.jsonl", "notes.txt", "samples-2.png", LOCK_FILE):
        (tmp_path / kept).parent.mkdir(exist_ok=True)
        (tmp_path / kept).write_text("kept")

    def write(folder: Path) -> None:
        (folder / "config.json").write_text('{"new": true}')
        (folder / "model.safetensors").write_text("new weights")

    write_folder_atomically(tmp_path, write)
    assert json.loads((tmp_path / "config.json").read_text()) == {"new": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["config.json", "model.safetensors", "checkpoint-2", "logs", "notes.txt", "samples-2.png", LOCK_FILE]
    )


def test_a_full_disk_at_the_final_save_is_one_line_and_leaves_the_previous_model(tmp_path):
    (tmp_path / "config.json").write_text('{"old": true}')

    def write_on_a_full_disk(folder: Path) -> None:
        (folder / "config.json").write_text('{"new": true}')
        raise OSError(28, "No space left on device")

    with pytest.raises(
        FinalSaveError,
        match=r"could not write the final model .*No space left on device\). The "
        r"folder still holds what it held before",
    ) as caught:
        write_folder_atomically(tmp_path, write_on_a_full_disk)
    assert "\n" not in str(caught.value)
    assert json.loads((tmp_path / "config.json").read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]  # no temporary folder left


def test_a_full_disk_in_the_training_commands_final_save(image_folder, tmp_path, monkeypatch):
    from hf_vq.models.vqgan import VQGANModel

    def save_on_a_full_disk(self, folder, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(VQGANModel, "save_pretrained", save_on_a_full_disk)
    with pytest.raises(FinalSaveError, match="checkpoints are intact .*checkpoint-4"):
        train(tmp_path / "run", train_data_dir=str(image_folder), **FAST)
    assert not (tmp_path / "run" / "config.json").exists() and not (tmp_path / "run" / STAGING_FOLDER).exists()


@pytest.mark.slow
@pytest.mark.parametrize("point", ["staged", "swapping", "swapped"])
def test_a_kill_inside_the_final_save_never_leaves_a_mix_of_two_runs(image_folder, tmp_path, point):
    output_dir = tmp_path / "run"
    train(output_dir, train_data_dir=str(image_folder), seed=0, **FAST)
    previous = _fingerprint(output_dir)
    (output_dir / "metrics.json").write_text('{"run": "previous"}')

    process = _start(output_dir, image_folder, env={PAUSE_IN_FINAL_SAVE_ENV: point}, seed=1)
    _wait_for(lambda: (output_dir / STAGING_FOLDER / "paused").exists(), process, f"pausing at {point}")
    staged = output_dir / STAGING_FOLDER
    new = _fingerprint(staged) if (staged / "model.safetensors").exists() else _fingerprint(output_dir)
    assert new != previous
    _kill(process)

    if point == "staged":  # nothing moved yet: the previous model, whole, with its metrics
        assert _fingerprint(output_dir) == previous
        assert json.loads((output_dir / "metrics.json").read_text()) == {"run": "previous"}
    elif point == "swapping":  # the previous model moved aside: no config.json, so nothing loads a mix
        assert not (output_dir / "config.json").exists() and not (output_dir / "metrics.json").exists()
    else:  # the new model in place, whole, and no metrics of the previous run beside it
        assert _fingerprint(output_dir) == new and not (output_dir / "metrics.json").exists()
    recover_interrupted_final_save(output_dir)  # what the next save or run on the folder does first
    assert _fingerprint(output_dir) == new  # the new model was complete on disk: the swap is finished
    assert not (output_dir / STAGING_FOLDER).exists() and not (output_dir / OLD_FOLDER).exists()
    assert checkpoint_problem(output_dir / "checkpoint-4") is None


# ------------------------------------------------------------------------------------------------ checkpoint files


def _corrupt_same_size(path: Path) -> None:
    content = bytearray(path.read_bytes())
    middle = len(content) // 2
    content[middle : middle + 8] = bytes(255 - byte for byte in content[middle : middle + 8])
    path.write_bytes(bytes(content))


def test_a_same_size_corrupted_rng_state_falls_back_to_the_previous_checkpoint(image_folder, tmp_path, caplog, capsys):
    output_dir = tmp_path / "run"
    train(output_dir, train_data_dir=str(image_folder), **FAST)
    _corrupt_same_size(output_dir / "checkpoint-4" / "random_states_0.pkl")
    assert checkpoint_problem(output_dir / "checkpoint-4") is None  # the sizes match: only the checksum can tell
    with caplog.at_level(logging.WARNING):
        result = train(
            output_dir,
            train_data_dir=str(image_folder),
            resume_from_checkpoint="latest",
            **(FAST | {"max_train_steps": 6}),
        )
    assert re.search(r"checkpoint-4 .*random_states_0.pkl does not match its sha256", caplog.text)
    assert re.search(r"resuming from \S*checkpoint-2 \(step 2\)", capsys.readouterr().out)
    assert result["global_step"] == 6
    _corrupt_same_size(output_dir / "checkpoint-6" / "random_states_0.pkl")
    with pytest.raises(CheckpointError, match="random_states_0.pkl does not match its sha256"):
        train(
            output_dir,
            train_data_dir=str(image_folder),
            resume_from_checkpoint=str(output_dir / "checkpoint-6"),
            **(FAST | {"max_train_steps": 8}),
        )


def _as_written_by_older_hf_vq(checkpoint: Path, custom_objects: int) -> None:
    """Rewrite `checkpoint` as hf_vq before checksums and JSON state wrote it: pickled custom state
    (`custom_checkpoint_<i>.pkl`, Accelerate's format) and a manifest with sizes only."""
    for index in range(custom_objects):
        torch.save(load_custom_state(checkpoint, index), checkpoint / f"custom_checkpoint_{index}.pkl")
        for path in custom_state_files(checkpoint, index):
            path.unlink()
    _rewrite_old_manifest(checkpoint)


def _rewrite_old_manifest(checkpoint: Path) -> None:
    manifest = json.loads((checkpoint / MANIFEST_FILE).read_text())
    files = {path.name: path.stat().st_size for path in checkpoint.iterdir() if path.name != MANIFEST_FILE}
    (checkpoint / MANIFEST_FILE).write_text(
        json.dumps({"format": 1, "step": manifest["step"], "num_processes": 1, "files": files})
    )


def test_checkpoints_keep_hf_vq_state_out_of_pickles_and_older_ones_still_resume_exactly(image_folder, tmp_path):
    output_dir = tmp_path / "run"
    train(output_dir, train_data_dir=str(image_folder), use_ema=True, **(FAST | {"max_train_steps": 6}))
    uninterrupted = load_file(output_dir / "model.safetensors")
    checkpoint = output_dir / "checkpoint-4"
    assert {p.name for p in checkpoint.glob("custom*")} == {
        "custom_state_0.json",
        "custom_state_0.safetensors",
        "custom_state_1.json",
        "custom_state_1.safetensors",
    }
    assert load_custom_state(checkpoint, 0)["global_step"] == 4
    _as_written_by_older_hf_vq(checkpoint, custom_objects=2)  # the TrainingState and the EMA
    resumed = train(
        output_dir,
        train_data_dir=str(image_folder),
        use_ema=True,
        resume_from_checkpoint=str(checkpoint),
        **(FAST | {"max_train_steps": 6}),
    )
    assert resumed["global_step"] == 6
    again = load_file(output_dir / "model.safetensors")
    for key in uninterrupted:
        assert torch.equal(uninterrupted[key], again[key]), f"{key} differs after resuming an older checkpoint"


class RunsCode:
    """Unpickling this touches a file: what a crafted checkpoint could do with any command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_crafted_pickle_in_a_checkpoint_is_refused_before_it_runs(image_folder, tmp_path, caplog):
    output_dir = tmp_path / "run"
    train(output_dir, train_data_dir=str(image_folder), **(FAST | {"max_train_steps": 2}))
    checkpoint, marker = output_dir / "checkpoint-2", tmp_path / "code_ran"
    for path in custom_state_files(checkpoint, 0):
        path.unlink()
    torch.save({"global_step": RunsCode(marker)}, checkpoint / "custom_checkpoint_0.pkl")
    _rewrite_old_manifest(checkpoint)  # sizes only, as older hf_vq wrote: the manifest does not give it away
    with pytest.raises(CheckpointError, match=r"refusing to load \S*custom_checkpoint_0.pkl: it is not hf_vq's"):
        train(output_dir, train_data_dir=str(image_folder), resume_from_checkpoint=str(checkpoint), **FAST)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ divergence


def _guard(output_dir: Path, on_divergence: str = "stop") -> DivergenceGuard:
    return DivergenceGuard(None, TrainingState(), str(output_dir), on_divergence=on_divergence)


def _step(guard: DivergenceGuard, loss: float) -> bool:
    applied = guard.check(torch.tensor(loss), [])
    guard.state.global_step += 1
    return applied


def test_an_explosion_in_the_first_steps_stops_the_run(tmp_path):
    guard = _guard(tmp_path)
    assert _step(guard, 0.8)  # the loss before the first update
    with pytest.raises(
        TrainingDivergedError,
        match=r"at step 2: the loss jumped to 1e\+09, .* the loss before the "
        r"first update 0.8 \(--divergence_factor 10\)",
    ):
        _step(guard, 1e9)
    assert guard.state.loss_average == pytest.approx(0.8)  # the explosion never entered the average


def test_early_steps_below_the_multiple_of_the_first_loss_pass(tmp_path):
    guard = _guard(tmp_path)
    for loss in [1.0, 5.0, 9.0, 2.0] + [1.0] * WARMUP_STEPS:
        assert _step(guard, loss)


def test_a_checkpoint_written_after_the_loss_exploded_is_not_called_good(tmp_path):
    guard = _guard(tmp_path, on_divergence="skip_step")
    for _ in range(3):
        assert _step(guard, 1.0)
    _complete_checkpoint(tmp_path, 3)
    assert not _step(guard, 1e10)  # step 4 skipped
    _complete_checkpoint(tmp_path, 4)  # written while the run was still exploding
    for _ in range(19):
        assert not _step(guard, 1e10)
    with pytest.raises(TrainingDivergedError, match=r"the last good checkpoint is \S*checkpoint-3\."):
        _step(guard, 1e10)


def _complete_checkpoint(output_dir: Path, step: int) -> Path:
    temporary_folder(output_dir, step).mkdir(parents=True)
    (temporary_folder(output_dir, step) / "model.safetensors").write_bytes(b"weights")
    return complete_checkpoint(output_dir, step, num_processes=1)


# ------------------------------------------------------------------------------------------------ the run lock


def test_a_lock_held_by_a_live_process_is_refused_and_a_dead_ones_is_taken_over(tmp_path, caplog):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        with pytest.raises(RunLockedError, match=rf"in use by another training run \(PID {holder.pid} on "):
            acquire_run_lock(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    with caplog.at_level(logging.WARNING):
        acquire_run_lock(tmp_path)  # the holder is gone
    assert f"PID {holder.pid}" in caplog.text and "no longer running" in caplog.text
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    release_run_lock(tmp_path)
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_lock_from_another_host_is_refused(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    with pytest.raises(RunLockedError, match="PID 1 on elsewhere.example"):
        acquire_run_lock(tmp_path)


@pytest.mark.slow
def test_a_second_run_on_the_same_output_dir_is_refused_with_one_line(image_folder, tmp_path):
    output_dir = tmp_path / "run"
    first = _start(output_dir, image_folder, env={PAUSE_IN_SAVE_ENV: "2"})
    _wait_for(lambda: (temporary_folder(output_dir, 2) / "paused").exists(), first, "pausing in a save")
    second = subprocess.run(
        _command(output_dir, image_folder),
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO)),
    )
    assert second.returncode == 1
    errors = [line for line in second.stderr.splitlines() if "error:" in line]
    assert errors == [
        f"hf-vq train-tokenizer: error: {output_dir} is in use by another training run (PID {first.pid} "
        f"on {socket.gethostname()}, {LOCK_FILE}): wait for it to end or use another --output_dir "
        f"(delete {output_dir / LOCK_FILE} only if that run is over)"
    ]
    _kill(first)  # its lock stays behind, stale
    third = subprocess.run(
        _command(output_dir, image_folder),
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO)),
    )
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"its run (PID {first.pid} on {socket.gethostname()}) is no longer running" in third.stderr
    assert not (output_dir / LOCK_FILE).exists()  # released at exit


# ------------------------------------------------------------------------------------------------ signals


@pytest.mark.slow
@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_finishes_the_step_saves_a_checkpoint_and_exits_with_its_code(image_folder, tmp_path, signal_number):
    output_dir = tmp_path / "run"
    process = _start(output_dir, image_folder, max_train_steps=10_000, checkpointing_steps=10_000, logging_steps=1)
    log = output_dir / "logs" / "train_log.jsonl"
    _wait_for(lambda: log.is_file() and log.read_text().count("\n") >= 2, process, "training")
    process.send_signal(signal_number)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal_number, output[-3000:]
    match = re.search(
        r"error: interrupted at step (\d+); checkpoint-(\d+) saved; resume with "
        r"--resume_from_checkpoint latest\n",
        output,
    )
    assert match and match.group(1) == match.group(2), output[-3000:]
    assert "Traceback" not in output
    assert checkpoint_problem(output_dir / f"checkpoint-{match.group(1)}") is None
    assert not (output_dir / LOCK_FILE).exists()


@pytest.mark.slow
def test_a_second_signal_stops_at_once(image_folder, tmp_path):
    output_dir = tmp_path / "run"
    # The first signal's checkpoint pauses in its save (the test hook), so the second one always comes while the first
    # is being handled: 50 ms apart, a fast step and save sometimes finished first and the process was already exiting.
    process = _start(
        output_dir,
        image_folder,
        env={PAUSE_IN_SAVE_ENV: "any"},
        max_train_steps=10_000,
        checkpointing_steps=10_000,
        logging_steps=1,
    )
    log = output_dir / "logs" / "train_log.jsonl"
    _wait_for(lambda: log.is_file() and log.read_text().count("\n") >= 2, process, "training")
    process.send_signal(signal.SIGINT)
    _wait_for(lambda: any(output_dir.glob("*/paused")), process, "saving the interrupt's checkpoint")
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130 and "second SIGINT: stopping now, without a checkpoint" in output


_SECOND_SIGNAL_AFTER_THE_BLOCK = """
import os, signal, sys
from hf_vq.training.interrupts import InterruptHandler
with InterruptHandler() as interrupts:
    os.kill(os.getpid(), signal.SIGINT)  # the first: the block ends as a run that saved its checkpoint would
assert interrupts.received == signal.SIGINT
os.kill(os.getpid(), signal.SIGINT)  # the second, during the clean-up after the block
print("still running")
"""


def test_a_second_signal_after_the_training_block_still_stops_at_once():
    # The slow test above sends its two signals 50 ms apart; when the step and checkpoint finished in between, the
    # handler used to be restored to Python's, and the second Ctrl-C became a KeyboardInterrupt death (-2).
    result = subprocess.run(
        [sys.executable, "-c", _SECOND_SIGNAL_AFTER_THE_BLOCK],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert result.returncode == 130, result.stderr[-3000:]
    assert "second SIGINT: stopping now, without a checkpoint" in result.stderr
    assert "still running" not in result.stdout and "KeyboardInterrupt" not in result.stderr


def test_the_previous_handlers_come_back_when_no_signal_came():
    before = signal.getsignal(signal.SIGTERM)
    with InterruptHandler():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.distributed
@pytest.mark.slow
def test_a_signal_to_one_of_two_processes_stops_both_at_the_same_step(image_folder, tmp_path):
    output_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        "-m",
    ] + _command(output_dir, image_folder, max_train_steps=10_000, checkpointing_steps=10_000, logging_steps=1)[2:]
    environment = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = output_dir / "logs" / "train_log.jsonl"
    _wait_for(lambda: log.is_file() and log.read_text().count("\n") >= 2, process, "training")
    workers = child_pids(process.pid)
    assert len(workers) == 2
    os.kill(max(workers), signal.SIGTERM)  # one worker only (the later-started one: rank 1, as a rule)
    output, _ = process.communicate(timeout=300)
    steps = re.findall(r"interrupted at step (\d+); checkpoint-(\d+) saved", output)
    assert len(steps) == 2 and len(set(steps)) == 1, output[-4000:]
    checkpoint = output_dir / f"checkpoint-{steps[0][0]}"
    assert checkpoint_problem(checkpoint) is None
    assert (checkpoint / "random_states_0.pkl").is_file() and (checkpoint / "random_states_1.pkl").is_file()
    assert process.returncode != 0 and re.search(r"exitcode\s*:\s*143", output), output[-4000:]
