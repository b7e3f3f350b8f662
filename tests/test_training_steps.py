"""Issue 25: unit tests that pin what the training commands compute around their models (fast: tiny real models, no
training run): the MaskGIT prior's training loss and label dropout, validation, class sample grids, the classifier's
evaluation, the tokenizer's adversarial helpers and evaluation, the data and token-cache bookkeeping, and what the
commands print. Each test fails on a plausible one-line bug of the code it names (scripts/mutants.toml)."""

import json
from types import SimpleNamespace

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput

from hf_vq import MaskGITModel, MaskGITPipeline, MaskGITScheduler, VQGANModel
from hf_vq.data import ImageTransform
from hf_vq.errors import ConfigError
from hf_vq.evaluation import save_image_grid
from hf_vq.schedulers.scheduling_maskgit import mask_tokens
from hf_vq.training.classifier_command import report as classifier_report
from hf_vq.training.classifier_loop import evaluate as evaluate_classifier
from hf_vq.training.classifier_loop import evaluated_split_name
from hf_vq.training.data import hold_out, _max_train_steps
from hf_vq.training.discriminator import NLayerDiscriminator
from hf_vq.training.end_of_run import write_metrics
from hf_vq.training.evaluate import evaluate_reconstructions
from hf_vq.training.losses import hinge_generator_loss
from hf_vq.training.prior_command import format_generation_metrics
from hf_vq.training.prior_evaluation import generate, save_class_samples
from hf_vq.training.prior_loop import check_classes, validation_loss
from hf_vq.training.priors import get_prior_spec
from hf_vq.training.priors.maskgit import MaskedTokenLoss, MaskGITPrior, drop_labels
from hf_vq.training.token_data import ImageEncoder, encode_labels
from hf_vq.training.tokenizer_command import report as tokenizer_report
from hf_vq.training.tokenizer_loop import Networks, adversarial_generator_loss, frozen

from training_helpers import reset_accelerate

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


@pytest.fixture
def accelerator():
    reset_accelerate()
    return Accelerator(cpu=True)


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return VQGANModel.from_pretrained(tokenizer_dir).eval()


@pytest.fixture(scope="module")
def prior(tokenizer, tokenizer_dir):
    torch.manual_seed(0)
    return MaskGITModel.from_tokenizer(
        str(tokenizer_dir), tokenizer=tokenizer, num_classes=3, initializer_range=0.5, **TINY
    ).eval()


@pytest.fixture(scope="module")
def pipeline(tokenizer, prior):
    pipe = MaskGITPipeline(vqgan=tokenizer, transformer=prior, scheduler=MaskGITScheduler(mask_token_id=32))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sampling_config(**overrides) -> SimpleNamespace:
    values = dict(
        num_sample_images=2,
        seed=0,
        generation_batch_size=4,
        guidance_scale=2.0,
        temperature=1.0,
        num_inference_steps=2,
    )
    return SimpleNamespace(**{**values, **overrides})


# ------------------------------------------------------------------------------------------------ the MaskGIT prior


def test_label_dropout_replaces_the_asked_share_of_labels_by_the_null_class():
    labels = torch.arange(20000) % 3
    dropped = drop_labels(labels, 3, 0.2, torch.Generator().manual_seed(0))
    null = dropped == 3
    assert abs(float(null.float().mean()) - 0.2) < 0.01  # measured over 20,000 draws
    assert torch.equal(dropped[~null], labels[~null])  # the others keep their own label
    assert drop_labels(labels, 3, 0.0) is labels


def test_the_masked_token_loss_is_the_cross_entropy_on_the_masked_positions_with_dropped_labels(prior):
    tokens = torch.randint(0, 32, (64, 8, 8), generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(2))
    loss, logs = MaskedTokenLoss(prior.config, 0.3)(
        prior, {"image_tokens": tokens, "labels": labels}, generator=torch.Generator().manual_seed(3)
    )
    # The same draws in the same order: the mask first, then the label drops.
    generator = torch.Generator().manual_seed(3)
    inputs, targets = mask_tokens(tokens, prior.config.mask_token_id, generator=generator)
    class_labels = drop_labels(labels, prior.config.null_class_id, 0.3, generator)
    assert 0 < int((class_labels == prior.config.null_class_id).sum()) < 64
    logits = prior(inputs, class_labels=class_labels).logits
    masked = targets.reshape(64, -1) != -100
    expected = F.cross_entropy(logits[masked], targets.reshape(64, -1)[masked])
    torch.testing.assert_close(loss, expected)
    accuracy = (logits.argmax(-1)[masked] == targets.reshape(64, -1)[masked]).float().mean()
    torch.testing.assert_close(logs["masked_accuracy"], accuracy)
    unconditional = MaskedTokenLoss(prior.config, None)(
        prior, {"image_tokens": tokens}, torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(
        unconditional[0], F.cross_entropy(prior(inputs).logits[masked], targets.reshape(64, -1)[masked])
    )


def test_an_unknown_prior_type_lists_the_valid_ones():
    with pytest.raises(
        ConfigError, match=r"'maskgti' is not a known prior.*'maskgit'.*; valid: maskgit, autoregressive"
    ):
        get_prior_spec("maskgti")
    assert isinstance(get_prior_spec("maskgit"), MaskGITPrior)


def test_validation_weighs_batches_by_size_without_label_dropout_from_a_fixed_seed(prior, accelerator):
    rows = [
        {"image_tokens": torch.randint(0, 32, (8, 8), generator=torch.Generator().manual_seed(i)), "labels": i % 3}
        for i in range(5)
    ]
    loader = torch.utils.data.DataLoader(rows, batch_size=3)  # batches of 3 and 2
    spec = get_prior_spec("maskgit")
    metrics = validation_loss(spec, accelerator, prior, None, loader, seed=7)
    loss_function, generator = MaskedTokenLoss(prior.config, 0.0), torch.Generator().manual_seed(7)
    with torch.no_grad():
        losses = [(loss_function(prior, batch, generator=generator)[0], len(batch["labels"])) for batch in loader]
    expected = sum(float(loss) * size for loss, size in losses) / 5
    assert metrics["val_loss"] == pytest.approx(expected, rel=1e-6)
    assert set(metrics) == {"val_loss", "val_masked_accuracy"}


def test_a_prior_knows_at_least_the_classes_of_its_data(prior):
    check_classes(prior, {0: "a", 1: "b", 2: "c"}, conditional=True)
    check_classes(prior, {}, conditional=False)
    with pytest.raises(ValueError, match="the dataset has 4 classes but the prior was built for num_classes=3"):
        check_classes(prior, {i: str(i) for i in range(4)}, conditional=True)


def test_generated_images_are_the_pipelines_in_the_tokenizers_range_in_batches(pipeline):
    config = _sampling_config(generation_batch_size=4)
    spec = get_prior_spec("maskgit")
    images, tokens = generate(config, spec, pipeline, [2, 0, 1, 2, 0, 1], 6, torch.Generator().manual_seed(5))
    assert images.shape == (6, 3, 16, 16) and tokens.shape == (6, 8, 8)
    generator = torch.Generator().manual_seed(5)
    for start, labels in ((0, [2, 0, 1, 2]), (4, [0, 1])):
        output = pipeline(
            class_labels=labels,
            num_inference_steps=2,
            guidance_scale=2.0,
            temperature=1.0,
            generator=generator,
            output_type="pt",
        )
        torch.testing.assert_close(images[start : start + len(labels)], output.images.float() * 2 - 1)
        assert torch.equal(tokens[start : start + len(labels)], output.image_tokens)
    unconditional, _ = generate(config, spec, pipeline, None, 6, torch.Generator().manual_seed(5))
    assert unconditional.shape == (6, 3, 16, 16)  # 4, then the 2 left


def test_the_sample_grid_has_one_row_per_class(pipeline, tmp_path):
    config = _sampling_config(num_sample_images=2)
    spec = get_prior_spec("maskgit")
    save_class_samples(config, spec, pipeline, {0: "a", 1: "b", 2: "c"}, tmp_path / "grid.png")
    images, _ = generate(config, spec, pipeline, [0, 0, 1, 1, 2, 2], 6, torch.Generator().manual_seed(0))
    save_image_grid(images, tmp_path / "expected.png", columns=2)
    grid, expected = (np.asarray(PIL.Image.open(tmp_path / name)) for name in ("grid.png", "expected.png"))
    assert np.array_equal(grid, expected)
    assert (
        save_class_samples(_sampling_config(num_sample_images=0), spec, pipeline, {0: "a"}, tmp_path / "no.png")
        is None
    )
    assert not (tmp_path / "no.png").exists()


def test_the_prior_report_reads_each_metric_against_its_reference():
    metrics = {
        "global_step": 30,
        "train_seconds": 12.4,
        "conditional_accuracy": 0.5,
        "real_accuracy": 0.8,
        "relative_conditional_accuracy": 0.625,
        "classifier_fid": 2.0,
        "reconstruction_classifier_fid": 0.5,
        "classifier_fid_ratio": 4.0,
        "inception_fid": 9.0,
    }
    assert format_generation_metrics(metrics).splitlines() == [
        "30 steps, 12 s",
        "conditional accuracy 50.00% (classifier on real test images: 80.00%; ratio 0.62)",
        "classifier fid 2.000 (tokenizer reconstructions: 0.500; ratio 4.00)",
        "inception fid 9.000",
    ]


def test_the_prior_report_reads_a_judge_that_gets_no_real_image_right():
    # A 20-step pixel ViT judged every real test image wrong: the metrics had no ratio and the report raised
    # KeyError at the end of a finished run (its folder saved, the command failed).
    metrics = {"conditional_accuracy": 0.25, "real_accuracy": 0.0}
    assert format_generation_metrics(metrics).splitlines() == [
        "conditional accuracy 25.00% (classifier on real test images: 0.00%; ratio undefined)"
    ]


# ------------------------------------------------------------------------------------------------ the classifier


class _LookupClassifier(nn.Module):
    """A real (tiny) classifier: the logits of example i are row i of a table."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, index: torch.Tensor) -> ImageClassifierOutput:
        return ImageClassifierOutput(logits=self.table[index])


def test_classifier_evaluation_counts_top1_top5_and_the_mean_loss(accelerator):
    table = torch.tensor([[float(-abs(j - i)) for j in range(7)] for i in range(7)])  # class i ranks i first
    index = torch.tensor([0, 1, 2, 2, 3, 6])
    labels = torch.tensor([0, 1, 4, 6, 3, 0])  # top-1 right for 0, 1, 3; label 4 of index 2 among its top 5
    loader = torch.utils.data.DataLoader([{"index": i, "labels": y} for i, y in zip(index, labels)], batch_size=4)
    model = _LookupClassifier(table)
    metrics = evaluate_classifier(accelerator, model, loader)
    logits = table[index]
    top5 = logits.topk(5, dim=-1).indices
    assert metrics["accuracy"] == pytest.approx(3 / 6)  # indices 0, 1, 3 are right
    assert metrics["top5_accuracy"] == pytest.approx(float((top5 == labels[:, None]).any(-1).float().mean()))
    assert metrics["top5_accuracy"] == pytest.approx(4 / 6)
    assert metrics["eval_loss"] == pytest.approx(float(F.cross_entropy(logits, labels)))
    assert metrics["eval_examples"] == 6 and model.training


def test_classifier_evaluation_reports_no_top5_accuracy_with_five_classes_or_fewer(accelerator):
    """With 5 classes or fewer the top 5 hold every class: a top-5 accuracy of 1 whatever the model, so metrics.json
    (uploaded with the model) does not report it, as the card does not (issue 24)."""
    for num_classes, reported in ((3, False), (5, False), (6, True)):
        table = torch.eye(num_classes)
        loader = torch.utils.data.DataLoader([{"index": 0, "labels": 1}], batch_size=1)
        metrics = evaluate_classifier(accelerator, _LookupClassifier(table), loader)
        assert ("top5_accuracy" in metrics) == reported, num_classes
        assert metrics["accuracy"] == 0.0 and metrics["eval_examples"] == 1


def test_the_evaluated_split_is_named_as_held_out_when_it_came_from_train():
    config = SimpleNamespace(train_split="train")
    held_out = datasets.Dataset.from_dict({"x": [1]}, split="train")
    assert evaluated_split_name(config, held_out) == "train (held-out part)"
    assert evaluated_split_name(config, datasets.Dataset.from_dict({"x": [1]}, split="test")) == "test"
    assert evaluated_split_name(config, None) is None


def test_the_commands_report_their_results(capsys):
    classifier_report(
        {
            "output_dir": "out",
            "metrics_path": "out/metrics.json",
            "metrics": {
                "model_type": "token_vit",
                "split": "test",
                "accuracy": 0.91234,
                "eval_examples": 10,
                "global_step": 5,
                "train_seconds": 3.2,
            },
        }
    )
    tokenizer_report({"output_dir": "tok", "metrics_path": "tok/metrics.json", "metrics": {"psnr": 20.0, "loss": 1.0}})
    tokenizer_report({"output_dir": "x", "metrics_path": "x/m.json", "metrics": {}, "is_main_process": False})
    out = capsys.readouterr().out
    assert "token_vit top-1 accuracy on test: 0.9123 (10 images, 5 steps, 3 s)" in out
    assert "metrics:             tok/metrics.json  {'psnr': 20.0}" in out and "x/m.json" not in out


# ------------------------------------------------------------------------------------------------ the tokenizer loop


def test_the_generator_step_leaves_the_discriminator_and_its_statistics_alone(accelerator):
    discriminator = NLayerDiscriminator(in_channels=1, base_channels=4, num_layers=1, norm="batch")
    running_mean = discriminator.main[3].running_mean.clone()
    images = torch.randn(2, 1, 8, 8, requires_grad=True)
    with frozen(accelerator, discriminator):
        discriminator(images).mean().backward()
    assert images.grad.abs().sum() > 0  # gradients still reach the images...
    assert all(parameter.grad is None for parameter in discriminator.parameters())  # ...not the discriminator
    assert torch.equal(discriminator.main[3].running_mean, running_mean)
    assert all(parameter.requires_grad for parameter in discriminator.parameters())
    assert discriminator.main[3].momentum == 0.1


def test_the_adversarial_generator_loss_is_weighted_by_the_discriminator_weight(accelerator):
    discriminator = NLayerDiscriminator(in_channels=1, base_channels=4, num_layers=1, norm="none")
    reconstruction = torch.randn(2, 1, 8, 8)
    networks = Networks(generator=None, discriminator=discriminator, lpips=None, ema=None, lecam=None)
    config = SimpleNamespace(discriminator_weight=0.3, adaptive_weight=False)
    loss, logs = adversarial_generator_loss(config, accelerator, networks, None, reconstruction, None)
    expected = hinge_generator_loss(discriminator(reconstruction))
    torch.testing.assert_close(loss, 0.3 * expected)
    torch.testing.assert_close(logs["generator_adversarial_loss"], expected.detach())


def test_the_evaluation_grid_holds_the_first_images_of_several_batches_on_the_main_process(tokenizer, tmp_path):
    batches = [{"pixel_values": torch.rand(2, 3, 16, 16) * 2 - 1} for _ in range(3)]
    batches.insert(1, {"pixel_values": torch.empty(0, 3, 16, 16)})  # every image of that batch was unreadable
    metrics = evaluate_reconstructions(tokenizer, batches, torch.device("cpu"), tmp_path / "grid.png", 3)
    assert {"psnr", "ssim", "codebook_usage", "perplexity"} <= set(metrics)
    # 3 originals beside their reconstructions: 2 * 3 tiles of 16 pixels and 2-pixel borders.
    assert PIL.Image.open(tmp_path / "grid.png").size == (2 * 3 * 16 + 7 * 2, 16 + 2 * 2)
    evaluate_reconstructions(tokenizer, batches, "cpu", tmp_path / "other.png", 3, is_main_process=False)
    assert not (tmp_path / "other.png").exists()


# ------------------------------------------------------------------------------------------------ data bookkeeping


def test_steps_of_an_epoch_count_the_last_partial_batch_and_window():
    config = SimpleNamespace(
        max_train_steps=None, train_batch_size=4, num_train_epochs=2, gradient_accumulation_steps=2
    )
    # 18 examples on 2 processes: 3 batches each (the last partial), 2 optimizer steps (the last window partial).
    assert _max_train_steps(config, 18, num_processes=2) == 4
    assert _max_train_steps(SimpleNamespace(max_train_steps=7), None, 1) == 7


def test_the_held_out_part_of_train_is_capped_by_max_eval_samples():
    train = datasets.Dataset.from_dict({"image": list(range(20))})
    config = SimpleNamespace(max_eval_samples=3, eval_fraction=0.5, seed=0)
    kept, held_out = hold_out(train, config)
    assert (len(kept), len(held_out)) == (17, 3)
    kept, held_out = hold_out(train, SimpleNamespace(max_eval_samples=None, eval_fraction=0.1, seed=0))
    assert (len(kept), len(held_out)) == (18, 2)
    assert sorted(list(kept["image"]) + list(held_out["image"])) == list(range(20))


def test_the_token_cache_keeps_each_label_with_its_image_when_one_is_unreadable():
    encoder = ImageEncoder(ImageTransform(resolution=4, num_channels=1), None, "image", "label")
    images = [np.full((4, 4), 10 * i, dtype=np.uint8) for i in range(3)]
    batch = {"image": [images[0], {"bytes": b"not an image", "path": None}, images[2]], "label": [5, 6, 7]}
    encoded = encoder(batch)
    assert encoded["labels"] == [5, 7]
    assert np.allclose(encoded["pixel_values"][1], 20 / 127.5 - 1)


def test_integer_labels_name_every_class_up_to_the_largest():
    train = datasets.Dataset.from_dict({"label": [0, 2, 2]})
    _, _, id2label = encode_labels(train, None, "label")
    assert id2label == {0: "0", 1: "1", 2: "2"}
    strings = datasets.Dataset.from_dict({"label": ["cat", "dog", "cat"]})
    encoded, _, id2label = encode_labels(strings, None, "label")
    assert id2label == {0: "cat", 1: "dog"} and encoded["label"] == [0, 1, 0]


def test_metrics_json_writes_null_for_what_could_not_be_measured(tmp_path):
    written = write_metrics(tmp_path / "metrics.json", {"psnr": float("nan"), "fid": float("inf"), "steps": 3})
    assert written == {"psnr": None, "fid": None, "steps": 3}
    assert json.loads((tmp_path / "metrics.json").read_text()) == written
