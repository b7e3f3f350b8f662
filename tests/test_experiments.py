"""The paper-reproduction experiments: model shapes, variant options, the CIFAR-10 error and the --quick run."""

from __future__ import annotations

import math

import pytest
import torch

from hf_vq.data import DataNotFoundError
from hf_vq.experiments import ARCHITECTURES, VARIANT_METHODS, AlexNetVQ, ResNet18VQ, ViTVQ, ablation_options
from hf_vq.experiments.datasets import load_cifar10
from hf_vq.experiments.defaults import TASK_ARCHITECTURES
from hf_vq.experiments.reproduce import main

SMALL_VQ = {"codebook_size": 32, "embed_dim": 16}
# The reproduction's architectures (ARCHITECTURES also holds the comparison study's VQGAN backbone).
REPRODUCED = [arch for archs in TASK_ARCHITECTURES.values() for arch in archs]


@pytest.mark.parametrize("size, channels, grid", [(28, 1, 7), (32, 3, 8)])
def test_alexnet_shapes(size, channels, grid):
    model = AlexNetVQ(in_channels=channels, num_classes=10, width=8, **SMALL_VQ)
    out = model(torch.randn(3, channels, size, size))
    assert out["logits"].shape == (3, 10)
    assert out["indices"].shape == (3, grid, grid)


@pytest.mark.parametrize("size, channels, grid", [(28, 1, 14), (32, 3, 16)])
def test_resnet18_shapes(size, channels, grid):
    model = ResNet18VQ(in_channels=channels, num_classes=10, width=8, **SMALL_VQ)
    out = model(torch.randn(3, channels, size, size))
    assert out["logits"].shape == (3, 10)
    assert out["indices"].shape == (3, grid, grid)
    # 18 weight layers: the stem, 16 convolutions in 8 blocks and the classifier (projections excluded).
    body_convs = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and ".body." in name]
    assert len(body_convs) == 16


@pytest.mark.parametrize("size, channels, tokens", [(28, 1, 49), (32, 3, 64)])
def test_vit_shapes(size, channels, tokens):
    model = ViTVQ(
        in_channels=channels, num_classes=10, image_size=size, dim=16, depth=2, num_heads=2, codebook_size=32
    )
    out = model(torch.randn(3, channels, size, size))
    assert out["logits"].shape == (3, 10)
    assert out["indices"].shape == (3, tokens)


def test_classifier_gradients_reach_encoder_and_codebook():
    model = AlexNetVQ(in_channels=1, width=8, sync_nu=0.5, affine="learned", **SMALL_VQ)
    out = model(torch.randn(4, 1, 28, 28))
    (out["logits"].sum() + out["vq_loss"]).backward()
    assert model.before[0].weight.grad.abs().sum() > 0
    assert model.quantizer.embedding.weight.grad.abs().sum() > 0


def test_ablation_variants_switch_on_one_method_each():
    defaults = ARCHITECTURES["alexnet"]
    assert ablation_options("baseline", defaults) == {"beta": defaults.beta}
    assert ablation_options("affine", defaults)["affine"] == "learned"
    assert ablation_options("sync", defaults)["sync_nu"] == defaults.sync_nu
    assert ablation_options("alternating", defaults)["alternating"] is True
    assert ablation_options("replace", defaults)["replace_freq"] == defaults.replace_freq
    assert set(ablation_options("all", defaults)) == {
        "beta",
        "affine",
        "affine_lr",
        "sync_nu",
        "alternating",
        "replace_freq",
    }
    with pytest.raises(ValueError, match="unknown variant"):
        ablation_options("everything", defaults)


def test_cifar10_error_names_what_is_missing(tmp_path):
    (tmp_path / "data_batch_1").write_bytes(b"")
    with pytest.raises(DataNotFoundError) as error:
        load_cifar10(str(tmp_path))
    message = str(error.value)
    assert "data_batch_2" in message and "test_batch" in message and "data_batch_1," not in message
    assert "cifar-10-batches-py" in message and "uoft-cs/cifar10" in message


def test_quick_run_trains_every_variant_and_writes_the_report(tmp_path):
    result = main(["--task", "all", "--quick", "--output_dir", str(tmp_path)])
    runs = result["runs"]
    trained = {(run["architecture"], run["variant"]) for run in runs}
    assert trained == {(arch, variant) for arch in REPRODUCED for variant in VARIANT_METHODS}
    for run in runs:
        assert run["steps"] == 6 and len(run["curve"]) == 2
        assert all(math.isfinite(point["train_loss"]) for point in run["curve"])
        assert run["metrics"]["codebook_shift"] > 0, (
            f"{run['architecture']}/{run['variant']}: the codebook never moved"
        )
    report = (tmp_path / "results_fashion_mnist.md").read_text()
    for name in [*REPRODUCED, *VARIANT_METHODS]:
        assert name in report
    assert (tmp_path / "results_fashion_mnist.json").is_file()
    assert len(list(tmp_path.glob("fashion_mnist_*_seed0.json"))) == len(REPRODUCED) * len(VARIANT_METHODS)
    # matplotlib is in the dev extra: without it the run skips its plot, and this test says so.
    assert result["plot"] is not None, "no plot was made: is matplotlib (the dev extra) installed?"
    assert result["plot"].stat().st_size > 0


def test_quick_run_is_deterministic(tmp_path):
    argv = ["--task", "classification", "--arch", "alexnet", "--variants", "baseline,all", "--quick"]
    first = main([*argv, "--output_dir", str(tmp_path / "a")])["runs"]
    second = main([*argv, "--output_dir", str(tmp_path / "b")])["runs"]
    assert [run["metrics"] for run in first] == [run["metrics"] for run in second]


def test_reproduce_exits_with_the_data_message_when_cifar10_is_missing(tmp_path):
    with pytest.raises(SystemExit, match="data_batch_1.*test_batch"):
        main(["--dataset", "cifar10", "--data_dir", str(tmp_path), "--quick", "--output_dir", str(tmp_path / "out")])


def test_study_evaluations_count_codes_with_the_quantizers_metric():
    """The study's perplexity and usage over a test set are the quantizer's own (quantization/metrics.py) over the
    histogram of every code the set used, not a second formula."""
    from hf_vq.experiments.autoencoder import ConvVQAutoencoder, evaluate_autoencoder
    from hf_vq.experiments.runner import evaluate
    from hf_vq.quantization.metrics import code_counts, perplexity_and_usage

    torch.manual_seed(0)
    model = ConvVQAutoencoder(hidden=8, embed_dim=4, codebook_size=16).eval()
    images = torch.randn(6, 1, 8, 8) * 3  # spread out enough to use several codes
    with torch.no_grad():
        counts = code_counts(model(images)["indices"].flatten(), 16)
    perplexity, usage = (float(value) for value in perplexity_and_usage(counts))
    assert 1 < perplexity < 16 and 0 < usage < 1  # a histogram that tells perplexity and usage apart
    for metrics in (
        evaluate_autoencoder(model, images, batch_size=4),
        evaluate("reconstruction", model, images, torch.zeros(6), 16, batch_size=4),
    ):
        assert metrics["perplexity"] == pytest.approx(perplexity, rel=1e-6)
        assert metrics["usage"] == pytest.approx(usage, rel=1e-6)
