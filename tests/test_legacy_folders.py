"""Folders saved by an earlier hf_vq keep loading with identical outputs.

tests/legacy/<date>/ holds what the code of that date saved (tests/legacy/make_legacy_folders.py wrote it): a tokenizer
per quantizer family (each trained a few steps so that affine statistics, EMA buffers and usage counters hold
values of their own), a token ViT classifier and a MaskGIT pipeline, each beside the inputs it was given and the
outputs it gave then. Token ids must be equal; floats equal up to float32 round-off (a loaded tensor's alignment
can change the CPU GEMM's summation order).
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_vq import MaskGITModel, MaskGITPipeline, MaskGITScheduler, TokenViTForImageClassification, VQGANModel

SETS = sorted(path for path in (Path(__file__).parent / "legacy").iterdir() if path.is_dir())
TOKENIZERS = ["vector_paper", "vector_running_cosine", "vector_ema_rotation", "simvq", "grouped", "residual", "fsq"]
TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}


def load_without_missing_tensors(model_class, folder: Path):
    model, info = model_class.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


@pytest.mark.parametrize("saved", SETS, ids=lambda path: path.name)
@pytest.mark.parametrize("name", TOKENIZERS)
def test_tokenizer_gives_the_same_ids_and_reconstructions(saved, name):
    folder = saved / name
    expected = load_file(folder / "expected.safetensors")
    model = load_without_missing_tensors(VQGANModel, folder)
    with torch.no_grad():
        encoded = model.encode(expected["pixel_values"])
        assert torch.equal(encoded.image_tokens, expected["image_tokens"])
        torch.testing.assert_close(encoded.quantized, expected["quantized"], **TOLERANCE)
        from_codes = model.decode(quantized=encoded.quantized).reconstruction
        from_ids = model.decode(image_tokens=encoded.image_tokens).reconstruction
        forward = model(expected["pixel_values"])
    torch.testing.assert_close(from_codes, expected["reconstruction_from_codes"], **TOLERANCE)
    torch.testing.assert_close(from_ids, expected["reconstruction_from_ids"], **TOLERANCE)
    torch.testing.assert_close(forward.reconstruction, expected["forward_reconstruction"], **TOLERANCE)
    torch.testing.assert_close(forward.loss.reshape(1), expected["forward_loss"], **TOLERANCE)


@pytest.mark.parametrize("saved", SETS, ids=lambda path: path.name)
def test_classifier_gives_the_same_logits(saved):
    expected = load_file(saved / "classifier" / "expected.safetensors")
    model = load_without_missing_tensors(TokenViTForImageClassification, saved / "classifier")
    with torch.no_grad():
        logits = model(image_tokens=expected["image_tokens"]).logits
    torch.testing.assert_close(logits, expected["logits"], **TOLERANCE)


@pytest.mark.parametrize("saved", SETS, ids=lambda path: path.name)
@pytest.mark.parametrize("loading", ["through the pipeline class", "component by component"])
def test_maskgit_pipeline_samples_the_same_tokens(saved, loading):
    folder = saved / "maskgit_pipeline"
    expected = load_file(folder / "expected.safetensors")
    if loading == "through the pipeline class":  # hf_vq's classes, no code from the folder (it holds none)
        pipe = MaskGITPipeline.from_pretrained(folder)
    else:
        pipe = MaskGITPipeline(
            vqgan=load_without_missing_tensors(VQGANModel, folder / "vqgan"),
            transformer=load_without_missing_tensors(MaskGITModel, folder / "transformer"),
            scheduler=MaskGITScheduler.from_pretrained(folder / "scheduler"),
        )
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        class_labels=[0, 2],
        num_inference_steps=3,
        guidance_scale=1.5,
        output_type="pt",
        generator=torch.Generator().manual_seed(3),
    )
    assert torch.equal(out.image_tokens, expected["image_tokens"])
    torch.testing.assert_close(out.images, expected["images"], **TOLERANCE)
