"""The token ViT as a transformers model: saved next to a real tokenizer, loaded by the Auto classes and by
pipeline("image-classification"), and clear errors for inputs that do not fit."""

import json
import re

import numpy as np
import PIL.Image
import pytest
import torch
import transformers
from safetensors.torch import load_file

from hf_vq import TokenViTConfig, TokenViTForImageClassification, VQGANConfig, VQGANImageProcessor, VQGANModel

LABELS = {0: "circle", 1: "square", 2: "stripe"}
TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def classifier_dir(tokenizer_dir, tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("classifier")
    model = TokenViTForImageClassification.from_tokenizer(
        tokenizer_dir,
        init_from_codebook=True,
        num_labels=3,
        id2label=LABELS,
        label2id={name: index for index, name in LABELS.items()},
        **TINY,
    )
    model.save_pretrained(folder, image_processor=VQGANImageProcessor.from_pretrained(tokenizer_dir))
    return folder


def _image(seed: int, size=(24, 20)) -> PIL.Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return PIL.Image.fromarray(pixels)


def test_pipeline_classifies_pil_images_end_to_end(classifier_dir, tokenizer_dir):
    classify = transformers.pipeline("image-classification", model=str(classifier_dir))
    image = _image(1)
    predictions = classify(image, top_k=3)
    assert {p["label"] for p in predictions} == set(LABELS.values())
    assert sum(p["score"] for p in predictions) == pytest.approx(1.0, abs=1e-5)
    # The same scores by hand: processor -> tokenizer -> token ids -> classifier.
    processor = VQGANImageProcessor.from_pretrained(tokenizer_dir)
    tokens = (
        VQGANModel.from_pretrained(tokenizer_dir)
        .eval()
        .encode(processor(image, return_tensors="pt")["pixel_values"])
        .image_tokens
    )
    model = TokenViTForImageClassification.from_pretrained(classifier_dir).eval()
    with torch.no_grad():
        probabilities = model(image_tokens=tokens).logits.softmax(-1)[0]
    assert {p["label"]: p["score"] for p in predictions} == pytest.approx(
        {LABELS[i]: float(probabilities[i]) for i in range(3)}, abs=1e-5
    )


def test_saved_folder_loads_through_auto_classes_without_the_tokenizer_weights(classifier_dir, tokenizer_dir):
    config = transformers.AutoConfig.from_pretrained(classifier_dir)
    assert isinstance(config, TokenViTConfig)
    assert config.tokenizer_name_or_path == str(tokenizer_dir)
    assert (config.codebook_size, config.grid_size, config.token_embedding_dim) == (32, [8, 8], 4)
    assert isinstance(
        transformers.AutoModelForImageClassification.from_pretrained(classifier_dir), TokenViTForImageClassification
    )
    assert isinstance(transformers.AutoImageProcessor.from_pretrained(classifier_dir), VQGANImageProcessor)
    # The tokenizer is a tool, not part of the classifier's weights; but its code (and the processor's) travels with
    # the classifier, for trust_remote_code=True.
    assert not [
        key for key in load_file(classifier_dir / "model.safetensors") if "encoder" in key or "quantize" in key
    ]
    assert json.loads((classifier_dir / "preprocessor_config.json").read_text())["auto_map"] == {
        "AutoImageProcessor": "image_processing_vqgan.VQGANImageProcessor"
    }
    assert json.loads((classifier_dir / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_token_vit.TokenViTConfig",
        "AutoModelForImageClassification": "modeling_token_vit.TokenViTForImageClassification",
        "AutoModel": "modeling_token_vit.TokenViTForImageClassification",
    }
    code = {path.name for path in classifier_dir.glob("*.py")}
    assert {
        "modeling_token_vit.py",
        "configuration_token_vit.py",
        "vqgan_token_vit.py",
        "modeling_vqgan.py",
        "configuration_vqgan.py",
        "image_processing_vqgan.py",
        "quantization_vqgan.py",
        "vector_quantizer.py",
    } <= code
    imports = [
        line
        for name in code
        for line in (classifier_dir / name).read_text().splitlines()
        if re.match(r"\s*(from|import)\s+hf_vq\b", line)
    ]
    assert imports == [], "the copied code must not import hf_vq"


def test_token_embedding_starts_at_the_effective_codebook(classifier_dir, tokenizer_dir):
    tokenizer = VQGANModel.from_pretrained(tokenizer_dir)
    model = TokenViTForImageClassification.from_pretrained(classifier_dir)
    torch.testing.assert_close(model.embeddings.token_embedding.weight, tokenizer.quantize.codebook.detach())
    with pytest.raises(ValueError, match="token_embedding_dim"):
        TokenViTForImageClassification(
            TokenViTConfig(codebook_size=32, grid_size=[8, 8], **TINY)
        ).init_token_embedding_from_codebook(tokenizer.quantize.codebook)


def test_bad_token_inputs_raise_clear_errors(classifier_dir):
    model = TokenViTForImageClassification.from_pretrained(classifier_dir).eval()
    assert model(image_tokens=torch.randint(0, 32, (2, 64))).logits.shape == (2, 3)  # flat grids are fine
    with pytest.raises(ValueError, match=r"must lie in \[0, 31\].*got values from 0 to 32"):
        model(image_tokens=torch.full((1, 8, 8), 32).index_fill_(1, torch.tensor([0]), 0))
    with pytest.raises(ValueError, match=r"from -1"):
        model(image_tokens=torch.full((1, 8, 8), -1))
    with pytest.raises(ValueError, match=r"\(1, 7, 7\).*\(batch, 8, 8\).*8x8 grid"):
        model(image_tokens=torch.zeros(1, 7, 7, dtype=torch.long))
    with pytest.raises(TypeError, match="integer token ids"):
        model(image_tokens=torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="exactly one of"):
        model(image_tokens=torch.zeros(1, 8, 8, dtype=torch.long), pixel_values=torch.zeros(1, 3, 16, 16))


def test_pixels_of_the_wrong_size_and_a_mismatched_tokenizer_are_refused(classifier_dir):
    model = TokenViTForImageClassification.from_pretrained(classifier_dir).eval()
    assert model(pixel_values=torch.zeros(1, 3, 16, 16)).logits.shape == (1, 3)
    with pytest.raises(ValueError, match=r"\(1, 16, 16\).*8x8 grid"):
        model(pixel_values=torch.zeros(1, 3, 32, 32))  # a 16x16 grid from 32x32 pixels
    other = VQGANModel(VQGANConfig.from_yaml("configs/vqgan_tiny.yaml", codebook_size=64))
    with pytest.raises(ValueError, match="codebook of 64 codes.*codebook_size=32"):
        model.set_tokenizer(other)
    unnamed = TokenViTForImageClassification(TokenViTConfig(codebook_size=32, grid_size=[8, 8], **TINY))
    with pytest.raises(ValueError, match="tokenizer_name_or_path is not set"):
        unnamed(pixel_values=torch.zeros(1, 3, 16, 16))


BLOCKED_SCRIPT = """
import sys
sys.modules["hf_vq"] = None  # `import hf_vq` raises ImportError: the folder must carry all of its code
import numpy as np, PIL.Image, torch, transformers

folder, out = sys.argv[1], sys.argv[2]
image = PIL.Image.fromarray(np.random.default_rng(1).integers(0, 256, (20, 24, 3), dtype=np.uint8))
model = transformers.AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
processor = transformers.AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
with torch.no_grad():
    logits = model(**processor(images=image, return_tensors="pt")).logits
scores = transformers.pipeline("image-classification", model=folder, trust_remote_code=True)(image, top_k=3)
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
assert type(model.tokenizer).__module__.startswith("transformers_modules"), type(model.tokenizer).__module__
torch.save({"logits": logits, "scores": {s["label"]: s["score"] for s in scores}}, out)
"""


def test_saved_folder_loads_without_hf_vq(classifier_dir, tmp_path):
    """The folder alone (its code, its tokenizer's code and its processor's) classifies images where hf_vq is absent;
    the tokenizer's weights come from the folder its config names."""
    import os
    import subprocess
    import sys

    (tmp_path / "blocked.py").write_text(BLOCKED_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "blocked.py", str(classifier_dir), "out.pt"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "out.pt")
    model = TokenViTForImageClassification.from_pretrained(classifier_dir).eval()
    processor = VQGANImageProcessor.from_pretrained(classifier_dir)
    with torch.no_grad():
        logits = model(**processor(images=_image(1), return_tensors="pt")).logits
    torch.testing.assert_close(remote["logits"], logits)
    probabilities = logits.softmax(-1)[0]
    assert remote["scores"] == pytest.approx({LABELS[i]: float(probabilities[i]) for i in range(3)}, abs=1e-5)
