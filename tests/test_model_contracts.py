"""The transformers contracts of the tokenizer and the token-ViT: attention implementations that are what the
config says and give the same outputs, hidden states of every stage, and per-position features first."""

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import transformers

from hf_vq import TokenViTConfig, TokenViTForImageClassification, VQGANConfig, VQGANModel

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY_VIT = dict(
    codebook_size=32,
    grid_size=[8, 8],
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    num_labels=3,
)


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("vqgan")
    # vqgan_tiny.yaml has attention at the 8x8 level and in the mid block: both go through the attention interface.
    VQGANModel(VQGANConfig.from_yaml(CONFIGS / "vqgan_tiny.yaml")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("token_vit")
    TokenViTForImageClassification(TokenViTConfig(**TINY_VIT)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "loader",
    [lambda f, **k: VQGANModel.from_pretrained(f, **k), lambda f, **k: transformers.AutoModel.from_pretrained(f, **k)],
)
def test_tokenizer_sdpa_and_eager_are_both_accepted_truthful_and_equal(tokenizer_folder, loader):
    pixel_values = torch.rand(2, 3, 16, 16) * 2 - 1
    outputs = {}
    for implementation in ("sdpa", "eager"):
        model = loader(tokenizer_folder, attn_implementation=implementation).eval()
        assert model.config._attn_implementation == implementation
        with torch.no_grad():
            outputs[implementation] = model(pixel_values)
    assert VQGANModel.from_pretrained(tokenizer_folder).config._attn_implementation == "sdpa", "the default"
    torch.testing.assert_close(outputs["sdpa"].reconstruction, outputs["eager"].reconstruction, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outputs["sdpa"].latents, outputs["eager"].latents, rtol=1e-4, atol=1e-5)


def test_tokenizer_eager_kernel_is_really_used(tokenizer_folder, monkeypatch):
    """Switching the implementation switches the kernel (not only the config's word for it)."""
    from hf_vq.models.vqgan import modeling_vqgan

    calls = []
    original = modeling_vqgan.eager_attention_forward
    monkeypatch.setattr(
        modeling_vqgan, "eager_attention_forward", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    model = VQGANModel.from_pretrained(tokenizer_folder).eval()
    model(torch.zeros(1, 3, 16, 16))
    assert calls == []
    model.set_attn_implementation("eager")
    model(torch.zeros(1, 3, 16, 16))
    blocks = [m for m in model.modules() if isinstance(m, modeling_vqgan.VQGANAttentionBlock)]
    assert len(blocks) >= 4 and len(calls) == len(blocks)


def test_tokenizer_hidden_states_of_encoder_and_decoder_stages(tokenizer_folder):
    model = VQGANModel.from_pretrained(tokenizer_folder).eval()
    pixel_values = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        output = model(pixel_values, output_hidden_states=True)
        plain = model(pixel_values)
    # conv_in, each of the 2 levels, the mid block: channels [16, 32], downsampled once.
    assert [tuple(h.shape) for h in output.encoder_hidden_states] == [
        (2, 16, 16, 16),
        (2, 16, 8, 8),
        (2, 32, 8, 8),
        (2, 32, 8, 8),
    ]
    assert [tuple(h.shape) for h in output.decoder_hidden_states] == [
        (2, 32, 8, 8),
        (2, 32, 8, 8),
        (2, 32, 16, 16),
        (2, 16, 16, 16),
    ]
    assert plain.encoder_hidden_states is None and plain.decoder_hidden_states is None
    assert torch.equal(output.reconstruction, plain.reconstruction)
    assert isinstance(output.encoder_hidden_states, tuple)
    with torch.no_grad():
        assert len(model.encode(pixel_values, output_hidden_states=True).hidden_states) == 4
        assert len(model.decode(image_tokens=plain.image_tokens, output_hidden_states=True).hidden_states) == 4
    model.config.output_hidden_states = True  # the config default, as in transformers
    with torch.no_grad():
        assert model(pixel_values).encoder_hidden_states is not None


def test_tokenizer_features_come_first_for_image_feature_extraction(tokenizer_folder):
    model = VQGANModel.from_pretrained(tokenizer_folder).eval()
    pixel_values = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        output = model(pixel_values)
    assert list(output.keys())[0] == "last_hidden_state" and output[0] is output.last_hidden_state
    assert torch.equal(output.last_hidden_state, output.quantized.flatten(2).transpose(1, 2))
    assert output.last_hidden_state.shape == (1, 64, model.config.embed_dim)
    extractor = transformers.pipeline("image-feature-extraction", model=str(tokenizer_folder), trust_remote_code=True)
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    features = extractor(image, return_tensors=True)
    processor = transformers.AutoImageProcessor.from_pretrained(tokenizer_folder)
    with torch.no_grad():
        expected = model(processor(images=image, return_tensors="pt")["pixel_values"]).last_hidden_state
    torch.testing.assert_close(features, expected)
    assert np.asarray(extractor(image)).shape == (1, 64, model.config.embed_dim)


def test_classifier_sdpa_and_eager_are_both_accepted_truthful_and_equal(classifier_folder):
    tokens = torch.randint(0, 32, (3, 8, 8))
    logits = {}
    for implementation in ("sdpa", "eager"):
        model = transformers.AutoModelForImageClassification.from_pretrained(
            classifier_folder, attn_implementation=implementation
        ).eval()
        assert model.config._attn_implementation == implementation
        with torch.no_grad():
            logits[implementation] = model(image_tokens=tokens).logits
    torch.testing.assert_close(logits["sdpa"], logits["eager"], rtol=1e-4, atol=1e-5)


def test_classifier_hidden_states_and_attentions(classifier_folder):
    model = TokenViTForImageClassification.from_pretrained(classifier_folder, attn_implementation="eager").eval()
    tokens = torch.randint(0, 32, (2, 8, 8))
    with torch.no_grad():
        output = model(image_tokens=tokens, output_hidden_states=True, output_attentions=True)
    assert isinstance(output.hidden_states, tuple) and len(output.hidden_states) == 3  # embeddings + 2 layers
    assert all(h.shape == (2, 65, 32) for h in output.hidden_states)
    assert len(output.attentions) == 2 and output.attentions[0].shape == (2, 4, 65, 65)
    torch.testing.assert_close(output.attentions[0].sum(-1), torch.ones(2, 4, 65))
    # With the default sdpa kernel the call that asks for attentions runs eager, as transformers' models do.
    sdpa = TokenViTForImageClassification.from_pretrained(classifier_folder).eval()
    assert sdpa.config._attn_implementation == "sdpa"
    with torch.no_grad():
        sdpa_output = sdpa(image_tokens=tokens, output_attentions=True)
    assert sdpa.config._attn_implementation == "sdpa"
    for eager_weights, sdpa_weights in zip(output.attentions, sdpa_output.attentions, strict=True):
        torch.testing.assert_close(sdpa_weights, eager_weights)
    torch.testing.assert_close(sdpa_output.logits, output.logits)


@pytest.mark.parametrize(
    "config_class, fields, message",
    [
        (
            "VQGANConfig",
            {"layers_per_block": 10**6, "block_out_channels": [128, 256, 256, 512, 512], "norm_num_groups": 32},
            "layers_per_block and block_out_channels",
        ),
        (
            "TokenViTConfig",
            {"num_hidden_layers": 10**6, "hidden_size": 256, "num_attention_heads": 4},
            "num_hidden_layers, hidden_size and intermediate_size",
        ),
        (
            "MaskGITConfig",
            {"num_hidden_layers": 10**6, "hidden_size": 256, "num_attention_heads": 4},
            "num_hidden_layers, hidden_size and intermediate_size",
        ),
    ],
)
def test_a_config_whose_model_no_machine_holds_is_refused_before_allocating(config_class, fields, message, tmp_path):
    """A config.json with 10**6 layers loads in a second, with an error that says how big the model would be, instead
    of growing memory until the process is killed."""
    import json
    import time

    import hf_vq

    cls = getattr(hf_vq, config_class)
    small = cls().to_dict()
    (tmp_path / "config.json").write_text(json.dumps({**small, **fields}))
    start = time.perf_counter()
    with pytest.raises(Exception, match=rf"about \d\.\de\+\d+ parameters \([\d,]+ GiB in float32\).*{message}"):
        cls.from_pretrained(tmp_path)
    assert time.perf_counter() - start < 10
    depth = "layers_per_block" if "layers_per_block" in fields else "num_hidden_layers"
    cls(**{**small, **fields, depth: 2})  # the same widths at a sane depth are fine
