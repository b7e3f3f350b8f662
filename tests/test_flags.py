"""The training commands' flags and configs: one typed definition per flag, checked YAML values, each command's
own flags only, defaults < YAML < command line, one-line user errors, and the checks done before training starts."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

from hf_vq.cli import build_parser, main
from hf_vq.errors import ConfigError
from hf_vq.training.args import (
    CLASSIFIER_COMMAND,
    LR_SCHEDULERS,
    PRIOR_COMMAND,
    TOKENIZER_COMMAND,
    ClassifierTrainingConfig,
    OptimizationArguments,
    PriorTrainingConfig,
    TokenizerTrainingConfig,
    TrainingCommand,
    parse_args,
    resolve_args,
)

from training_helpers import TINY_CONFIG, write_images

REPO = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return str(write_images(tmp_path_factory.mktemp("flags") / "images", count=6, size=16))


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def _tokenizer_args(config: str, images: str, **given):
    return resolve_args(TOKENIZER_COMMAND, {"config": config, "train_data_dir": images, **given})


TINY_MODEL = (
    "model:\n  num_channels: 3\n  image_size: 16\n  block_out_channels: [8, 8]\n  layers_per_block: 1\n"
    "  attention_resolutions: []\n  norm_num_groups: 4\n  latent_channels: 8\n  embed_dim: 4\n"
    "  codebook_size: 32\n"
)


# ------------------------------------------------------------------------------------------------ YAML values


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "model:\n  codebok_size: 8\n",
            "model.codebok_size in {path}: unknown key 'codebok_size' in section model: "
            "(VQGANConfig has no such field) (did you mean 'codebook_size'?)",
        ),
        (
            "data:\n  image_colum: image\n",
            "data.image_colum in {path}: unknown key 'image_colum' in section data: (did you mean 'image_column'?)",
        ),
        (
            "training:\n  learning_rat: 0.1\n",
            "training.learning_rat in {path}: unknown key 'learning_rat' in section "
            "training: (did you mean 'learning_rate'?)",
        ),
        ("training:\n  image_column: image\n", "'image_column' belongs in the data: section, not in training:"),
        ("training:\n  label_column: label\n", "unknown key 'label_column' in section training:"),  # a classifier flag
    ],
)
def test_unknown_keys_name_the_section_and_the_nearest_name(tmp_path, images, text, message):
    config = _config(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        _tokenizer_args(config, images)
    assert message.format(path=config) in str(error.value)


def test_yaml_values_are_converted_to_the_flag_type(tmp_path, images):
    # PyYAML reads 1e-4 (no dot) as a string, 1.0e-4 as a float: both are the float the flag wants.
    config = _config(
        tmp_path,
        TINY_MODEL + "training:\n  learning_rate: 1e-4\n  adam_epsilon: '1e-6'\n"
        "  mixed_precision: no\n  train_batch_size: '3'\n  eval_steps: 2\n"
        "  discriminator_learning_rate: 2\n  progress_bar: false\n",
    )
    args = _tokenizer_args(config, images)
    assert args.learning_rate == 1e-4 and isinstance(args.learning_rate, float)
    assert args.adam_epsilon == 1e-6 and args.train_batch_size == 3
    assert args.discriminator_learning_rate == 2.0 and isinstance(args.discriminator_learning_rate, float)
    assert args.mixed_precision == "no"  # YAML 1.1 reads an unquoted `no` as false
    assert args.validation_steps == 2  # --eval_steps is an alias of diffusers' --validation_steps
    assert args.progress_bar is False


@pytest.mark.parametrize(
    "line, message",
    [
        ("training:\n  progress_bar: 'no'\n", "training.progress_bar in {path} must be true or false, got 'no'"),
        ("training:\n  use_ema: 'true'\n", "training.use_ema in {path} must be true or false, got 'true'"),
        ("training:\n  train_batch_size: [4]\n", "training.train_batch_size in {path} must be an integer, got [4]"),
        ("training:\n  train_batch_size: 2.5\n", "must be an integer, got 2.5"),
        (
            "training:\n  learning_rate: fast\n",
            "training.learning_rate in {path} must be a number, got the string 'fast'",
        ),
        ("training:\n  learning_rate: -1\n", "training.learning_rate in {path} must be > 0, got -1.0"),
        ("training:\n  lr_scheduler: cosin\n", "must be one of 'linear', 'cosine'"),
        (
            "training:\n  on_divergence: skip\n",
            "must be one of 'stop', 'skip_step'; got 'skip' (did you mean 'skip_step'?)",
        ),
        (
            "training:\n  divergence_factor: 0.5\n",
            "--divergence_factor must be above 1 (or 0 to turn the jump check off)",
        ),
        ("training:\n  ema_decay: 1\n", "training.ema_decay in {path} must lie in [0, 1), got 1.0"),
        (
            "data:\n  max_train_samples: {a: 1}\n",
            "data.max_train_samples in {path} must be an integer, got {{'a': 1}}",
        ),
        ("model:\n  codebook_size: 2x\n", "model.codebook_size in {path} must be an integer, got the string '2x'"),
        ("model:\n  block_out_channels: 8\n", "model.block_out_channels in {path} must be a list"),
        (
            "model:\n  codebook_size: 30\n  affine_groups: 4\n",
            "model: section: affine_groups=4 must divide codebook_size=30",
        ),
    ],
)
def test_bad_values_are_one_clear_error(tmp_path, images, line, message):
    text = TINY_MODEL + line[len("model:\n") :] if line.startswith("model:") else TINY_MODEL + line
    config = _config(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        _tokenizer_args(config, images)
    assert message.format(path=config) in str(error.value)
    assert "\n" not in str(error.value)


def test_model_section_values_are_converted(tmp_path, images):
    config = _config(tmp_path, TINY_MODEL + "  beta: '0.9'\n  alternating: true\n")
    args = _tokenizer_args(config, images)
    assert args.model_config["beta"] == 0.9 and args.model_config["block_out_channels"] == [8, 8]


def test_classifier_model_section_is_checked_against_its_config(tmp_path, images):
    config = _config(tmp_path, "model:\n  hidden_size: 32\n  num_hiden_layers: 1\n")
    with pytest.raises(
        ConfigError, match=r"TokenViTConfig has no such field\) \(did you mean 'num_hidden_layers'\?\)"
    ):
        resolve_args(CLASSIFIER_COMMAND, {"config": config, "train_data_dir": images, "tokenizer_name_or_path": "x/y"})


# ------------------------------------------------------------------------------------------------ precedence


def test_defaults_then_yaml_then_command_line(tmp_path, images):
    config = _config(
        tmp_path, TINY_MODEL + "training:\n  train_batch_size: 4\n  learning_rate: 0.002\n  progress_bar: false\n"
    )
    argv = ["--config", config, "--train_data_dir", images, "--train_batch_size", "16", "--progress_bar"]
    namespace = build_parser().parse_args(["train-tokenizer", *argv])
    given = {key: value for key, value in vars(namespace).items() if key not in ("handler", "command")}
    args = resolve_args(TOKENIZER_COMMAND, given)
    assert args.train_batch_size == 16  # given on the command line at its built-in default: still beats the file
    assert args.progress_bar is True
    assert args.learning_rate == 0.002  # from the file
    assert args.adam_beta1 == 0.5  # built-in default
    classifier = resolve_args(CLASSIFIER_COMMAND, {"train_data_dir": images, "tokenizer_name_or_path": "org/tok"})
    assert (classifier.adam_beta1, classifier.lr_scheduler, classifier.output_dir) == (
        0.9,
        "cosine",
        "outputs/token_vit",
    )


def test_python_values_are_checked_like_yaml_values(images):
    with pytest.raises(ConfigError, match="--learning_rate must be a number"):
        resolve_args(TOKENIZER_COMMAND, {"config": TINY_CONFIG, "train_data_dir": images, "learning_rate": "fast"})
    with pytest.raises(ConfigError, match=r"unknown flag --learnin_rate \(did you mean 'learning_rate'\?\)"):
        resolve_args(TOKENIZER_COMMAND, {"config": TINY_CONFIG, "train_data_dir": images, "learnin_rate": 1.0})


# ------------------------------------------------------------------------------------------------ commands


def _help(command: str) -> str:
    parser = build_parser()
    subparsers = next(action for action in parser._actions if action.dest == "command")
    return subparsers.choices[command].format_help()


def test_each_command_lists_only_its_own_flags():
    tokenizer, classifier = _help("train-tokenizer"), _help("train-classifier")
    for own in ("--discriminator_weight", "--pretrained_model_name_or_path", "--random_flip", "--rfid", "--use_ema"):
        assert own in tokenizer and own not in classifier, own
    for own in ("--label_column", "--tokenizer_name_or_path", "--model_type", "--tokenize_batch_size"):
        assert own in classifier and own not in tokenizer, own
    for shared in (
        "--revision",
        "--validation_steps",
        "--logging_dir",
        "--allow_tf32",
        "--lr_scheduler",
        "--report_to",
        "--hub_revision",
        "--push_to_hub",
        "--debug",
    ):
        assert shared in tokenizer and shared in classifier, shared
    assert "(default: 0.9)" in classifier and "(default: cosine)" in classifier  # the classifier's own defaults
    push = _help("push")
    assert "--hub_revision" in push and "--revision " not in push


def test_a_flag_of_another_command_is_refused_naming_the_command_that_has_it(images, tmp_path, capsys):
    # Each way in: the hf-vq command line, a script's command line, a dict from Python, a config file's key.
    with pytest.raises(SystemExit) as exit_info:
        main(["train-tokenizer", "--config", TINY_CONFIG, "--train_data_dir", images, "--tokenizer_hub_id", "org/tok"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert (
        "--tokenizer_hub_id is a flag of push, push-set, train-classifier, train-prior, not of train-tokenizer" in err
    )
    with pytest.raises(SystemExit):
        parse_args(TOKENIZER_COMMAND, ["--train_data_dir", images, "--label_column", "label"])
    assert (
        "--label_column is a flag of train-classifier, train-prior, encode, not of train-tokenizer"
        in capsys.readouterr().err
    )
    with pytest.raises(
        ConfigError, match=r"--tokenizer_hub_id is a flag of .*train-classifier.*not of train-tokenizer"
    ):
        resolve_args(TOKENIZER_COMMAND, {"config": TINY_CONFIG, "train_data_dir": images, "tokenizer_hub_id": "org/t"})
    config = _config(tmp_path, "training:\n  label_dropout: 0.2\n")
    with pytest.raises(ConfigError, match=r"--label_dropout is a flag of train-prior, not of train-classifier"):
        resolve_args(
            CLASSIFIER_COMMAND, {"config": config, "train_data_dir": images, "tokenizer_name_or_path": "org/t"}
        )
    assert (
        resolve_args(
            CLASSIFIER_COMMAND,
            {"train_data_dir": images, "tokenizer_name_or_path": "org/tok", "tokenizer_hub_id": "org/tok"},
        ).tokenizer_hub_id
        == "org/tok"
    )


def test_each_command_parses_into_its_typed_config(images):
    given = {"train_data_dir": images, "tokenizer_name_or_path": "org/tok"}
    tokenizer = resolve_args(TOKENIZER_COMMAND, {"config": TINY_CONFIG, "train_data_dir": images})
    classifier, prior = resolve_args(CLASSIFIER_COMMAND, given), resolve_args(PRIOR_COMMAND, given)
    assert type(tokenizer) is TokenizerTrainingConfig and tokenizer.model_config["codebook_size"] == 32
    assert type(classifier) is ClassifierTrainingConfig and type(prior) is PriorTrainingConfig
    assert not hasattr(tokenizer, "tokenizer_hub_id") and not hasattr(classifier, "use_ema")
    assert (prior.prior_type, prior.learning_rate, prior.model_config) == ("maskgit", 1e-3, {})


def test_a_command_whose_config_class_misses_a_group_is_refused():
    with pytest.raises(TypeError, match=r"differ in \['adam_beta1'"):
        TrainingCommand(
            "train-x",
            "x",
            config_class=TokenizerTrainingConfig,
            groups=tuple(group for group in TOKENIZER_COMMAND.groups if group is not OptimizationArguments),
            model_config_class=TOKENIZER_COMMAND.model_config_class,
        )


def test_lr_scheduler_takes_diffusers_names():
    from diffusers.optimization import SchedulerType

    assert set(LR_SCHEDULERS) == {kind.value for kind in SchedulerType} - {"piecewise_constant"}


# ------------------------------------------------------------------------------------------------ one-line errors


def _run_cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "hf_vq.cli", *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environment,
        timeout=300,
    )


def test_a_bad_config_value_is_one_line_without_traceback_unless_debug(tmp_path, images):
    config = _config(tmp_path, TINY_MODEL + "training:\n  train_batch_size: [4]\n")
    result = _run_cli("train-tokenizer", "--config", config, "--train_data_dir", images)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"hf-vq train-tokenizer: error: training.train_batch_size in {config} must be an integer, got [4]"
    ]
    debug = _run_cli("train-tokenizer", "--config", config, "--train_data_dir", images, "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr


def test_hf_vq_debug_lets_the_error_through(tmp_path, images, monkeypatch):
    config = _config(tmp_path, TINY_MODEL + "training:\n  train_batch_size: [4]\n")
    monkeypatch.setenv("HF_VQ_DEBUG", "1")
    with pytest.raises(ConfigError, match="must be an integer"):  # the exception itself: Python prints its traceback
        main(["train-tokenizer", "--config", config, "--train_data_dir", images])


def test_data_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "train-tokenizer",
                "--config",
                TINY_CONFIG,
                "--train_data_dir",
                str(tmp_path / "empty"),
                "--output_dir",
                str(tmp_path / "run"),
                "--no-progress_bar",
            ]
        )
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.startswith("hf-vq train-tokenizer: error: ") and "Traceback" not in err


def test_a_hub_dataset_that_cannot_be_loaded_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # offline (conftest): not in the cache
        main(
            [
                "train-tokenizer",
                "--config",
                TINY_CONFIG,
                "--dataset_name",
                "org/no-such-dataset",
                "--output_dir",
                str(tmp_path / "run"),
                "--no-progress_bar",
            ]
        )
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in err
    assert err.startswith("hf-vq train-tokenizer: error: cannot load the Hub dataset 'org/no-such-dataset' (")


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train-tokenizer", "--mixed_precision", "fp8"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and "invalid choice: 'fp8'" in err


def test_a_missing_tokenizer_is_one_line(tmp_path, images, capsys):
    with pytest.raises(SystemExit):
        main(["train-classifier", "--train_data_dir", images, "--tokenizer_name_or_path", str(tmp_path / "nowhere")])
    assert capsys.readouterr().err.strip() == (
        f"hf-vq train-classifier: error: --tokenizer_name_or_path '{tmp_path / 'nowhere'}' does not exist"
    )


def test_a_tokenizer_that_cannot_be_loaded_is_one_line(tmp_path, images, capsys):
    with pytest.raises(SystemExit) as exit_info:  # offline (conftest): a Hub id not in the cache cannot load
        main(
            [
                "train-classifier",
                "--train_data_dir",
                images,
                "--tokenizer_name_or_path",
                "org/no-such-tokenizer",
                "--revision",
                "v2",
                "--output_dir",
                str(tmp_path / "run"),
                "--no-progress_bar",
            ]
        )
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith(
        "hf-vq train-classifier: error: cannot load the tokenizer --tokenizer_name_or_path "
        "'org/no-such-tokenizer' (revision 'v2'): "
    )


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_report_to_a_tracker_that_is_not_installed_fails_at_start(images, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "train-tokenizer",
                "--config",
                TINY_CONFIG,
                "--train_data_dir",
                images,
                "--report_to",
                "wandb",
                "--output_dir",
                str(tmp_path / "run"),
            ]
        )
    assert exit_info.value.code == 2
    assert "--report_to wandb needs the wandb package" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_half_pixels_into_a_float_tokenizer_say_what_to_do():
    from hf_vq import VQGANConfig, VQGANModel

    model = VQGANModel(VQGANConfig.from_yaml(TINY_CONFIG)).eval()
    with pytest.raises(
        TypeError,
        match=r"pixel_values are torch.float16 but the model's weights are torch.float32: "
        r"cast them with pixel_values.to\(model.dtype\)",
    ):
        model.encode(torch.zeros(1, 3, 16, 16, dtype=torch.float16))


# ------------------------------------------------------------------------------------------------ before training


@pytest.fixture
def loopback_hub(tmp_path, monkeypatch):
    from hub_server import HubServer

    server = HubServer(tmp_path / "hub", tokens={"hf_alice": "alice"}, orgs={"alice": ["org"]}).start()
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-file"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield server
    server.stop()


@pytest.mark.parametrize(
    "repo, token, message",
    [
        ("alice/vqgan", "hf_wrong", "rejected the token (401)"),
        ("someone-else/vqgan", "hf_alice", "cannot write to 'someone-else'"),
    ],
)
def test_push_to_hub_checks_the_token_against_the_hub_before_training(
    loopback_hub, images, tmp_path, capsys, repo, token, message
):
    output_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "train-tokenizer",
                "--config",
                TINY_CONFIG,
                "--train_data_dir",
                images,
                "--output_dir",
                str(output_dir),
                "--push_to_hub",
                "--hub_model_id",
                repo,
                "--hub_token",
                token,
            ]
        )
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and message in err and "Traceback" not in err
    assert not output_dir.exists()  # nothing was built, trained or written


# ------------------------------------------------------------------------------------------------ a short run


def test_tensorboard_gets_the_sample_grids_and_the_summary_is_printed(images, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from training_helpers import train

    output_dir = tmp_path / "run"
    train(
        output_dir,
        train_data_dir=images,
        max_train_steps=2,
        validation_steps=1,
        checkpointing_steps=0,
        discriminator_weight=0.0,
        report_to="tensorboard",
        logging_dir=str(tmp_path / "tb"),
    )
    printed = capsys.readouterr().out
    for line in (
        "***** Running training *****",
        "batch size per process",
        "optimizer steps                   = 2",
        "parameters (tokenizer)",
        "processes                         = 1",
        "mixed precision",
    ):
        assert line in printed, line
    events = [EventAccumulator(str(path.parent)).Reload() for path in (tmp_path / "tb").rglob("events.out.*")]
    image_steps = sorted(
        event.step
        for accumulator in events
        for tag in accumulator.Tags()["images"]
        for event in accumulator.Images(tag)
    )
    assert image_steps == [1, 2]  # the grid of the evaluation at step 1 and the final one
    assert json.loads((output_dir / "training_config.json").read_text())["logging_dir"] == str(tmp_path / "tb")


def _command_of(config: str):
    """The command a shipped config is for, by its name's prefix."""
    if config.startswith("vqgan"):
        return TOKENIZER_COMMAND
    if config.startswith("token_vit"):
        return CLASSIFIER_COMMAND
    if config.startswith(("maskgit", "autoregressive")):
        from hf_vq.training.prior_command import PRIOR_COMMAND

        return PRIOR_COMMAND
    pytest.fail(f"configs/{config}: which command is it for? Add its prefix to _command_of")


@pytest.mark.parametrize("config", sorted(path.name for path in (REPO / "configs").glob("*.yaml")))
def test_every_shipped_config_is_valid(config, images):
    command = _command_of(config)
    given = {"config": str(REPO / "configs" / config), "dataset_name": None, "train_data_dir": images}
    if command is not TOKENIZER_COMMAND:  # the commands that read a tokenizer's tokens
        given["tokenizer_name_or_path"] = "org/tokenizer"
    resolve_args(command, given)  # every key known, every value of the right type, the architecture consistent


def test_commands_run_with_other_libraries_info_logs_quiet(tmp_path, caplog, monkeypatch):
    import logging

    from hf_vq.training.args import run_script

    monkeypatch.delenv("HF_VQ_DEBUG", raising=False)

    def run(config):
        logging.getLogger("httpx").info("HTTP Request: HEAD https://huggingface.co/...")
        logging.getLogger("hf_vq.training").info("step 1")

    argv = ["--config", str(REPO / "configs" / "vqgan_tiny.yaml"), "--train_data_dir", str(tmp_path)]
    with caplog.at_level(logging.INFO):
        assert run_script(TOKENIZER_COMMAND, run, argv) == 0
    assert "step 1" in caplog.text and "HTTP Request" not in caplog.text
    monkeypatch.setenv("HF_VQ_DEBUG", "1")
    with caplog.at_level(logging.INFO):
        run_script(TOKENIZER_COMMAND, run, argv)
    assert "HTTP Request" in caplog.text
