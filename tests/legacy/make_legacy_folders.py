"""Writes the frozen folders of tests/test_legacy_folders.py: what hf_vq saved on 2026-12-03 (commit 98bdbfb), with the
inputs and the outputs that code gave. Not run by the tests: it documents how the folders were made. Run it only to
add a new dated set (the old sets stay: they are the promise that a folder saved then keeps loading now).

    python tests/legacy/make_legacy_folders.py tests/legacy/2026-12-03
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from hf_vq import (
    MaskGITModel,
    MaskGITPipeline,
    MaskGITScheduler,
    TokenViTForImageClassification,
    VQGANConfig,
    VQGANImageProcessor,
    VQGANModel,
)

BACKBONE = {
    "num_channels": 3,
    "image_size": 16,
    "block_out_channels": [8, 16],
    "layers_per_block": 1,
    "attention_resolutions": [8],
    "norm_num_groups": 4,
    "latent_channels": 8,
    "embed_dim": 4,
    "codebook_size": 32,
}
# One tokenizer per quantizer family, each with the options that keep state of their own.
TOKENIZERS = {
    "vector_paper": {
        "quantizer_type": "vector",
        "beta": 0.95,
        "sync_nu": 0.2,
        "affine": "learned",
        "affine_lr": 2.0,
        "alternating": True,
        "replace_freq": 10,
    },
    "vector_running_cosine": {
        "quantizer_type": "vector",
        "affine": "running",
        "distance": "cosine",
        "reconstruction_loss_type": "mse",
    },
    "vector_ema_rotation": {
        "quantizer_type": "vector",
        "codebook_update": "ema",
        "gradient_estimator": "rotation",
        "replace_freq": 5,
    },
    "simvq": {"quantizer_type": "vector", "affine": "linear"},
    "grouped": {"quantizer_type": "grouped", "num_groups": 2, "affine": "learned"},
    "residual": {"quantizer_type": "residual", "num_quantizers": 2, "sync_nu": 0.5},
    "fsq": {"quantizer_type": "fsq", "fsq_levels": [5, 3, 3, 2], "codebook_size": 90},
}
TINY_TRANSFORMER = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}


def pixels(seed: int, batch: int = 4) -> torch.Tensor:
    return torch.rand(batch, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, str(path))


def strip_code_copies(folder: Path) -> None:
    """The copies of hf_vq's code that remote-code loading needs are left out: these folders test today's code (a
    pipeline folder loads through `MaskGITPipeline.from_pretrained` with hf_vq's classes, without them)."""
    for code in folder.rglob("*.py"):
        code.unlink()


def trained_a_little(config: VQGANConfig) -> VQGANModel:
    """A few optimizer steps so that affine statistics, EMA buffers and usage counters leave their initial values."""
    torch.manual_seed(0)
    model = VQGANModel(config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(6):
        out = model(pixels(100 + step, batch=8))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    return model.eval()


def write_tokenizer(folder: Path, name: str, options: dict) -> VQGANModel:
    model = trained_a_little(VQGANConfig(**{**BACKBONE, **options}))
    model.save_pretrained(folder / name)
    VQGANImageProcessor(size={"height": 16, "width": 16}).save_pretrained(folder / name)
    inputs = pixels(1)
    with torch.no_grad():
        encoded = model.encode(inputs)
        from_codes = model.decode(quantized=encoded.quantized).reconstruction
        from_ids = model.decode(image_tokens=encoded.image_tokens).reconstruction
        forward = model(inputs)
    save_tensors(
        {
            "pixel_values": inputs,
            "image_tokens": encoded.image_tokens,
            "quantized": encoded.quantized,
            "reconstruction_from_codes": from_codes,
            "reconstruction_from_ids": from_ids,
            "forward_reconstruction": forward.reconstruction,
            "forward_loss": forward.loss.reshape(1),
        },
        folder / name / "expected.safetensors",
    )
    return model


def write_classifier(folder: Path, tokenizer: VQGANModel) -> None:
    torch.manual_seed(0)
    model = TokenViTForImageClassification.from_tokenizer(
        str(folder / "vector_paper"), tokenizer=tokenizer, num_labels=3, init_from_codebook=True, **TINY_TRANSFORMER
    ).eval()
    model.save_pretrained(folder / "classifier")
    tokens = torch.randint(0, 32, (4, 8, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model(image_tokens=tokens).logits
    save_tensors({"image_tokens": tokens, "logits": logits}, folder / "classifier" / "expected.safetensors")


def write_prior_pipeline(folder: Path, tokenizer: VQGANModel) -> None:
    torch.manual_seed(0)
    prior = MaskGITModel.from_tokenizer(
        str(folder / "vector_paper"), tokenizer=tokenizer, num_classes=3, initializer_range=0.5, **TINY_TRANSFORMER
    ).eval()
    pipe = MaskGITPipeline(vqgan=tokenizer, transformer=prior, scheduler=MaskGITScheduler(mask_token_id=32))
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(folder / "maskgit_pipeline")
    out = pipe(
        class_labels=[0, 2],
        num_inference_steps=3,
        guidance_scale=1.5,
        output_type="pt",
        generator=torch.Generator().manual_seed(3),
    )
    save_tensors(
        {"image_tokens": out.image_tokens, "images": out.images}, folder / "maskgit_pipeline" / "expected.safetensors"
    )


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tokenizers = {name: write_tokenizer(folder, name, options) for name, options in TOKENIZERS.items()}
    write_classifier(folder, tokenizers["vector_paper"])
    write_prior_pipeline(folder, tokenizers["vector_paper"])
    strip_code_copies(folder)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
