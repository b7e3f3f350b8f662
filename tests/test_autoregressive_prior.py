"""The autoregressive prior's training pieces (hf_vq/training/prior_autoregressive.py)."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from hf_vq import AutoregressivePipeline, VQGANConfig, VQGANImageProcessor, VQGANModel
from hf_vq.training.args import ConfigError
from hf_vq.training.prior_command import resolve_prior_args, train_prior
from hf_vq.training.priors.autoregressive import (
    AutoregressivePrior,
    NextTokenLoss,
    build_autoregressive_prior,
    prior_sequences,
)

from training_helpers import CLASSES, REPO, one_thread, reset_accelerate

TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "intermediate_size": 64,
}


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return VQGANModel.from_pretrained(tokenizer_dir).eval()


@pytest.fixture
def prior(tokenizer, tokenizer_dir):
    torch.manual_seed(0)
    return build_autoregressive_prior(TINY, tokenizer, str(tokenizer_dir), {0: "a", 1: "b", 2: "c"})


def test_built_prior_records_the_tokenizer_and_classes(prior, tokenizer_dir):
    config = prior.config
    assert type(prior) is LlamaForCausalLM and config.hidden_size == 32
    assert (config.vocab_size, config.codebook_size, config.num_classes, list(config.grid_size)) == (36, 32, 3, [8, 8])
    assert config.tokenizer_name_or_path == str(tokenizer_dir) and config.id2label == {0: "a", 1: "b", 2: "c"}


def test_sequences_put_the_class_token_first_then_raster_order():
    tokens = torch.arange(6).reshape(1, 2, 3)
    assert prior_sequences(tokens, torch.tensor([2]), codebook_size=10).tolist() == [[12, 0, 1, 2, 3, 4, 5]]


def test_loss_is_cross_entropy_of_each_code_given_the_class_and_the_codes_before(prior):
    tokens = torch.randint(0, 32, (4, 8, 8), generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 1])
    loss, logs = NextTokenLoss(prior.config, label_dropout=0.0)(prior, {"image_tokens": tokens, "labels": labels})
    sequences = torch.cat([labels[:, None] + 32, tokens.reshape(4, 64)], dim=1)
    logits = prior(sequences).logits
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 36), sequences[:, 1:].reshape(-1))
    torch.testing.assert_close(loss, expected)
    assert 0 <= float(logs["next_token_accuracy"]) <= 1
    # Causality: the logits at a position do not depend on later tokens.
    changed = sequences.clone()
    changed[:, 40:] = (changed[:, 40:] + 1) % 32
    torch.testing.assert_close(prior(changed).logits[:, :40], logits[:, :40])


def test_label_dropout_rate_and_unconditional_sequences(prior):
    tokens = torch.zeros(4000, 1, 1, dtype=torch.long)
    seen = []

    def recording_model(input_ids, labels):
        seen.append(input_ids[:, 0].clone())
        return prior(input_ids=input_ids, labels=labels)

    generator = torch.Generator().manual_seed(0)
    NextTokenLoss(prior.config, label_dropout=0.25)(
        recording_model, {"image_tokens": tokens, "labels": torch.ones(4000, dtype=torch.long)}, generator=generator
    )
    null_share = float((seen[-1] == 32 + 3).float().mean())
    assert abs(null_share - 0.25) < 0.03 and set(seen[-1].tolist()) == {33, 35}
    unconditional = NextTokenLoss(prior.config, label_dropout=None)
    unconditional(recording_model, {"image_tokens": tokens[:8]})
    assert seen[-1].tolist() == [35] * 8


def test_pretrained_prior_is_checked_against_the_tokenizer(prior, tokenizer, tmp_path):
    pipe = AutoregressivePipeline(vqgan=tokenizer, transformer=prior)
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = AutoregressivePrior().load_model(str(tmp_path / "pipe"), tokenizer)
    assert torch.equal(loaded.lm_head.weight, prior.lm_head.weight)
    other = VQGANModel(type(tokenizer.config)(**{**tokenizer.config.to_dict(), "codebook_size": 64}))
    with pytest.raises(ValueError, match="codebook_size=64 but"):
        AutoregressivePrior().load_model(str(tmp_path / "pipe"), other)


# ------------------------------------------------------------------------------------------------ hf-vq train-prior

TINY_AUTOREGRESSIVE = str(REPO / "configs" / "autoregressive_tiny.yaml")


def _flags(tokenizer_dir, image_dir, tmp_path, name="prior", **overrides):
    return {
        "config": TINY_AUTOREGRESSIVE,
        "tokenizer_name_or_path": str(tokenizer_dir),
        "train_data_dir": str(image_dir),
        "output_dir": str(tmp_path / name),
        "cache_dir": str(tmp_path / "cache"),
        **overrides,
    }


def _train(flags):
    reset_accelerate()
    with one_thread():
        return train_prior(flags)


def test_train_prior_autoregressive_ends_in_a_pipeline_that_loads_and_generates(
    tokenizer_dir, labelled_image_dir, tmp_path
):
    result = _train(_flags(tokenizer_dir, labelled_image_dir, tmp_path, top_k=20))
    output_dir = tmp_path / "prior"
    index = json.loads((output_dir / "model_index.json").read_text())
    assert index["transformer"] == ["transformers", "LlamaForCausalLM"] and "scheduler" not in index
    metrics = result["metrics"]
    assert metrics["global_step"] == 4 and metrics["num_classes"] == 3 and metrics["eval_images"] == 8
    assert 0 < metrics["generated_usage"] <= 1 and metrics["val_loss"] > 0
    assert metrics["diversity_ratio"] >= 0 and "val_next_token_accuracy" in metrics
    prior = AutoModelForCausalLM.from_pretrained(output_dir / "transformer")  # no remote code at all
    assert type(prior) is LlamaForCausalLM and prior.config.id2label == {0: CLASSES[0], 1: CLASSES[1], 2: CLASSES[2]}
    pipe = AutoregressivePipeline.from_pretrained(output_dir)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        class_labels=pipe.get_label_ids([CLASSES[2]]),
        guidance_scale=2.0,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    )
    assert out.image_tokens.shape == (1, 8, 8) and int(out.image_tokens.max()) < 32


@pytest.mark.parametrize(
    "override, message",
    [
        ({"prior_type": "autoregresive"}, "did you mean 'autoregressive'"),
        (
            {"prior_type": "maskgit", "config": str(REPO / "configs" / "maskgit_tiny.yaml"), "top_k": 5},
            "--top_k and --top_p sample the autoregressive prior",
        ),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": 0}, "top_k"),
    ],
)
def test_flags_that_cannot_work_are_refused(override, message, tokenizer_dir, labelled_image_dir, tmp_path):
    with pytest.raises(ConfigError, match=message):
        resolve_prior_args(_flags(tokenizer_dir, labelled_image_dir, tmp_path, **override))


def test_grouped_tokenizers_are_not_supported_yet(labelled_image_dir, tmp_path):
    config = VQGANConfig.from_yaml(REPO / "configs" / "vqgan_tiny.yaml")
    grouped = VQGANModel(VQGANConfig(**{**config.to_dict(), "quantizer_type": "grouped", "num_groups": 2}))
    grouped.save_pretrained(tmp_path / "grouped")
    VQGANImageProcessor.from_model_config(grouped.config).save_pretrained(tmp_path / "grouped")
    with pytest.raises(ValueError, match="does not support grouped tokenizers"):
        _train(_flags(tmp_path / "grouped", labelled_image_dir, tmp_path))


def test_prior_runs_log_sample_grids_to_the_trackers(tokenizer_dir, labelled_image_dir, tmp_path):
    """As the tokenizer's runs do: a grid at each validation and the final samples.png (the JSON-lines tracker
    records their paths; tensorboard and wandb get the images)."""
    _train(_flags(tokenizer_dir, labelled_image_dir, tmp_path, validation_steps=2, num_eval_images=0))
    log = [json.loads(line) for line in (tmp_path / "prior" / "logs" / "train_log.jsonl").read_text().splitlines()]
    grids = {entry["step"]: entry["samples_image"] for entry in log if "samples_image" in entry}
    assert set(grids) == {2, 4} and grids[2].endswith("samples-2.png") and grids[4].endswith("samples.png")
    assert all(Path(path).is_file() for path in grids.values())


def test_prior_runs_put_their_sample_grids_in_tensorboard(tokenizer_dir, labelled_image_dir, tmp_path):
    """Issue 24 names TensorBoard: the images themselves reach it (the JSON-lines test above sees only paths)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    flags = _flags(tokenizer_dir, labelled_image_dir, tmp_path, validation_steps=2, num_eval_images=0)
    _train(flags | {"report_to": "tensorboard", "logging_dir": str(tmp_path / "tb")})
    accumulators = [EventAccumulator(str(path.parent)).Reload() for path in (tmp_path / "tb").rglob("events.out.*")]
    image_steps = sorted(
        event.step
        for accumulator in accumulators
        for tag in accumulator.Tags()["images"]
        for event in accumulator.Images(tag)
    )
    assert image_steps == [2, 4]  # the grid of the validation at step 2 and the final samples.png
