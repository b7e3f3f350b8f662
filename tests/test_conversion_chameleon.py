"""transformers' ChameleonVQVAE (no decoder) converts, when asked with `initialize_missing_decoder`, to a VQGANModel
whose encoder, quant_conv and codebook give the source's token ids on the pixels Chameleon's processor makes, with a
freshly initialised decoder that the folder's record and card declare, and that `hf-vq train-tokenizer` fine-tunes."""

import json
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from hf_vq import VQGANModel
from hf_vq.conversion import UnsupportedSourceError, convert_tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from test_conversion import diffusers_outputs, random_pixels, run_cli, vqgan_outputs  # noqa: E402

SIDE = 16
# Three levels (4x downsampling: a 4x4 grid of 16-pixel images), attention on the lowest, 32 channels for
# Chameleon's fixed 32 normalisation groups.
CHAMELEON_VQ = {
    "base_channels": 32,
    "channel_multiplier": [1, 1, 2],
    "num_res_blocks": 1,
    "latent_channels": 16,
    "embed_dim": 8,
    "num_embeddings": 64,
    "resolution": SIDE,
    "attn_resolutions": [SIDE // 4],
}


def chameleon_source():
    """A random ChameleonVQVAE with PyTorch's layer init (transformers' std 0.02 gives nearly constant latents) and
    codes spread over its latents, so that many ids are in use."""
    from transformers import ChameleonVQVAE, ChameleonVQVAEConfig

    torch.manual_seed(0)
    model = ChameleonVQVAE(ChameleonVQVAEConfig(**CHAMELEON_VQ)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.reset_parameters()
        latents = model.quant_conv(model.encoder(random_pixels(seed=0, count=8)))
        vectors = latents.permute(0, 2, 3, 1).reshape(-1, CHAMELEON_VQ["embed_dim"])
        codes = vectors[torch.randperm(vectors.shape[0])[: CHAMELEON_VQ["num_embeddings"]]]
        model.quantize.embedding.weight.copy_(codes + 0.01 * torch.randn_like(codes))
    return model


def chameleon_ids(model, pixels: torch.Tensor) -> torch.Tensor:
    """`ChameleonVQVAE.encode`'s ids as a (batch, height, width) grid."""
    with torch.no_grad():
        return model.encode(pixels).image_tokens.reshape(pixels.shape[0], SIDE // 4, SIDE // 4)


def full_chameleon_model(vq_vae):
    """A tiny ChameleonForConditionalGeneration (one language-model layer) around `vq_vae`."""
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration

    text = {"vocab_size": 100, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1}
    text |= {"num_attention_heads": 2, "num_key_value_heads": 2, "vocabulary_map": {"<image>": 5}}
    full = ChameleonForConditionalGeneration(ChameleonConfig(vq_config=dict(CHAMELEON_VQ), **text))
    full.model.vqmodel.load_state_dict(vq_vae.state_dict())
    return full


@pytest.fixture(scope="module")
def source():
    return chameleon_source()


@pytest.fixture(scope="module")
def converted(source):
    return VQGANModel.from_transformers(source, initialize_missing_decoder=True)


def test_chameleon_encoder_and_codebook_convert_to_the_same_ids(source, converted):
    pixels = random_pixels()  # 64 images
    expected = chameleon_ids(source, pixels)
    ids, reconstruction = vqgan_outputs(converted, pixels)
    assert expected.unique().numel() > 16, "the test needs many codes in use"
    assert converted.config.distance == "euclidean" and converted.config.token_grid_size == (4, 4)
    assert converted.config.level_has_attention == [False, False, True] and converted.config.mid_block_add_attention
    assert torch.equal(ids, expected)
    assert reconstruction.shape == pixels.shape  # a decoder, if an untrained one
    for name in ("quant_conv.weight", "post_quant_conv.weight", "post_quant_conv.bias"):
        assert torch.equal(converted.state_dict()[name], source.state_dict()[name])
    exported_ids, _ = diffusers_outputs(converted.to_diffusers(), pixels)
    assert torch.equal(exported_ids, expected)


def test_the_quantizer_loss_trains_as_chameleons(source, converted):
    """Same loss and same gradients: taming's legacy weighting (commitment 1, codebook 0.25) is hf_vq's beta 0.2
    scaled by 1.25, so a fine-tuning run starts from the objective the source was trained with."""
    pixels = random_pixels(count=8)
    source_loss = source.encode(pixels).embedding_loss
    source_loss.backward()
    output = converted(pixels)
    (converted.config.quantizer_loss_weight * output.quantizer_loss).backward()
    torch.testing.assert_close(converted.config.quantizer_loss_weight * output.quantizer_loss, source_loss)
    for name in ("quant_conv.weight", "quantize.embedding.weight"):
        source_grad = source.get_parameter(name).grad
        torch.testing.assert_close(converted.get_parameter(name).grad, source_grad, msg=name)
    source.zero_grad(set_to_none=True)
    converted.zero_grad(set_to_none=True)


@pytest.fixture(scope="module")
def source_folder(source, tmp_path_factory):
    folder = tmp_path_factory.mktemp("chameleon_vq")
    source.save_pretrained(folder)
    return folder


def random_images(count: int = 12) -> list[PIL.Image.Image]:
    """RGB and grayscale images of several sizes and aspect ratios."""
    rng = np.random.default_rng(0)
    images = []
    for index in range(count):
        height, width = int(rng.integers(SIDE, 3 * SIDE)), int(rng.integers(SIDE, 3 * SIDE))
        array = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        image = PIL.Image.fromarray(array)
        images.append(image.convert("L") if index % 4 == 3 else image)
    return images


def test_the_processor_gives_chameleons_pixels_and_ids(source_folder, source):
    """The converted processor maps images as ChameleonImageProcessor does (shortest edge resized with Lanczos,
    center crop, x * 0.0078 - 1: white is 0.989, not 1), so the same images give Chameleon's ids; postprocess maps
    the pixel values back to the cropped images."""
    from transformers import ChameleonImageProcessorPil

    converted = convert_tokenizer(source_folder, initialize_missing_decoder=True)
    reference = ChameleonImageProcessorPil(size={"shortest_edge": SIDE}, crop_size={"height": SIDE, "width": SIDE})
    white, colour = PIL.Image.new("RGB", (SIDE, 2 * SIDE), (255, 255, 255)), (30, 128, 200)
    images = random_images() + [white, PIL.Image.new("RGB", (3 * SIDE, SIDE), colour)]
    expected = reference(images, return_tensors="pt").pixel_values
    pixels = converted.image_processor(images, return_tensors="pt").pixel_values
    assert pixels.shape == (len(images), 3, SIDE, SIDE)
    assert torch.equal(pixels, expected)
    assert float(pixels[-2].min()) == pytest.approx(255 * 0.0078 - 1)  # white
    assert torch.equal(vqgan_outputs(converted.model, pixels)[0], chameleon_ids(source, expected))
    back = converted.image_processor.postprocess(pixels[-1:], output_type="np")
    assert np.abs(back.astype(int) - np.array(colour)).max() <= 1


def test_without_the_flag_a_chameleon_source_is_refused_naming_it(source, source_folder, tmp_path, capsys):
    with pytest.raises(UnsupportedSourceError, match="no decoder.*initialize_missing_decoder=True"):
        VQGANModel.from_transformers(source)
    with pytest.raises(UnsupportedSourceError, match="Chameleon VQ-VAE.*no decoder.*--initialize_missing_decoder"):
        convert_tokenizer(source_folder)
    code, err = run_cli(["convert", str(source_folder), "--output_dir", str(tmp_path / "out")], capsys)
    assert code == 1 and err.count("\n") == 1 and "pass --initialize_missing_decoder" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("form", ["vq_vae_folder", "full_model_folder"])
def test_a_saved_chameleon_folder_converts_and_round_trips(form, source, source_folder, tmp_path):
    """A ChameleonVQVAE folder, or a full Chameleon model folder (only its VQ-VAE's tensors read), converts to the
    same ids; the converted folder loads back identical, decoder included (seeded: every conversion gives it)."""
    folder = source_folder
    if form == "full_model_folder":
        folder = tmp_path / "chameleon"
        full_chameleon_model(source).save_pretrained(folder)
    converted = convert_tokenizer(folder, initialize_missing_decoder=True)
    assert converted.source.kind == "chameleon_vq" and converted.initialized_parts == ["decoder"]
    pixels = random_pixels(count=8)
    ids, reconstruction = vqgan_outputs(converted.model, pixels)
    assert torch.equal(ids, chameleon_ids(source, pixels))
    converted.save_pretrained(tmp_path / "converted")
    loaded = VQGANModel.from_pretrained(tmp_path / "converted").eval()
    loaded_ids, loaded_reconstruction = vqgan_outputs(loaded, pixels)
    assert torch.equal(loaded_ids, ids) and torch.equal(loaded_reconstruction, reconstruction)
    torch.manual_seed(123)  # whatever the global random state, the decoder is the same
    again = VQGANModel.from_transformers(source, initialize_missing_decoder=True)
    assert torch.equal(vqgan_outputs(again, pixels)[1], reconstruction)
    from hf_vq import VQGANImageProcessor

    processor = VQGANImageProcessor.from_pretrained(tmp_path / "converted")
    assert processor.rescale_factor == 0.0078 and list(processor.image_mean) == [1.0] * 3


def test_the_cli_records_and_the_card_says_the_decoder_was_initialised(source_folder, tmp_path, capsys):
    from hf_vq.cli import main

    output_dir = tmp_path / "out"
    main(["convert", str(source_folder), "--output_dir", str(output_dir), "--initialize_missing_decoder"])
    assert "The source has no decoder: freshly initialised" in capsys.readouterr().out
    record = json.loads((output_dir / "training_config.json").read_text())
    assert record["converted_from"] == "transformers ChameleonVQVAE" and record["decoder_initialized"] is True
    assert record["initialized_parts"] == ["decoder"] and "codebook" in record["converted_parts"]
    card = (output_dir / "README.md").read_text()
    assert "The decoder was not in the source and was freshly initialised" in card
    assert "hf-vq train-tokenizer --pretrained_model_name_or_path" in card
    assert "token ids and reconstructions on the same pixels" not in card
    from training_helpers import write_images

    images = write_images(tmp_path / "images", count=2, size=SIDE)
    rec_dir = tmp_path / "rec"
    main(
        ["reconstruct", "--tokenizer_name_or_path", str(output_dir), "--image_dir", str(images)]
        + ["--output_dir", str(rec_dir)]
    )
    assert "decoder was freshly initialised when it was converted" in capsys.readouterr().out
    assert json.loads((rec_dir / "metrics.json").read_text())["decoder_initialized"] is True


def test_train_tokenizer_fine_tunes_the_initialised_decoder_on_chameleons_pixels(source_folder, source, tmp_path):
    """Two fine-tuning steps from the converted folder train the decoder; the run reads (and saves) Chameleon's
    pixel mapping, so its step 0 gives the source's ids on the same images."""
    from hf_vq.conversion.command import write_converted_folder
    from hf_vq.models.vqgan import VQGANImageProcessor
    from hf_vq.training.tokenizer_command import resolve_tokenizer_args
    from hf_vq.training.tokenizer_loop import build_model_and_processor, train_tokenizer
    from training_helpers import one_thread, reset_accelerate, write_images

    converted_dir, run_dir = tmp_path / "converted", tmp_path / "run"
    write_converted_folder(convert_tokenizer(source_folder, initialize_missing_decoder=True), converted_dir)
    images = write_images(tmp_path / "images", count=8, size=SIDE + 4)
    flags = dict(pretrained_model_name_or_path=str(converted_dir), train_data_dir=str(images), progress_bar=False)
    flags |= dict(output_dir=str(run_dir), train_batch_size=4, max_train_steps=2, checkpointing_steps=0)
    flags |= dict(eval_steps=0, discriminator_weight=0.0, learning_rate=1e-2, max_eval_samples=4)
    config = resolve_tokenizer_args(flags)
    model, processor = build_model_and_processor(config)
    assert processor.rescale_factor == 0.0078 and list(processor.image_std) == [1.0] * 3
    image = [PIL.Image.open(path) for path in sorted(images.glob("*.png"))[:4]]
    pixels = processor(image, return_tensors="pt").pixel_values
    assert torch.equal(vqgan_outputs(model.eval(), pixels)[0], chameleon_ids(source, pixels))
    reset_accelerate()
    with one_thread():
        result = train_tokenizer(config)
    assert result["global_step"] == 2
    before, after = VQGANModel.from_pretrained(converted_dir), VQGANModel.from_pretrained(run_dir)
    changed = [
        name
        for name, value in after.decoder.state_dict().items()
        if not torch.equal(value, before.decoder.state_dict()[name])
    ]
    assert changed, "the decoder did not train"
    saved = VQGANImageProcessor.from_pretrained(run_dir)
    assert saved.rescale_factor == 0.0078 and list(saved.image_mean) == [1.0] * 3


def test_decoder_tensors_a_full_checkpoint_holds_are_named_not_converted(source, tmp_path, caplog):
    """Meta's original checkpoint has a decoder that transformers' class does not define: a Chameleon folder that
    kept its tensors converts (encoder and codebook), with a warning naming what was left out."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "chameleon"
    full_chameleon_model(source).save_pretrained(folder)
    weights = load_file(folder / "model.safetensors")
    weights["model.vqmodel.decoder.conv_in.weight"] = torch.zeros(16, 16, 3, 3)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with caplog.at_level("WARNING", logger="hf_vq.conversion.chameleon_vq"):
        converted = convert_tokenizer(folder, initialize_missing_decoder=True)
    assert "1 VQ-VAE tensors that transformers' ChameleonVQVAE does not define (decoder.conv_in.weight" in caplog.text
    pixels = random_pixels(count=8)
    assert torch.equal(vqgan_outputs(converted.model, pixels)[0], chameleon_ids(source, pixels))
