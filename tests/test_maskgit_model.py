"""The MaskGIT prior: config, forward and loss, the masking helper, save/load, tokenizer checks; and its scheduler."""

import math

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassClassValidationError
from safetensors.torch import load_file, save_file

from hf_vq import MaskGITConfig, MaskGITModel, MaskGITScheduler, VQGANConfig, VQGANModel
from hf_vq.schedulers.scheduling_maskgit import mask_tokens

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def tiny_prior(**overrides) -> MaskGITModel:
    config = MaskGITConfig(
        **{"codebook_size": 32, "grid_height": 8, "grid_width": 8, "num_classes": 10, **TINY, **overrides}
    )
    return MaskGITModel(config).eval()


# ------------------------------------------------------------------------------------------- config and model


def test_config_properties_and_validation():
    config = MaskGITConfig(codebook_size=32, grid_height=4, grid_width=6, num_classes=10, **TINY)
    assert (config.mask_token_id, config.vocab_size, config.null_class_id, config.num_positions) == (32, 33, 10, 24)
    with pytest.raises(StrictDataclassClassValidationError, match="num_attention_heads=3 must divide hidden_size=32"):
        MaskGITConfig(**{**TINY, "num_attention_heads": 3})
    with pytest.raises(StrictDataclassClassValidationError, match="num_classes must be >= 0"):
        MaskGITConfig(num_classes=-1)
    with pytest.raises(StrictDataclassClassValidationError, match="grid_height must be a positive integer"):
        MaskGITConfig(grid_height=0)


def test_forward_shapes_and_embedding_sizes():
    model = tiny_prior()
    assert model.embeddings.token_embedding.num_embeddings == 33  # codes + mask id
    assert model.embeddings.class_embedding.num_embeddings == 11  # classes + null label
    tokens = torch.randint(0, 33, (3, 8, 8))
    logits = model(tokens, class_labels=torch.tensor([0, 9, 10])).logits
    assert logits.shape == (3, 64, 32)  # over the codes only, never the mask id
    torch.testing.assert_close(model(tokens.reshape(3, 64), class_labels=torch.tensor([0, 9, 10])).logits, logits)
    # None is the null label; the label matters.
    torch.testing.assert_close(model(tokens).logits, model(tokens, class_labels=torch.full((3,), 10)).logits)
    assert not torch.allclose(model(tokens, class_labels=torch.tensor([0, 0, 0])).logits, model(tokens).logits)


def test_loss_is_taken_on_masked_positions_only():
    model = tiny_prior()
    tokens = torch.randint(0, 32, (4, 8, 8))
    inputs, labels = mask_tokens(tokens, 32, generator=torch.Generator().manual_seed(1))
    output = model(inputs, class_labels=torch.tensor([1, 2, 3, 4]), labels=labels)
    masked = (inputs == 32).reshape(4, 64)
    expected = F.cross_entropy(output.logits[masked], tokens.reshape(4, 64)[masked])
    torch.testing.assert_close(output.loss, expected)
    # Labels at unmasked positions are ignored: no gradient reaches their logits.
    logits = output.logits.detach().requires_grad_(True)
    F.cross_entropy(logits.flatten(0, 1), labels.reshape(-1), ignore_index=-100).backward()
    assert logits.grad[~masked].abs().max() == 0 and logits.grad[masked].abs().max() > 0


def test_mask_tokens_follows_the_cosine_ratio():
    tokens = torch.randint(0, 32, (4000, 64))
    inputs, labels = mask_tokens(tokens, 32, generator=torch.Generator().manual_seed(0))
    masked = inputs == 32
    assert torch.equal(masked, labels != -100) and torch.equal(labels[masked], tokens[masked])
    assert torch.equal(inputs[~masked], tokens[~masked])
    assert masked.sum(dim=1).min() >= 1
    # E[cos(pi/2 u)] = 2/pi for u ~ U(0, 1]; ceil() adds about half a token of 64.
    assert abs(masked.float().mean().item() - (2 / math.pi + 0.5 / 64)) < 0.015
    again, _ = mask_tokens(tokens, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, inputs)


def test_bad_inputs_get_clear_errors():
    model = tiny_prior()
    with pytest.raises(ValueError, match=r"expects \(batch, 8, 8\) or \(batch, 64\)"):
        model(torch.zeros(2, 7, 7, dtype=torch.long))
    with pytest.raises(ValueError, match=r"code ids in \[0, 31\] or the mask id 32"):
        model(torch.full((2, 64), 33))
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(2, 64))
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 9\]"):
        model(torch.zeros(2, 64, dtype=torch.long), class_labels=torch.tensor([0, 11]))
    with pytest.raises(ValueError, match="unconditional prior"):
        tiny_prior(num_classes=0)(torch.zeros(2, 64, dtype=torch.long), class_labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels must be code ids"):
        model(torch.zeros(1, 64, dtype=torch.long), labels=torch.full((1, 64), 32))


def test_save_load_round_trip_and_init_of_missing_tensors(tmp_path):
    model = tiny_prior()
    model.save_pretrained(tmp_path / "prior")
    assert (tmp_path / "prior" / "modeling_maskgit.py").is_file()  # remote code travels
    loaded = MaskGITModel.from_pretrained(tmp_path / "prior")
    assert {k: v for k, v in loaded.config.to_dict().items() if k != "_name_or_path"} == {
        k: v for k, v in model.config.to_dict().items() if k != "_name_or_path"
    }
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    weights = tmp_path / "prior" / "model.safetensors"
    state = load_file(weights)
    del state["embeddings.position_embedding"], state["head.weight"]
    save_file(state, weights, metadata={"format": "pt"})
    partial = MaskGITModel.from_pretrained(tmp_path / "prior")
    for name in ("embeddings.position_embedding", "head.weight"):
        tensor = partial.state_dict()[name]
        assert torch.isfinite(tensor).all() and 0.01 < tensor.std().item() < 0.03, name  # trunc_normal(std=0.02)
    assert torch.equal(partial.embeddings.token_embedding.weight, model.embeddings.token_embedding.weight)


def test_from_tokenizer_and_mismatch_errors(tokenizer_dir):
    prior = MaskGITModel.from_tokenizer(str(tokenizer_dir), num_classes=10, **TINY)
    config = prior.config
    assert (config.codebook_size, config.grid_height, config.grid_width) == (32, 8, 8)
    assert config.tokenizer_name_or_path == str(tokenizer_dir)
    tokenizer = VQGANModel.from_pretrained(tokenizer_dir)
    prior.check_tokenizer(tokenizer)
    with pytest.raises(ValueError, match="codebook_size=32 but .* codebook_size=64"):
        tiny_prior(codebook_size=64).check_tokenizer(tokenizer)
    with pytest.raises(ValueError, match="8x8 token grid .* 4x4 grids"):
        tiny_prior(grid_height=4, grid_width=4).check_tokenizer(tokenizer)
    grouped = VQGANConfig(**{**tokenizer.config.to_dict(), "quantizer_type": "grouped", "num_groups": 2})
    with pytest.raises(ValueError, match="not supported yet for grouped or residual"):
        prior.check_tokenizer(grouped)
    with pytest.raises(ValueError, match="not supported yet"):
        MaskGITConfig.from_tokenizer_config(grouped)


# ------------------------------------------------------------------------------------------- scheduler


def run_scheduler(steps: int, seed: int, batch: int = 3, length: int = 64, codes: int = 32, temperature: float = 1.0):
    """Decode with random logits; the sample after every step."""
    scheduler = MaskGITScheduler(mask_token_id=codes)
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    sample = torch.full((batch, length), codes)
    history = []
    for timestep in scheduler.timesteps:
        logits = torch.randn(batch, length, codes, generator=generator) * 3
        sample = scheduler.step(logits, timestep, sample, temperature=temperature, generator=generator).prev_sample
        history.append(sample)
    return history


def test_scheduler_masks_follow_the_cosine_schedule_and_end_unmasked():
    history = run_scheduler(steps=12, seed=0)
    for step, sample in enumerate(history[:-1]):
        expected = math.floor(64 * math.cos(math.pi / 2 * (step + 1) / 12))
        assert (sample == 32).sum(dim=1).tolist() == [expected] * 3, step
    assert (history[-1] != 32).all() and history[-1].max() < 32


def test_scheduler_never_changes_a_fixed_token():
    history = run_scheduler(steps=8, seed=1)
    for before, after in zip(history, history[1:]):
        fixed = before != 32
        assert torch.equal(after[fixed], before[fixed])


def test_scheduler_is_deterministic_under_a_seed():
    assert all(torch.equal(a, b) for a, b in zip(run_scheduler(6, seed=3), run_scheduler(6, seed=3)))
    assert not torch.equal(run_scheduler(6, seed=3)[-1], run_scheduler(6, seed=4)[-1])


def test_scheduler_fixes_the_most_confident_tokens_without_noise():
    scheduler = MaskGITScheduler(mask_token_id=8)
    scheduler.set_timesteps(2)
    logits = torch.zeros(1, 16, 8)
    logits[0, :4, 5] = 20.0  # four positions are sure of code 5, the others undecided
    sample = scheduler.step(logits, scheduler.timesteps[0], torch.full((1, 16), 8), temperature=0.0).prev_sample
    # cos(pi/4) * 16 = 11.3: 11 stay masked, the 5 fixed ones include the 4 confident positions.
    assert (sample == 8).sum() == 11 and torch.equal(sample[0, :4], torch.full((4,), 5))


def test_scheduler_with_more_steps_than_tokens_still_unmasks_everything():
    history = run_scheduler(steps=10, seed=0, length=4)
    counts = [int((s == 32).sum(dim=1).max()) for s in history]
    assert counts == sorted(counts, reverse=True) and counts[-1] == 0 and min(counts[:-1]) >= 1


def test_scheduler_bad_inputs():
    scheduler = MaskGITScheduler(mask_token_id=32)
    with pytest.raises(ValueError, match="set_timesteps"):
        scheduler.step(torch.zeros(1, 4, 32), 0, torch.full((1, 4), 32))
    with pytest.raises(ValueError, match="num_inference_steps must be an integer >= 1"):
        scheduler.set_timesteps(0)
    scheduler.set_timesteps(4)
    with pytest.raises(ValueError, match="model_output must be logits"):
        scheduler.step(torch.zeros(1, 5, 32), 3, torch.full((1, 4), 32))
    with pytest.raises(ValueError, match="timestep 7 is not one of"):
        scheduler.step(torch.zeros(1, 4, 32), 7, torch.full((1, 4), 32))
    with pytest.raises(ValueError, match="mask_token_id must be a positive integer"):
        MaskGITScheduler(mask_token_id=0)


def test_scheduler_config_round_trip(tmp_path):
    MaskGITScheduler(mask_token_id=512).save_pretrained(tmp_path)
    assert MaskGITScheduler.from_pretrained(tmp_path).config.mask_token_id == 512
