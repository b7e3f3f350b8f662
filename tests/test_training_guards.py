"""Issue 25: unit tests that pin what the training guards and bookkeeping decide (fast, no training run): the
divergence guard's skip counting and early-step decision, signals, the run lock, the atomic final save, the
checkpoint state without pickle, the run summary, the JSON-lines tracker, the learning-rate schedule and the loss
helpers. Each test fails on a plausible one-line bug of the code it names (scripts/mutants.toml)."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from hf_vq.errors import ConfigError, run_reporting_user_errors
from hf_vq.training import final_save
from hf_vq.training.args import TOKENIZER_COMMAND, OptimizationArguments, resolve_args
from hf_vq.training.checkpoint_state import load_custom_state, save_custom_state
from hf_vq.training.checkpointing import TrainingState
from hf_vq.training.divergence import AVERAGE_WINDOW, MAX_CONSECUTIVE_SKIPS, WARMUP_STEPS, DivergenceGuard
from hf_vq.training.errors import RunLockedError, TrainingDivergedError, TrainingInterrupted
from hf_vq.training.final_save import (
    COMPLETE_MARKER,
    MOVING_IN_MARKER,
    OLD_FOLDER,
    STAGING_FOLDER,
    recover_interrupted_final_save,
    write_folder_atomically,
)
from hf_vq.training.interrupts import InterruptHandler, stop_if_interrupted
from hf_vq.training.losses import LeCamEMA, adopt_weight
from hf_vq.training.lpips import ScalingLayer, _normalize_channels
from hf_vq.training.optimization import _decay_groups, build_lr_scheduler
from hf_vq.training.run_lock import LOCK_FILE, _process_start_time, acquire_run_lock, release_run_lock
from hf_vq.training.run_summary import run_summary
from hf_vq.training.tracking import JSONLTracker

from training_helpers import TINY_CONFIG, write_images

# ------------------------------------------------------------------------------------------------ divergence guard


def _guard(on_divergence: str = "stop", factor: float = 10.0) -> DivergenceGuard:
    return DivergenceGuard(None, TrainingState(), "nowhere", on_divergence=on_divergence, factor=factor)


def _step(guard: DivergenceGuard, loss: float) -> bool:
    applied = guard.check(torch.tensor(loss), [])
    guard.state.global_step += 1
    return applied


def test_skipped_steps_are_counted_in_a_row_and_a_good_step_starts_the_count_again():
    guard = _guard("skip_step")
    assert _step(guard, 1.0)
    for _ in range(MAX_CONSECUTIVE_SKIPS - 1):
        assert not _step(guard, float("nan"))
    assert guard.consecutive_skips == MAX_CONSECUTIVE_SKIPS - 1
    assert _step(guard, 1.0)  # recovered: the count starts again
    assert guard.consecutive_skips == 0 and guard.state.exploded_at_step == 0
    for _ in range(MAX_CONSECUTIVE_SKIPS):  # a full run of skips is still allowed...
        assert not _step(guard, float("inf"))
    assert guard.state.skipped_steps == 2 * MAX_CONSECUTIVE_SKIPS - 1  # the total is never reset
    with pytest.raises(TrainingDivergedError, match=f"for {MAX_CONSECUTIVE_SKIPS} steps in a row"):
        _step(guard, float("nan"))  # ...and one more stops the run


def test_the_first_steps_are_judged_against_the_first_loss_and_later_ones_against_the_average():
    # The first loss is high (3.0), the next nine low (0.1): average 0.39 after WARMUP_STEPS observations.
    for loss in (29.0, 31.0):
        early = _guard()
        for first in [3.0] + [0.1] * (WARMUP_STEPS - 2):
            assert _step(early, first)
        assert early.state.loss_observations == WARMUP_STEPS - 1
        if loss < 30:
            assert _step(early, loss)  # still early: below 10 x 3.0, the loss before the first update
        else:
            with pytest.raises(TrainingDivergedError, match=r"10 times the loss before the first update 3 "):
                _step(early, loss)
    late = _guard()
    for loss in [3.0] + [0.1] * (WARMUP_STEPS - 1):
        assert _step(late, loss)
    assert late.state.loss_observations == WARMUP_STEPS
    assert late.state.loss_at_start == pytest.approx(0.39)
    with pytest.raises(TrainingDivergedError, match=r"10 times its running average 0\.39"):
        _step(late, 3.9001)  # no longer early: 10 x the average, and above the loss of the first steps


def test_the_running_average_follows_about_the_last_window_of_steps():
    guard = _guard()
    for _ in range(AVERAGE_WINDOW):
        assert _step(guard, 1.0)
    assert _step(guard, 3.0)
    # An exponential moving average over AVERAGE_WINDOW steps, not the mean of every step so far.
    assert guard.state.loss_average == pytest.approx(1.0 + 2.0 / AVERAGE_WINDOW)


def test_a_divergence_factor_of_zero_turns_the_jump_check_off_but_not_the_nan_check():
    guard = _guard(factor=0.0)
    assert _step(guard, 1.0) and _step(guard, 1e9)
    with pytest.raises(TrainingDivergedError, match="the loss is nan"):
        _step(guard, float("nan"))


@pytest.mark.parametrize(("factor", "refused"), [(1.0, True), (0.5, True), (1.01, False), (0.0, False)])
def test_a_divergence_factor_of_one_or_less_is_refused_unless_zero(tmp_path, factor, refused):
    given = {"config": TINY_CONFIG, "train_data_dir": str(write_images(tmp_path / "images", 1))}
    if refused:
        with pytest.raises(ConfigError, match=f"--divergence_factor must be above 1 .*got {factor}"):
            resolve_args(TOKENIZER_COMMAND, {**given, "divergence_factor": factor})
    else:
        assert resolve_args(TOKENIZER_COMMAND, {**given, "divergence_factor": factor}).divergence_factor == factor


# ------------------------------------------------------------------------------------------------ signals


def test_a_signal_saves_the_checkpoint_of_the_step_and_stops_with_the_shells_exit_code():
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    saved = []

    def save() -> Path:
        saved.append(True)
        return Path("out") / "checkpoint-7"

    try:
        with InterruptHandler() as interrupts:
            stop_if_interrupted(interrupts, None, 6, save)  # no signal yet: nothing saved, no stop
            assert saved == []
            os.kill(os.getpid(), signal.SIGTERM)
            with pytest.raises(TrainingInterrupted) as stopped:
                stop_if_interrupted(interrupts, None, 7, save)
    finally:
        for number, handler in previous.items():  # the handler stays after a signal (a second one exits at once)
            signal.signal(number, handler)
    assert saved == [True] and interrupts.received == signal.SIGTERM
    assert str(stopped.value) == (
        "interrupted at step 7; checkpoint-7 saved; resume with --resume_from_checkpoint latest"
    )
    assert stopped.value.exit_code == 143


# ------------------------------------------------------------------------------------------------ the run lock


def test_a_lock_whose_pid_now_names_another_process_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = _process_start_time(holder.pid)
        lock = {"pid": holder.pid, "host": socket.gethostname(), "start_time": start}
        (tmp_path / LOCK_FILE).write_text(json.dumps(lock))
        with pytest.raises(RunLockedError, match=f"PID {holder.pid}"):
            acquire_run_lock(tmp_path)  # the recorded process is the live one: refused
        (tmp_path / LOCK_FILE).write_text(json.dumps({**lock, "start_time": "1"}))  # the PID was reused
        acquire_run_lock(tmp_path)
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    finally:
        holder.kill()
        holder.wait()
        release_run_lock(tmp_path)


def test_an_empty_lock_is_taken_over_and_a_lock_of_this_process_is_kept(tmp_path):
    (tmp_path / LOCK_FILE).write_text("")  # a kill between creating the lock and writing it
    assert acquire_run_lock(tmp_path) == tmp_path / LOCK_FILE
    first = (tmp_path / LOCK_FILE).read_text()
    assert acquire_run_lock(tmp_path) == tmp_path / LOCK_FILE  # several runs in turn in one process
    assert (tmp_path / LOCK_FILE).read_text() == first
    release_run_lock(tmp_path)
    assert not (tmp_path / LOCK_FILE).exists()


def test_releasing_never_removes_another_runs_lock(tmp_path):
    other = {"pid": os.getpid() + 1, "host": socket.gethostname()}
    (tmp_path / LOCK_FILE).write_text(json.dumps(other))
    release_run_lock(tmp_path)
    assert json.loads((tmp_path / LOCK_FILE).read_text()) == other


def test_training_errors_reach_the_user_as_one_line_with_their_exit_code(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_VQ_DEBUG", raising=False)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    with pytest.raises(SystemExit) as refused:
        run_reporting_user_errors("hf-vq train-tokenizer", lambda: acquire_run_lock(tmp_path))
    assert refused.value.code == 1
    assert capsys.readouterr().err.startswith(f"hf-vq train-tokenizer: error: {tmp_path} is in use by another ")

    def interrupted():
        raise TrainingInterrupted("interrupted at step 3; checkpoint-3 saved", signal.SIGINT)

    with pytest.raises(SystemExit) as stopped:
        run_reporting_user_errors("hf-vq train-prior", interrupted)
    assert stopped.value.code == 130
    assert capsys.readouterr().err == "hf-vq train-prior: error: interrupted at step 3; checkpoint-3 saved\n"


# ------------------------------------------------------------------------------------------------ atomic final save


def _write(files: dict[str, str]):
    def write(folder: Path) -> None:
        for name, text in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)

    return write


def test_the_loadable_file_leaves_first_and_arrives_last(tmp_path, monkeypatch):
    write_folder_atomically(tmp_path, _write({"config.json": "old", "model.safetensors": "old", "metrics.json": "1"}))
    moves = []
    real_move = final_save._move

    def recording_move(source: Path, destination: Path) -> None:
        moves.append((source.name, destination.parent.name))
        real_move(source, destination)

    monkeypatch.setattr(final_save, "_move", recording_move)
    write_folder_atomically(tmp_path, _write({"config.json": "new", "model.safetensors": "new"}))
    leaving = [name for name, into in moves if into == OLD_FOLDER]
    arriving = [name for name, into in moves if into == tmp_path.name]
    assert leaving[0] == "config.json" and sorted(leaving) == ["config.json", "metrics.json", "model.safetensors"]
    assert arriving[-1] == "config.json" and sorted(arriving) == ["config.json", "model.safetensors"]
    assert (tmp_path / "config.json").read_text() == "new" and not (tmp_path / "metrics.json").exists()


def test_a_previous_pipelines_components_leave_with_it(tmp_path):
    index = {"_class_name": ["x", "P"], "transformer": ["x", "T"], "extra": ["x", "E"]}
    write_folder_atomically(
        tmp_path,
        _write({"model_index.json": json.dumps(index), "transformer/config.json": "{}", "extra/config.json": "{}"}),
    )
    (tmp_path / "checkpoint-4").mkdir()  # the run's, not the model's
    write_folder_atomically(tmp_path, _write({"config.json": "{}", "model.safetensors": "w"}))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint-4", "config.json", "model.safetensors"]


def test_recovery_moves_a_complete_staging_folder_in_and_drops_an_incomplete_one(tmp_path):
    complete, incomplete = tmp_path / "complete", tmp_path / "incomplete"
    for target in (complete, incomplete):
        write_folder_atomically(target, _write({"config.json": "old", "model.safetensors": "old"}))
        (target / STAGING_FOLDER).mkdir()
        (target / STAGING_FOLDER / "config.json").write_text("new")
    (complete / STAGING_FOLDER / COMPLETE_MARKER).touch()  # killed after the new model was written completely
    recover_interrupted_final_save(complete)
    recover_interrupted_final_save(incomplete)
    assert (complete / "config.json").read_text() == "new" and not (complete / "model.safetensors").exists()
    assert (incomplete / "config.json").read_text() == "old" and (incomplete / "model.safetensors").exists()
    for target in (complete, incomplete):
        assert not (target / STAGING_FOLDER).exists() and not (target / OLD_FOLDER).exists()


def test_recovery_in_the_middle_of_moving_in_keeps_what_already_arrived(tmp_path):
    staging, old = tmp_path / STAGING_FOLDER, tmp_path / OLD_FOLDER
    for folder in (staging, old):
        folder.mkdir()
    (old / "config.json").write_text("old")  # the previous model was moved aside...
    (old / "model.safetensors").write_text("old")
    (tmp_path / "model.safetensors").write_text("new")  # ...the new weights arrived, the kill came before the config
    (staging / "config.json").write_text("new")
    (staging / COMPLETE_MARKER).touch()
    (staging / MOVING_IN_MARKER).touch()
    recover_interrupted_final_save(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert [(tmp_path / name).read_text() for name in ("config.json", "model.safetensors")] == ["new", "new"]


# ------------------------------------------------------------------------------------------------ checkpoint state


def test_checkpoint_state_keeps_tuples_tensors_and_nesting_without_pickle(tmp_path):
    state = {"step": 3, "pair": (1, 2.5), "nested": {"shadow": [torch.arange(3.0), torch.ones(2, 2)]}, "none": None}
    save_custom_state(state, tmp_path, 0)
    loaded = load_custom_state(tmp_path, 0)
    assert loaded["pair"] == (1, 2.5) and isinstance(loaded["pair"], tuple)
    assert loaded["step"] == 3 and loaded["none"] is None
    assert [tensor.tolist() for tensor in loaded["nested"]["shadow"]] == [[0.0, 1.0, 2.0], [[1.0, 1.0], [1.0, 1.0]]]
    with pytest.raises(TypeError, match="keys that are not strings"):
        save_custom_state({1: "a"}, tmp_path, 1)


# ------------------------------------------------------------------------------------------------ summary, tracker


def test_the_run_summary_counts_accumulation_and_rounds_epochs_up():
    text = run_summary(
        examples=100,
        batch_size_per_process=8,
        num_processes=2,
        gradient_accumulation_steps=2,
        max_train_steps=10,
        models={"model": nn.Linear(2, 3), "none": None},
        mixed_precision="bf16",
        start_step=4,
    )
    rows = dict(line.split(" = ") for line in text.splitlines()[1:])
    rows = {name.strip(): value for name, value in rows.items()}
    assert rows["total batch size"] == "32 (8 x 2 processes x 2 accumulation)"
    assert rows["epochs"] == "4"  # 320 examples seen of 100: 3.2 epochs, counted as 4 started
    assert rows["optimizer steps"] == "10 (resuming at 4)"
    assert rows["parameters (model)"] == "9" and "parameters (none)" not in rows


def test_a_resumed_run_appends_to_its_jsonl_log(tmp_path):
    JSONLTracker("run", tmp_path).log({"loss": 1.0}, step=1)
    JSONLTracker("run", tmp_path).log({"loss": torch.tensor(0.5), "inf": float("inf")}, step=2)
    lines = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert lines == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5, "inf": "inf"}]


# ------------------------------------------------------------------------------------------------ optimization


def test_warmup_is_counted_in_scheduler_steps_of_every_process():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    config = OptimizationArguments(lr_scheduler="linear", lr_warmup_steps=2)
    scheduler = build_lr_scheduler(config, optimizer, max_train_steps=4, num_processes=2)
    learning_rates = []
    for _ in range(8):  # Accelerate steps it once per process per optimizer step: 2 x 4
        optimizer.step()
        scheduler.step()
        learning_rates.append(scheduler.get_last_lr()[0])
    assert learning_rates == pytest.approx([0.25, 0.5, 0.75, 1.0, 0.75, 0.5, 0.25, 0.0])


def test_weight_decay_reaches_matrices_only():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 3)
            self.norm = nn.LayerNorm(3)
            self.position_embeddings = nn.Parameter(torch.zeros(1, 4, 3))
            self.cls_token = nn.Parameter(torch.zeros(1, 1, 3))
            self.frozen = nn.Parameter(torch.zeros(3, 3), requires_grad=False)

    model = Tiny()
    decay, no_decay = _decay_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert [id(p) for p in decay["params"]] == [id(model.linear.weight)]
    expected = [model.linear.bias, model.norm.weight, model.norm.bias, model.position_embeddings, model.cls_token]
    assert sorted(map(id, no_decay["params"])) == sorted(map(id, expected))


# ------------------------------------------------------------------------------------------------ losses and LPIPS


def test_lecam_anchors_decay_the_old_value_not_the_new_one():
    ema = LeCamEMA(decay=0.9)
    ema.update(torch.tensor([1.0]), torch.tensor([-1.0]))  # the first batch sets the anchors directly
    ema.update(torch.tensor([11.0]), torch.tensor([9.0]))
    assert ema.real == pytest.approx(0.9 * 1.0 + 0.1 * 11.0) and ema.fake == pytest.approx(0.9 * -1.0 + 0.1 * 9.0)


def test_the_adversarial_loss_starts_at_its_start_step():
    assert [adopt_weight(0.5, step, start_step=3) for step in (0, 2, 3, 4)] == [0.0, 0.0, 0.5, 0.5]


def test_lpips_scales_images_to_vgg_statistics_and_normalises_feature_channels():
    images = torch.tensor([-1.0, 0.0, 1.0])[None, :, None, None].expand(1, 3, 2, 2)
    shift = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
    scale = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]
    torch.testing.assert_close(ScalingLayer()(images), (images - shift) / scale)
    features = torch.randn(2, 5, 3, 4)
    norms = _normalize_channels(features).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(2, 3, 4))
