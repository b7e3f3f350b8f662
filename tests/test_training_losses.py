"""Losses, LPIPS, discriminator, flags and checkpoint bookkeeping of tokenizer training (fast, no training run)."""

import json
import re

import pytest
import torch
from torch import nn

from hf_vq.training import (
    LPIPS,
    ConfigError,
    LeCamEMA,
    LPIPSWeightsError,
    NLayerDiscriminator,
    adaptive_generator_weight,
    hinge_discriminator_loss,
    hinge_generator_loss,
    load_lpips,
    reconstruction_loss,
)
from hf_vq.training.checkpointing import TrainingState, list_checkpoints, prune_checkpoints, resolve_resume_checkpoint
from hf_vq.training.tokenizer_command import parse_tokenizer_args
from hf_vq.training.tracking import JSONLTracker

from training_helpers import TINY_CONFIG, training_args, write_images


def test_reconstruction_losses():
    zeros, twos = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 2.0)
    assert float(reconstruction_loss(zeros, twos, "l1")) == 2.0
    assert float(reconstruction_loss(zeros, twos, "l2")) == 4.0
    with pytest.raises(ValueError, match="l1"):
        reconstruction_loss(zeros, twos, "huber")


def test_hinge_losses():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.0])
    # relu(1 - real) = [0, 1], relu(1 + fake) = [0, 1]: 0.5 * (0.5 + 0.5)
    assert float(hinge_discriminator_loss(real, fake)) == pytest.approx(0.5)
    assert float(hinge_generator_loss(fake)) == pytest.approx(1.0)


def test_adaptive_weight_is_the_gradient_norm_ratio():
    layer = nn.Linear(3, 3)
    x = torch.randn(5, 3)
    out = layer(x)
    nll, gan = out.pow(2).mean(), out.sum() * 0.1
    expected = torch.autograd.grad(nll, layer.weight, retain_graph=True)[0].norm() / (
        torch.autograd.grad(gan, layer.weight, retain_graph=True)[0].norm() + 1e-4
    )
    weight = adaptive_generator_weight(nll, gan, layer.weight)
    assert float(weight) == pytest.approx(float(expected), rel=1e-6)
    assert not weight.requires_grad
    (nll + weight * gan).backward()  # the graphs are still there for the real backward


def test_lecam_regularization_and_state_round_trip():
    ema = LeCamEMA(decay=0.5)
    ema.update(torch.tensor([1.0]), torch.tensor([-1.0]))
    ema.update(torch.tensor([3.0]), torch.tensor([1.0]))
    assert (ema.real, ema.fake) == (2.0, 0.0)
    # relu(D(x) - ema_fake)^2 = 1, relu(ema_real - D(G(z)))^2 = 4
    assert float(ema.regularization(torch.tensor([1.0]), torch.tensor([0.0]))) == pytest.approx(5.0)
    restored = LeCamEMA()
    restored.load_state_dict(ema.state_dict())
    assert restored.state_dict() == ema.state_dict()


def test_patchgan_discriminator_shapes_and_size_check():
    disc = NLayerDiscriminator(in_channels=3, base_channels=8, num_layers=3)
    assert disc(torch.randn(2, 3, 32, 32)).shape == (2, 1, 2, 2)
    with pytest.raises(ValueError, match="too small"):
        disc(torch.randn(1, 3, 16, 16))
    assert NLayerDiscriminator(1, 8, num_layers=2, norm="group")(torch.randn(2, 1, 16, 16)).shape == (2, 1, 2, 2)


def test_lpips_forward_with_random_weights():
    lpips = LPIPS()
    images = torch.rand(2, 1, 16, 16, requires_grad=True)
    distance = lpips(images * 2 - 1, torch.rand(2, 1, 16, 16) * 2 - 1)
    assert distance.shape == (2,)
    distance.sum().backward()
    assert images.grad.abs().sum() > 0  # gradients reach the images...
    assert all(p.grad is None for p in lpips.parameters())  # ...not the frozen network
    same = torch.rand(1, 3, 16, 16)
    assert float(lpips(same, same)) == pytest.approx(0.0, abs=1e-6)
    lpips.train()
    assert not lpips.training  # the loss network never leaves eval mode


def test_lpips_without_weights_is_a_clear_error():
    with pytest.raises(LPIPSWeightsError, match="--lpips_weights"):
        load_lpips(None)
    with pytest.raises(LPIPSWeightsError, match="no such file"):
        load_lpips("./missing/vgg16.pth")
    with pytest.raises(LPIPSWeightsError, match="Hub repository"):
        load_lpips("someone/lpips-vgg16")  # offline in tests: the Hub cannot be reached


def test_lpips_loads_a_torchvision_vgg16_state_dict(tmp_path):
    source = LPIPS()
    torch.nn.init.normal_(source.net.slice1[0].weight)
    # torchvision's layout: features.N.weight, plus a classifier that LPIPS ignores.
    torchvision_style = {"features." + key.split(".", 1)[1]: value for key, value in source.net.state_dict().items()}
    torchvision_style["classifier.0.weight"] = torch.zeros(1)
    torch.save(torchvision_style, tmp_path / "vgg16.pth")
    loaded = load_lpips(tmp_path / "vgg16.pth")
    for key, value in source.net.state_dict().items():
        assert torch.equal(loaded.net.state_dict()[key], value), key
    # The linear heads come from the calibrated weights that torchmetrics ships.
    assert loaded.lin0.model[1].weight.abs().sum() > 0
    # LPIPS taps relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3: torchvision's features 3, 8, 15, 22 and 29.
    slices = [getattr(loaded.net, f"slice{number}") for number in range(1, 6)]
    assert [list(block.named_children())[-1][0] for block in slices] == ["3", "8", "15", "22", "29"]
    assert all(isinstance(block[-1], nn.ReLU) for block in slices)
    features = loaded.net(torch.randn(1, 3, 32, 32))
    assert [tuple(f.shape[1:]) for f in features] == [
        (64, 32, 32),
        (128, 16, 16),
        (256, 8, 8),
        (512, 4, 4),
        (512, 2, 2),
    ]


def test_lpips_backbone_missing_names_it(tmp_path):
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, tmp_path / "heads.pth")
    with pytest.raises(LPIPSWeightsError, match="VGG16 backbone"):
        load_lpips(tmp_path / "heads.pth")


def test_flags_override_the_config_file(tmp_path):
    from hf_vq.cli import build_parser
    from hf_vq.training.tokenizer_command import resolve_tokenizer_args

    images = write_images(tmp_path / "images", 2)
    argv = ["--config", TINY_CONFIG, "--train_data_dir", str(images), "--train_batch_size", "2", "--no-random_flip"]
    namespace = build_parser().parse_args(["train-tokenizer", *argv])
    given = {key: value for key, value in vars(namespace).items() if key not in ("handler", "command")}
    for args in (resolve_tokenizer_args(given), parse_tokenizer_args(argv)):
        assert args.train_batch_size == 2  # flag beats the file's 4
        assert args.learning_rate == 1e-3  # from the file
        assert args.adam_beta1 == 0.5  # built-in default
        assert args.model_config["codebook_size"] == 32
        assert args.discriminator_learning_rate == args.learning_rate


@pytest.mark.parametrize(
    "flags, message",
    [
        ([], "no training data"),
        (["--train_data_dir", "/nonexistent/images"], "does not exist"),
        (["--train_data_dir", "{images}", "--train_batch_size", "0"], "--train_batch_size must be >= 1"),
        (["--train_data_dir", "{images}", "--discriminator_weight", "0", "--lecam_weight", "0.1"], "discriminator"),
        (["--train_data_dir", "{images}", "--push_to_hub"], "--hub_model_id"),
        (
            ["--train_data_dir", "{images}", "--resume_from_checkpoint", "/nonexistent/checkpoint-3"],
            "neither 'latest'",
        ),
        (["--train_data_dir", "{images}", "--mixed_precision", "fp8"], "invalid choice"),
    ],
)
def test_bad_flags_fail_with_clear_messages(tmp_path, capsys, flags, message):
    from hf_vq.cli import main

    images = write_images(tmp_path / "images", 2)
    flags = [flag.replace("{images}", str(images)) for flag in flags]
    with pytest.raises(SystemExit) as exit_info:
        main(["train-tokenizer", "--config", TINY_CONFIG, *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_config_files(tmp_path):
    images = str(write_images(tmp_path / "images", 2))
    cases = {"sections.yaml": "model: {}\ntrainer: {}\n", "keys.yaml": "training:\n  learning_rat: 0.1\n"}
    messages = {
        "sections.yaml": "unknown section 'trainer' (did you mean 'training'?)",
        "keys.yaml": "unknown key 'learning_rat' in section training: (did you mean 'learning_rate'?)",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=re.escape(messages[name])):
            parse_tokenizer_args(["--config", str(tmp_path / name), "--train_data_dir", images])
    with pytest.raises(ConfigError, match="no model"):
        training_args(tmp_path, config=None, train_data_dir=images, model_config={})


def test_checkpoint_retention_and_latest(tmp_path):
    from hf_vq.training.checkpointing import complete_checkpoint, temporary_folder

    for step in (10, 2, 30):
        temporary_folder(tmp_path, step).mkdir()
        (temporary_folder(tmp_path, step) / "model.safetensors").write_bytes(b"weights")
        complete_checkpoint(tmp_path, step, num_processes=1)
    (tmp_path / "checkpoint-notes").mkdir()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10", "checkpoint-30"]
    assert resolve_resume_checkpoint("latest", tmp_path).name == "checkpoint-30"
    assert resolve_resume_checkpoint("latest", tmp_path / "empty") is None
    removed = prune_checkpoints(tmp_path, total_limit=1)  # called once the newest is complete
    assert [p.name for p in removed] == ["checkpoint-2", "checkpoint-10"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-30"]
    state = TrainingState(global_step=5, epoch=1, batches_in_epoch=3)
    restored = TrainingState()
    restored.load_state_dict(state.state_dict())
    assert restored == state


def test_jsonl_tracker(tmp_path):
    tracker = JSONLTracker("run", tmp_path)
    tracker.log({"loss": torch.tensor(0.25), "bad": float("nan")}, step=3)
    tracker.store_init_configuration({"learning_rate": 1e-3})
    assert json.loads(tracker.path.read_text()) == {"step": 3, "loss": 0.25, "bad": "nan"}
    assert json.loads((tmp_path / "run_config.json").read_text()) == {"learning_rate": 1e-3}
