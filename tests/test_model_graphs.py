"""The token ViT and the MaskGIT prior as transformers models: whole graphs under torch.compile and torch.export (no
value read in forward), attention through transformers' interface, token embeddings, main_input_name and the auto
classes, and the explicit checks that replace the value reads where forward cannot afford them."""

import os
import subprocess
import sys

import pytest
import torch
import transformers

from hf_vq import MaskGITConfig, MaskGITModel, TokenViTConfig, TokenViTForImageClassification
from hf_vq.models.token_vit.modeling_token_vit import values_are_cheap_to_read

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def tiny_classifier(**overrides) -> TokenViTForImageClassification:
    config = TokenViTConfig(**{"codebook_size": 32, "grid_size": [4, 4], "num_labels": 3, **TINY, **overrides})
    return TokenViTForImageClassification(config).eval()


def tiny_prior(**overrides) -> MaskGITModel:
    config = MaskGITConfig(
        **{"codebook_size": 32, "grid_height": 4, "grid_width": 4, "num_classes": 5, **TINY, **overrides}
    )
    return MaskGITModel(config).eval()


def test_classifier_exports_and_compiles_without_a_graph_break():
    model = tiny_classifier()
    tokens = torch.randint(0, 32, (2, 4, 4))
    with torch.no_grad():
        expected = model(image_tokens=tokens).logits
        exported = torch.export.export(model, (), {"image_tokens": tokens})
        torch.testing.assert_close(exported.module()(image_tokens=tokens).logits, expected)
        assert torch._dynamo.explain(model)(image_tokens=tokens, labels=torch.tensor([0, 2])).graph_break_count == 0
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(image_tokens=tokens).logits, expected)


def test_prior_exports_and_compiles_without_a_graph_break():
    model = tiny_prior()
    tokens, class_labels = torch.randint(0, 33, (2, 16)), torch.tensor([1, 5])
    labels = torch.where(tokens == 32, torch.randint(0, 32, (2, 16)), torch.full_like(tokens, -100))
    with torch.no_grad():
        expected = model(tokens, class_labels=class_labels, labels=labels)
        exported = torch.export.export(model, (tokens,), {"class_labels": class_labels, "labels": labels})
        torch.testing.assert_close(
            exported.module()(tokens, class_labels=class_labels, labels=labels).loss, expected.loss
        )
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(tokens, class_labels=class_labels, labels=labels).logits, expected.logits)


def test_prior_sdpa_and_eager_kernels_agree():
    model = tiny_prior()
    tokens, class_labels = torch.randint(0, 33, (2, 4, 4)), torch.tensor([0, 5])
    assert model.config._attn_implementation == "sdpa"
    with torch.no_grad():
        sdpa = model(tokens, class_labels=class_labels).logits
        model.set_attn_implementation("eager")
        eager = model(tokens, class_labels=class_labels).logits
    torch.testing.assert_close(sdpa, eager, rtol=1e-4, atol=1e-5)


def test_classifier_attentions_come_from_the_default_sdpa_model():
    model = tiny_classifier()
    tokens = torch.randint(0, 32, (2, 16))
    with torch.no_grad():
        output = model(image_tokens=tokens, output_attentions=True)
    assert model.config._attn_implementation == "sdpa"  # the eager kernel ran for that call only
    assert len(output.attentions) == 2 and output.attentions[0].shape == (2, 2, 17, 17)
    torch.testing.assert_close(output.attentions[0].sum(-1), torch.ones(2, 2, 17))


def test_value_checks_run_where_they_cost_no_sync_and_on_request():
    assert values_are_cheap_to_read(torch.zeros(1, dtype=torch.long))
    assert not values_are_cheap_to_read(torch.zeros(1, dtype=torch.long, device="meta"))  # as for cuda: no read
    classifier, prior = tiny_classifier(), tiny_prior()
    with pytest.raises(ValueError, match=r"must lie in \[0, 31\].*got values from 0 to 40"):
        classifier.check_image_tokens(torch.tensor([[40] + [0] * 15]))
    with pytest.raises(ValueError, match=r"\(1, 3\).*4x4 grid"):
        classifier.check_image_tokens(torch.zeros(1, 3, dtype=torch.long))
    classifier.check_image_tokens(torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"code ids in \[0, 31\] or the mask id 32"):
        prior.check_inputs(torch.full((1, 16), 33))
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 4\]"):
        prior.check_inputs(torch.zeros(1, 16, dtype=torch.long), class_labels=torch.tensor([7]))
    with pytest.raises(ValueError, match="labels must be code ids"):
        prior.check_inputs(torch.zeros(1, 16, dtype=torch.long), labels=torch.full((1, 16), 32))
    prior.check_inputs(
        torch.zeros(1, 16, dtype=torch.long), class_labels=torch.tensor([5]), labels=torch.full((1, 16), -100)
    )


def test_classifier_token_embeddings_resize_and_main_input_name():
    model = tiny_classifier(token_embedding_dim=8)
    assert model.main_input_name == "image_tokens" and model.config.vocab_size == 32
    assert model.get_input_embeddings() is model.embeddings.token_embedding
    model.resize_token_embeddings(40)
    assert model.config.codebook_size == 40 and model.get_input_embeddings().weight.shape == (40, 8)
    assert model(image_tokens=torch.full((1, 16), 39)).logits.shape == (1, 3)
    model.set_input_embeddings(torch.nn.Embedding(24, 8))
    assert model.config.codebook_size == 24
    with pytest.raises(ValueError, match=r"must lie in \[0, 23\]"):
        model(image_tokens=torch.full((1, 16), 30))


def test_prior_token_embeddings():
    model = tiny_prior()
    assert model.main_input_name == "image_tokens"
    assert model.get_input_embeddings() is model.embeddings.token_embedding
    replacement = torch.nn.Embedding(33, 32)
    model.set_input_embeddings(replacement)
    assert model.embeddings.token_embedding is replacement
    with pytest.raises(ValueError, match=r"codebook_size \+ 1 = 33 rows .* got 40; build a prior"):
        model.set_input_embeddings(torch.nn.Embedding(40, 32))
    with pytest.raises(ValueError, match=r"codebook_size \+ 1 = 33 rows .* got 50"):  # its head covers the codes
        model.resize_token_embeddings(50)


REMOTE_SCRIPT = """
import sys
sys.modules["hf_vq"] = None  # the folder must carry all of its code
import torch, transformers
model = transformers.AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
assert type(model).__name__ == "TokenViTForImageClassification" and model.main_input_name == "image_tokens"
with torch.no_grad():
    torch.save(model(image_tokens=torch.arange(16).reshape(1, 4, 4)).logits, sys.argv[2])
"""


def test_classifier_loads_through_auto_model_with_and_without_hf_vq(tmp_path):
    model = tiny_classifier()
    model.save_pretrained(tmp_path / "classifier")
    loaded = transformers.AutoModel.from_pretrained(tmp_path / "classifier").eval()
    assert type(loaded) is TokenViTForImageClassification
    with torch.no_grad():
        expected = model(image_tokens=torch.arange(16).reshape(1, 4, 4)).logits
        torch.testing.assert_close(loaded(image_tokens=torch.arange(16).reshape(1, 4, 4)).logits, expected)
    (tmp_path / "remote.py").write_text(REMOTE_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "remote.py", str(tmp_path / "classifier"), "out.pt"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected)
