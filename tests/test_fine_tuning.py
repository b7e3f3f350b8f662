"""Fine-tuning a pretrained tokenizer (`hf-vq train-tokenizer --pretrained_model_name_or_path`): step 0 is the
pretrained model exactly (affine codes start at the identity, the codebook is kept), training then moves it, a
resumed fine-tuning run is exact, and what cannot work is refused in one line."""

import json
import shutil

import pytest
import torch

from hf_vq import VQGANConfig, VQGANModel
from hf_vq.errors import ConfigError, HfVqUserError
from hf_vq.models.vqgan import VQGANImageProcessor
from hf_vq.training.fine_tuning import PretrainedModelError
from hf_vq.training.tokenizer_loop import build_model_and_processor

from training_helpers import (
    TINY_CONFIG,
    assert_same_weights,
    train,
    train_and_resume_from_step_2,
    training_args,
    write_images,
)

# A pretrained tokenizer trained with plain straight-through (the kind a converter gives): the fine-tuning run
# brings the paper's quantizer options.
PLAIN_QUANTIZER = dict(affine=None, sync_nu=0.0, alternating=False, replace_freq=0, kmeans_init=False)
PAPER_OPTIONS = {"affine": "learned", "affine_lr": 2.0, "sync_nu": 0.2, "alternating": True, "beta": 0.9}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("data") / "images", count=16, size=16)


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    """A saved tiny tokenizer without affine codes, whose codebook is not the standard normal one of a fresh model."""
    torch.manual_seed(1)
    model = VQGANModel(VQGANConfig.from_yaml(TINY_CONFIG, **PLAIN_QUANTIZER)).eval()
    with torch.no_grad():
        model.quantize.embedding.weight.mul_(0.5).add_(0.1)
    folder = tmp_path_factory.mktemp("pretrained")
    model.save_pretrained(folder, image_processor=VQGANImageProcessor.from_model_config(model.config))
    return folder


def _pixels(seed: int = 0) -> torch.Tensor:
    return torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@torch.no_grad()
def _outputs(model: VQGANModel, pixel_values: torch.Tensor):
    was_training = model.training
    model.eval()
    output = model(pixel_values)
    model.train(was_training)
    return output.image_tokens, output.reconstruction


def _fine_tune_config(tmp_path, pretrained_dir, image_folder, **flags):
    """What `hf-vq train-tokenizer --pretrained_model_name_or_path DIR` with a model: section of `model_config`
    gives (no --config: the model: section is the fine-tuning options only)."""
    from hf_vq.training.tokenizer_command import resolve_tokenizer_args

    given = dict(
        pretrained_model_name_or_path=str(pretrained_dir),
        train_data_dir=str(image_folder),
        output_dir=str(tmp_path / "run"),
        progress_bar=False,
        train_batch_size=4,
        max_train_steps=2,
        checkpointing_steps=0,
        eval_batch_size=8,
        max_eval_samples=4,
        **flags,
    )
    return resolve_tokenizer_args(given)


@pytest.mark.parametrize(
    "options",
    [
        PAPER_OPTIONS,
        {"affine": "running", "affine_momentum": 0.05},
        {"affine": "linear"},
        {"codebook_update": "ema", "ema_decay": 0.9},
        {"affine": "learned", "affine_groups": 4, "gradient_estimator": "rotation"},
    ],
    ids=["learned", "running", "simvq", "ema", "grouped-affine"],
)
def test_step_0_gives_the_pretrained_ids_and_reconstructions(options, pretrained_dir, image_folder, tmp_path):
    source = VQGANModel.from_pretrained(pretrained_dir).eval()
    config = _fine_tune_config(tmp_path, pretrained_dir, image_folder, model_config=dict(options))
    model, _ = build_model_and_processor(config)
    assert model.training and all(model.config.to_dict()[name] == value for name, value in options.items())
    pixel_values = _pixels()
    tokens, reconstruction = _outputs(model, pixel_values)
    source_tokens, source_reconstruction = _outputs(source, pixel_values)
    assert torch.equal(tokens, source_tokens)
    assert torch.equal(reconstruction, source_reconstruction)
    assert torch.equal(model.quantize.embedding.weight, source.quantize.embedding.weight)
    assert bool(model.quantize.initialized)  # no k-means over the pretrained codebook


def test_affine_codes_start_as_the_identity(pretrained_dir, image_folder, tmp_path):
    learned, _ = build_model_and_processor(
        _fine_tune_config(tmp_path, pretrained_dir, image_folder, model_config=dict(PAPER_OPTIONS))
    )
    affine = learned.quantize.embedding.affine
    scale, shift = affine.scale_and_shift(learned.quantize.embedding.weight)
    assert torch.equal(scale, torch.ones_like(scale)) and torch.equal(shift, torch.zeros_like(shift))
    running, _ = build_model_and_processor(
        _fine_tune_config(tmp_path, pretrained_dir, image_folder, model_config={"affine": "running"})
    )
    affine = running.quantize.embedding.affine
    scale, shift = affine.scale_and_shift(running.quantize.embedding.weight)
    assert torch.equal(scale, torch.ones_like(scale)) and torch.equal(shift, torch.zeros_like(shift))
    assert int(affine.num_updates) == 1  # the first batch is folded in with the momentum, not put in their place


def test_a_trained_affine_source_keeps_its_codes_under_another_parameterisation(image_folder, tmp_path):
    """A source whose learned affine transform is far from the identity: a run with running statistics instead
    folds the transform into the codes (same effective codebook), a run with the same options keeps it."""
    model = VQGANModel(VQGANConfig.from_yaml(TINY_CONFIG, kmeans_init=False)).eval()
    with torch.no_grad():
        model.quantize.embedding.affine.scale.normal_()
        model.quantize.embedding.affine.shift.normal_()
    model.save_pretrained(tmp_path / "affine_source")
    pixel_values = _pixels(1)
    expected = _outputs(model, pixel_values)
    for options in ({"affine": "running"}, {"affine": "learned"}):
        config = _fine_tune_config(tmp_path, tmp_path / "affine_source", image_folder, model_config=options)
        fine_tuned, _ = build_model_and_processor(config)
        assert all(torch.equal(a, b) for a, b in zip(_outputs(fine_tuned, pixel_values), expected)), options
    assert torch.equal(fine_tuned.quantize.embedding.affine.scale, model.quantize.embedding.affine.scale)


def test_training_moves_the_ids_and_the_folder_records_the_options(pretrained_dir, image_folder, tmp_path):
    output_dir = tmp_path / "fine_tuned"
    result = train(
        output_dir,
        pretrained_model_name_or_path=str(pretrained_dir),
        train_data_dir=str(image_folder),
        max_train_steps=4,
        learning_rate=1e-2,
        discriminator_weight=0.0,
        eval_steps=0,
    )
    assert result["global_step"] == 4
    source = VQGANModel.from_pretrained(pretrained_dir)
    saved = VQGANModel.from_pretrained(output_dir)
    pixel_values = _pixels(2)
    assert not torch.equal(_outputs(saved, pixel_values)[0], _outputs(source, pixel_values)[0])
    # The architecture is the pretrained one; the quantizer options are the config's (configs/vqgan_tiny.yaml's).
    tiny = VQGANConfig.from_yaml(TINY_CONFIG)
    assert saved.config.affine == tiny.affine == "learned" and saved.config.sync_nu == tiny.sync_nu
    assert saved.config.block_out_channels == source.config.block_out_channels
    recorded = json.loads((output_dir / "training_config.json").read_text())
    assert recorded["pretrained_model_name_or_path"] == str(pretrained_dir)


def test_a_resumed_fine_tuning_run_matches_an_uninterrupted_one(pretrained_dir, image_folder, tmp_path):
    uninterrupted, resumed = train_and_resume_from_step_2(
        tmp_path, pretrained_model_name_or_path=str(pretrained_dir), train_data_dir=str(image_folder)
    )
    assert_same_weights(uninterrupted, resumed)


def test_reinitialize_codebook_runs_kmeans_on_the_first_batch(pretrained_dir, image_folder, tmp_path):
    config = _fine_tune_config(tmp_path, pretrained_dir, image_folder, reinitialize_codebook=True)
    model, _ = build_model_and_processor(config)
    assert not bool(model.quantize.initialized) and model.config.kmeans_init
    before = model.quantize.codebook
    model.encode(_pixels())  # a training-mode forward: k-means++ over the encoder's vectors
    assert bool(model.quantize.initialized) and not torch.equal(model.quantize.codebook, before)
    with pytest.raises(ConfigError, match="--reinitialize_codebook re-initialises a pretrained codebook"):
        training_args(tmp_path, train_data_dir=str(image_folder), reinitialize_codebook=True)


@pytest.mark.parametrize(
    "section, message",
    [
        ({"codebook_size": 64}, r"codebook_size=64 \(the pretrained model's: 32\)"),
        ({"block_out_channels": [16, 16]}, r"block_out_channels=\[16, 16\] \(the pretrained model's: \[16, 32\]\)"),
        ({"kmeans_init": True}, "pass --reinitialize_codebook"),
        ({"codebook_update": "ema", "sync_nu": 0.3}, "codebook_update='ema' .* set affine=None"),
        ({"affine": "running", "affine_groups": 4}, "affine='running' with affine_groups=4 cannot start"),
    ],
)
def test_a_model_section_that_cannot_apply_is_refused(section, message, pretrained_dir, image_folder, tmp_path):
    config = _fine_tune_config(tmp_path, pretrained_dir, image_folder, model_config=section)
    with pytest.raises(ConfigError, match=message):
        build_model_and_processor(config)


@pytest.mark.parametrize("name", ["org/no-such-tokenizer", "{tmp}/missing", "{tmp}/not_a_model"])
def test_a_missing_pretrained_tokenizer_is_one_line(name, image_folder, tmp_path, capsys):
    from hf_vq.cli import main

    (tmp_path / "not_a_model").mkdir()
    name = name.format(tmp=tmp_path)
    argv = ["train-tokenizer", "--pretrained_model_name_or_path", name, "--train_data_dir", str(image_folder)]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--output_dir", str(tmp_path / "run")])
    assert exit_info.value.code in (1, 2)
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("hf-vq train-tokenizer: error: ")
    assert f"--pretrained_model_name_or_path {name!r}" in error


def test_a_folder_of_another_model_is_not_taken_for_a_tokenizer(tmp_path, image_folder):
    from hf_vq.models.token_vit import TokenViTConfig

    TokenViTConfig(codebook_size=32, grid_size=[8, 8], num_labels=3).save_pretrained(tmp_path / "classifier")
    config = _fine_tune_config(tmp_path, tmp_path / "classifier", image_folder)
    with pytest.raises(PretrainedModelError, match="holds a token_vit config, not an hf_vq tokenizer") as error:
        build_model_and_processor(config)
    assert isinstance(error.value, HfVqUserError)


def test_a_hub_source_is_the_cards_base_model(pretrained_dir, image_folder, tmp_path):
    """A Hub id (here found in a cache of huggingface_hub's layout, offline) is fine-tuned and named by the card."""
    from hf_vq.hub.model_card import render_model_card
    from hf_vq.hub.model_folder import load_model_folder

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--tiny-vqgan"
    shutil.copytree(pretrained_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    output_dir = tmp_path / "fine_tuned"
    train(
        output_dir,
        pretrained_model_name_or_path="org/tiny-vqgan",
        cache_dir=str(tmp_path / "hub"),
        train_data_dir=str(image_folder),
        max_train_steps=1,
        discriminator_weight=0.0,
        eval_steps=0,
    )
    source = VQGANModel.from_pretrained(pretrained_dir)
    assert VQGANModel.from_pretrained(output_dir).config.block_out_channels == source.config.block_out_channels
    card = render_model_card(load_model_folder(output_dir), "me/fine-tuned-vqgan")
    assert card.data.base_model == "org/tiny-vqgan"


def test_the_yaml_of_a_fine_tuning_run_may_hold_only_options(pretrained_dir, image_folder, tmp_path):
    config_file = tmp_path / "fine_tune.yaml"
    config_file.write_text("model:\n  affine: learned\n  sync_nu: 0.5\ntraining:\n  max_train_steps: 2\n")
    config = _fine_tune_config(tmp_path, pretrained_dir, image_folder, config=str(config_file))
    model, _ = build_model_and_processor(config)
    assert (model.config.affine, model.config.sync_nu, model.config.codebook_size) == ("learned", 0.5, 32)


@pytest.mark.parametrize(
    "quantizer", [{"quantizer_type": "grouped", "num_groups": 2}, {"quantizer_type": "residual", "num_quantizers": 2}]
)
def test_each_codebook_of_a_grouped_or_residual_source_starts_unchanged(quantizer, image_folder, tmp_path):
    source = VQGANModel(VQGANConfig.from_yaml(TINY_CONFIG, **PLAIN_QUANTIZER, **quantizer)).eval()
    source.save_pretrained(tmp_path / "source")
    config = _fine_tune_config(tmp_path, tmp_path / "source", image_folder, model_config=dict(PAPER_OPTIONS))
    model, _ = build_model_and_processor(config)
    pixel_values = _pixels(3)
    assert all(torch.equal(a, b) for a, b in zip(_outputs(model, pixel_values), _outputs(source, pixel_values)))
    assert model.config.quantizer_type == quantizer["quantizer_type"] and model.config.affine == "learned"


def test_a_codebook_starts_from_given_codes_at_the_identity():
    from hf_vq.quantization.codebook import Codebook

    codes = torch.randn(8, 4) * 3 + 1
    for affine in (None, "learned", "running", "linear"):
        codebook = Codebook(8, 4, affine=affine)
        codebook.start_from(codes)
        assert torch.equal(codebook.effective(), codes), affine
    with pytest.raises(ValueError, match=r"codes of shape \(8, 3\) for a codebook of \(8, 4\)"):
        Codebook(8, 4).start_from(torch.zeros(8, 3))


def test_the_pretrained_revision_is_also_read_from_the_older_revision_flag(pretrained_dir, image_folder):
    from hf_vq.training.tokenizer_command import parse_tokenizer_args

    base = ["--pretrained_model_name_or_path", str(pretrained_dir), "--train_data_dir", str(image_folder)]
    assert parse_tokenizer_args([*base, "--pretrained_revision", "v2"]).pretrained_revision == "v2"
    assert parse_tokenizer_args([*base, "--revision", "v1"]).pretrained_revision == "v1"
