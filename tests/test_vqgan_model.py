"""VQGANConfig and VQGANModel: config validation, initialisation, shapes for every shipped config, losses, bf16,
gradient checkpointing, bad inputs and the diffusers export."""

import copy
import os
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError
from safetensors.torch import load_file, save_file
from transformers.modeling_layers import GradientCheckpointingLayer

from hf_vq import VQGANConfig, VQGANModel
from hf_vq.quantization import LearnedAffine, RunningStatisticsAffine

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = ["vqgan_tiny", "vqgan_fashion_mnist", "vqgan_cifar10", "vqgan_imagenet256"]


def tiny_config(**overrides) -> VQGANConfig:
    return VQGANConfig.from_yaml(CONFIGS / "vqgan_tiny.yaml", **overrides)


def images(config: VQGANConfig, batch: int = 2, size: int | None = None) -> torch.Tensor:
    size = size or config.image_size
    return torch.rand(batch, config.num_channels, size, size) * 2 - 1


# ----------------------------------------------------------------------------------------------- config


def test_config_rejects_wrong_types_and_inconsistent_architectures():
    with pytest.raises(StrictDataclassFieldValidationError, match="codebook_size"):
        VQGANConfig(codebook_size=1.5)
    # The registry of quantizer methods (hf_vq.quantization.config.QUANTIZER_MODULES) checks the name.
    with pytest.raises(StrictDataclassClassValidationError, match="unknown quantizer_type 'product'; use one of"):
        VQGANConfig(quantizer_type="product")
    with pytest.raises(StrictDataclassClassValidationError, match="downsampling factor 16"):
        VQGANConfig(image_size=100)
    with pytest.raises(StrictDataclassClassValidationError, match="attention_resolutions"):
        VQGANConfig(attention_resolutions=[7])
    with pytest.raises(StrictDataclassClassValidationError, match="norm_num_groups"):
        VQGANConfig(norm_num_groups=24)
    with pytest.raises(StrictDataclassClassValidationError, match="beta"):
        VQGANConfig(beta=1.5)
    with pytest.raises(StrictDataclassClassValidationError, match="num_groups"):
        VQGANConfig(quantizer_type="grouped", num_groups=3, embed_dim=8)
    with pytest.raises(StrictDataclassClassValidationError, match="cosine"):
        VQGANConfig(quantizer_type="residual", num_quantizers=2, distance="cosine")
    with pytest.raises(StrictDataclassClassValidationError, match="affine_groups"):
        VQGANConfig(codebook_size=10, affine_groups=3)


def test_config_from_yaml_reads_model_section_and_rejects_bad_files(tmp_path):
    config = VQGANConfig.from_yaml(CONFIGS / "vqgan_fashion_mnist.yaml")
    assert (config.num_channels, config.image_size, config.downsampling_factor) == (1, 32, 4)
    assert VQGANConfig.from_yaml(CONFIGS / "vqgan_imagenet256.yaml").downsampling_factor == 16
    assert tiny_config(codebook_size=64).codebook_size == 64
    (tmp_path / "no_model.yaml").write_text("training: {lr: 1}\n")
    with pytest.raises(ValueError, match="model:"):
        VQGANConfig.from_yaml(tmp_path / "no_model.yaml")
    (tmp_path / "typo.yaml").write_text("model: {codebok_size: 4}\n")
    with pytest.raises(ValueError, match="codebok_size"):
        VQGANConfig.from_yaml(tmp_path / "typo.yaml")


def test_every_quantizer_option_reaches_the_quantizer():
    config = tiny_config(
        quantizer_type="grouped",
        num_groups=2,
        beta=0.8,
        sync_nu=0.5,
        affine="running",
        affine_momentum=0.3,
        affine_groups=4,
        alternating=True,
        alternating_step_size=0.25,
        kmeans_init=True,
        replace_freq=7,
        distance="cosine",
    )
    quantizer = VQGANModel(config).quantize
    assert quantizer.num_groups == 2 and quantizer.beta == 0.8 and quantizer.sync_nu == 0.5
    group = quantizer.groups[0]
    assert isinstance(group.embedding.affine, RunningStatisticsAffine)
    assert group.embedding.affine.momentum == 0.3 and group.embedding.affine.num_groups == 4
    assert (group.alternating, group.alternating_step_size, group.kmeans_init) == (True, 0.25, True)
    assert (group.replace_freq, group.distance, group.codebook_size) == (7, "cosine", 32)
    residual = VQGANModel(tiny_config(quantizer_type="residual", num_quantizers=3)).quantize
    assert len(residual.stages) == 3


# ----------------------------------------------------------------------------------------------- init


@pytest.mark.parametrize("affine", ["learned", "running"])
def test_missing_quantizer_tensors_are_initialised_on_load(tmp_path, affine):
    """Loading builds the model without init; every tensor the checkpoint lacks must go through _init_weights."""
    model = VQGANModel(tiny_config(affine=affine, kmeans_init=False))
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    save_file(
        {k: v for k, v in weights.items() if not k.startswith("quantize.")},
        tmp_path / "model.safetensors",
        metadata={"format": "pt"},
    )
    loaded = VQGANModel.from_pretrained(tmp_path)
    quantizer = loaded.quantize
    assert bool(quantizer.initialized) is True
    assert torch.equal(quantizer.steps_since_used, torch.zeros(32, dtype=torch.long))
    codes = quantizer.embedding.weight
    assert torch.isfinite(codes).all() and 0.7 < float(codes.detach().std()) < 1.3
    module = quantizer.embedding.affine
    if isinstance(module, LearnedAffine):
        assert torch.equal(module.scale, torch.zeros_like(module.scale))
        assert torch.equal(module.shift, torch.zeros_like(module.shift))
    else:
        assert torch.equal(module.running_mean, torch.zeros_like(module.running_mean))
        assert torch.equal(module.running_var, torch.ones_like(module.running_var))
        assert int(module.num_updates) == 0
    # The backbone tensors that were in the checkpoint are loaded, not re-initialised.
    assert torch.equal(loaded.encoder.conv_in.weight, model.encoder.conv_in.weight)


def test_kmeans_init_marks_codebook_uninitialised_until_first_training_batch():
    model = VQGANModel(tiny_config(kmeans_init=True))
    assert bool(model.quantize.initialized) is False
    model.train()(images(model.config))
    assert bool(model.quantize.initialized) is True


def test_init_weights_sets_norms_and_biases():
    model = VQGANModel(tiny_config())
    norm = model.encoder.down_blocks[0].resnets[0].norm1
    assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and torch.equal(
        norm.bias, torch.zeros_like(norm.bias)
    )
    conv = model.encoder.conv_in
    bound = 1 / conv.weight[0].numel() ** 0.5
    assert float(conv.bias.detach().abs().max()) <= bound and float(conv.weight.detach().std()) > 0


# ----------------------------------------------------------------------------------------------- shapes


def _shape_check(name: str, batch: int, size: int | None) -> None:
    config = VQGANConfig.from_yaml(CONFIGS / f"{name}.yaml")
    model = VQGANModel(config).eval()
    pixel_values = images(config, batch, size)
    side = pixel_values.shape[-1] // config.downsampling_factor
    with torch.no_grad():
        encoded = model.encode(pixel_values)
        assert encoded.image_tokens.shape == (batch, side, side)
        assert encoded.image_tokens.dtype == torch.long
        assert encoded.quantized.shape == (batch, config.embed_dim, side, side)
        assert int(encoded.image_tokens.max()) < config.codebook_size
        reconstruction = model.decode(image_tokens=encoded.image_tokens).reconstruction
    assert reconstruction.shape == pixel_values.shape
    assert torch.isfinite(reconstruction).all()


@pytest.mark.parametrize("name", SHIPPED)
def test_encode_decode_shapes_for_every_shipped_config(name):
    # The 256x256 config is convolutional: a 32x32 input checks its shapes fast (2x2 tokens); the full size is slow.
    _shape_check(name, batch=2 if name == "vqgan_tiny" else 1, size=32 if name == "vqgan_imagenet256" else None)


@pytest.mark.skipif(
    not os.environ.get("RUN_SLOW"), reason="full 256x256 forward of the f16 model takes ~10 s on CPU; set RUN_SLOW=1"
)
def test_imagenet256_config_at_full_size():
    _shape_check("vqgan_imagenet256", batch=1, size=256)


@pytest.mark.parametrize(
    "quantizer", [dict(quantizer_type="grouped", num_groups=2), dict(quantizer_type="residual", num_quantizers=3)]
)
def test_grouped_and_residual_tokens_have_a_trailing_axis(quantizer):
    model = VQGANModel(tiny_config(**quantizer)).eval()
    depth = quantizer.get("num_groups", quantizer.get("num_quantizers"))
    with torch.no_grad():
        encoded = model.encode(images(model.config))
        assert encoded.image_tokens.shape == (2, 8, 8, depth)
        torch.testing.assert_close(model.get_codebook_entry(encoded.image_tokens), encoded.quantized)
        flat = encoded.image_tokens.reshape(-1, depth)
        torch.testing.assert_close(model.get_codebook_entry(flat, shape=(2, 8, 8, 4)), encoded.quantized)


def test_get_codebook_entry_accepts_flat_ids_with_a_shape():
    model = VQGANModel(tiny_config()).eval()
    with torch.no_grad():
        encoded = model.encode(images(model.config))
    grid = model.get_codebook_entry(encoded.image_tokens)
    torch.testing.assert_close(grid, encoded.quantized)
    torch.testing.assert_close(model.get_codebook_entry(encoded.image_tokens.flatten(), shape=(2, 8, 8, 4)), grid)
    torch.testing.assert_close(model.get_codebook_entry(encoded.image_tokens.reshape(2, 64), shape=(2, 8, 8)), grid)


# ----------------------------------------------------------------------------------------------- forward


def test_forward_returns_every_loss_part_and_usage_metrics():
    model = VQGANModel(tiny_config(reconstruction_loss_type="mse", quantizer_loss_weight=0.5)).train()
    pixel_values = images(model.config)
    output = model(pixel_values)
    expected_reconstruction = torch.nn.functional.mse_loss(output.reconstruction, pixel_values)
    torch.testing.assert_close(output.reconstruction_loss, expected_reconstruction)
    torch.testing.assert_close(output.loss, output.reconstruction_loss + 0.5 * output.quantizer_loss)
    beta = model.config.beta
    torch.testing.assert_close(
        output.quantizer_loss, (1 - beta) * output.commitment_loss + beta * output.codebook_loss
    )
    # The two parts have equal values; their gradients tell them apart: (1 - beta) of the commitment part reaches
    # the encoder, beta of the codebook part reaches the codes.
    encoder_weight, codes = model.encoder.conv_in.weight, model.quantize.embedding.weight
    total = torch.autograd.grad(output.quantizer_loss, [encoder_weight, codes], retain_graph=True)
    commitment = torch.autograd.grad(output.commitment_loss, encoder_weight, retain_graph=True)[0]
    codebook = torch.autograd.grad(output.codebook_loss, codes, retain_graph=True)[0]
    torch.testing.assert_close(total[0], (1 - beta) * commitment)
    torch.testing.assert_close(total[1], beta * codebook)
    assert 1.0 <= float(output.perplexity) <= model.config.codebook_size
    assert 0.0 < float(output.usage) <= 1.0
    output.loss.backward()
    assert model.encoder.conv_in.weight.grad is not None and model.quantize.embedding.weight.grad is not None
    assert isinstance(model(pixel_values, return_dict=False), tuple)


def test_bf16_autocast_forward_on_cpu():
    model = VQGANModel(tiny_config()).eval()
    pixel_values = images(model.config)
    with torch.no_grad():
        reference = model(pixel_values)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = model(pixel_values)
    assert output.reconstruction.dtype == torch.bfloat16
    assert output.image_tokens.shape == reference.image_tokens.shape
    for name in ("loss", "quantizer_loss", "commitment_loss", "codebook_loss", "perplexity"):
        assert torch.isfinite(output[name]), name
    # bf16 convolutions move the latents a little; most positions still pick the same code.
    assert (output.image_tokens == reference.image_tokens).float().mean() > 0.5


def test_bf16_weights_keep_the_quantizer_in_float32(tmp_path):
    VQGANModel(tiny_config()).save_pretrained(tmp_path)
    model = VQGANModel.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert model.encoder.conv_in.weight.dtype == torch.bfloat16
    assert model.quantize.embedding.weight.dtype == torch.float32
    with torch.no_grad():
        output = model(images(model.config).bfloat16())
    assert output.reconstruction.dtype == torch.bfloat16 and torch.isfinite(output.loss)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = VQGANModel(tiny_config(alternating=False, replace_freq=0)).train()
    checkpointed = copy.deepcopy(model)
    checkpointed.activation_checkpointing_enable()
    layers = [m for m in checkpointed.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert len(layers) > 0 and all(layer.gradient_checkpointing for layer in layers)
    pixel_values = images(model.config)
    model(pixel_values).loss.backward()
    checkpointed(pixel_values).loss.backward()
    for (name, param), (_, other) in zip(model.named_parameters(), checkpointed.named_parameters()):
        torch.testing.assert_close(param.grad, other.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_input_embeddings_are_the_encoders_first_conv():
    """As transformers' pixel models return their patch embedding: the layer that `enable_input_require_grads`
    (PEFT on a frozen model with gradient checkpointing) hooks, and that `set_input_embeddings` replaces."""
    torch.manual_seed(0)
    model = VQGANModel(tiny_config()).eval().requires_grad_(False)
    assert model.get_input_embeddings() is model.encoder.conv_in
    model.enable_input_require_grads()
    first_map = model(images(model.config), output_hidden_states=True).hidden_states[0]
    assert first_map.requires_grad  # the hook on conv_in's output, although every weight is frozen

    replacement = copy.deepcopy(model.encoder.conv_in)
    replacement.weight.data.zero_()
    model.set_input_embeddings(replacement)
    assert model.get_input_embeddings() is replacement and model.encoder.conv_in is replacement
    first_map = model(images(model.config), output_hidden_states=True).hidden_states[0]
    torch.testing.assert_close(first_map, replacement.bias.view(1, -1, 1, 1).expand_as(first_map))


# ----------------------------------------------------------------------------------------------- bad inputs


def test_bad_model_inputs_raise_clear_errors():
    model = VQGANModel(tiny_config()).eval()
    with pytest.raises(ValueError, match="3-channel images"):
        model(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="not divisible by the downsampling factor 2"):
        model(torch.zeros(1, 3, 15, 16))
    with pytest.raises(ValueError, match="non-empty batch"):
        model(torch.zeros(0, 3, 16, 16))
    with pytest.raises(TypeError, match="VQGANImageProcessor"):
        model([[0.0]])
    with pytest.raises(TypeError, match="floating point"):
        model(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="exactly one"):
        model.decode()
    with pytest.raises(ValueError, match=r"\[0, 31\]"):
        model.decode(image_tokens=torch.full((1, 8, 8), 32))
    with pytest.raises(ValueError, match="image_tokens must have shape"):
        model.decode(image_tokens=torch.zeros(1, 64, dtype=torch.long))
    with pytest.raises(ValueError, match="embed_dim=4"):
        model.decode(quantized=torch.zeros(1, 3, 8, 8))
    # An empty batch is named, not a reshape error from the decoder's attention (issue 24).
    with pytest.raises(ValueError, match=r"image_tokens is an empty batch \(shape \(0, 8, 8\)\)"):
        model.decode(image_tokens=torch.zeros(0, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"quantized is an empty batch \(shape \(0, 4, 8, 8\)\)"):
        model.decode(quantized=torch.zeros(0, 4, 8, 8))


# ----------------------------------------------------------------------------------------------- diffusers


def _trained_a_little(config: VQGANConfig) -> VQGANModel:
    """A model whose affine parameters / running statistics are not the identity, so baking them is tested."""
    model = VQGANModel(config)
    model.train()(images(config))
    for module in model.modules():
        if isinstance(module, LearnedAffine):
            torch.nn.init.normal_(module.scale, std=0.1)
            torch.nn.init.normal_(module.shift, std=0.1)
    return model.eval()


@pytest.mark.parametrize(
    "options",
    [
        dict(affine="learned"),
        dict(affine="running", kmeans_init=True),
        dict(affine=None, distance="cosine"),
        dict(mid_block_add_attention=False),
    ],
    ids=["learned-affine", "running-affine-kmeans", "cosine", "no-mid-attention"],
)
def test_to_diffusers_matches_encode_quantize_decode(options):
    from diffusers import VQModel

    model = _trained_a_little(tiny_config(**options))
    vq_model = model.to_diffusers()
    assert isinstance(vq_model, VQModel)
    pixel_values = images(model.config)
    with torch.no_grad():
        ours = model.encode(pixel_values)
        latents = vq_model.encode(pixel_values).latents
        torch.testing.assert_close(latents, ours.latents, rtol=1e-4, atol=1e-5)
        quantized, _, (_, _, ids) = vq_model.quantize(latents)
        assert torch.equal(ids.reshape(ours.image_tokens.shape), ours.image_tokens)
        torch.testing.assert_close(quantized, ours.quantized, rtol=1e-4, atol=1e-5)
        # How existing VQ pipelines decode ids: lookup_from_codebook with a channels-last shape.
        decoded = vq_model.decode(ours.image_tokens.flatten(), force_not_quantize=True, shape=(2, 8, 8, 4)).sample
        torch.testing.assert_close(
            decoded, model.decode(image_tokens=ours.image_tokens).reconstruction, rtol=1e-4, atol=1e-4
        )
        torch.testing.assert_close(
            vq_model(pixel_values).sample, model(pixel_values).reconstruction, rtol=1e-4, atol=1e-4
        )


@pytest.mark.parametrize(
    "quantizer", [dict(quantizer_type="grouped", num_groups=2), dict(quantizer_type="residual", num_quantizers=2)]
)
def test_to_diffusers_refuses_quantizers_without_a_counterpart(quantizer):
    model = VQGANModel(tiny_config(**quantizer))
    with pytest.raises(NotImplementedError, match=quantizer["quantizer_type"]):
        model.to_diffusers()
