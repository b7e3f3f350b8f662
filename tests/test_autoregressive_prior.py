"""The autoregressive prior's training pieces (hf_vq/training/prior_autoregressive.py)."""

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM

from hf_vq import AutoregressivePipeline, VQGANModel
from hf_vq.training.prior_autoregressive import (NextTokenLoss, build_autoregressive_prior,
                                                 load_pretrained_autoregressive_prior, prior_sequences)

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
        "intermediate_size": 64}


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
    NextTokenLoss(prior.config, label_dropout=0.25)(recording_model, {"image_tokens": tokens,
                                                                      "labels": torch.ones(4000, dtype=torch.long)},
                                                    generator=generator)
    null_share = float((seen[-1] == 32 + 3).float().mean())
    assert abs(null_share - 0.25) < 0.03 and set(seen[-1].tolist()) == {33, 35}
    unconditional = NextTokenLoss(prior.config, label_dropout=None)
    unconditional(recording_model, {"image_tokens": tokens[:8]})
    assert seen[-1].tolist() == [35] * 8


def test_pretrained_prior_is_checked_against_the_tokenizer(prior, tokenizer, tmp_path):
    pipe = AutoregressivePipeline(vqgan=tokenizer, transformer=prior)
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = load_pretrained_autoregressive_prior(str(tmp_path / "pipe"), tokenizer)
    assert torch.equal(loaded.lm_head.weight, prior.lm_head.weight)
    other = VQGANModel(type(tokenizer.config)(**{**tokenizer.config.to_dict(), "codebook_size": 64}))
    with pytest.raises(ValueError, match="codebook_size=64 but"):
        load_pretrained_autoregressive_prior(str(tmp_path / "pipe"), other)
