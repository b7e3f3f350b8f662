"""Paths of the YAML configs shipped in the repository's `configs/` folder that library code refers to.

A leaf module (no imports from hf_vq), so that any layer can name a shipped config without importing the command
that uses it (the comparison study's VQGAN backbone uses the `make demo` tokenizer's config).
"""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# The `make demo` tokenizer (0.99M parameters, 32x32 grayscale -> 8x8 codes), also the study's VQGAN backbone.
TOKENIZER_CONFIG = CONFIG_DIR / "vqgan_fashion_mnist_cpu.yaml"
# The photo tokenizer (64x64 RGB, docs/photos.md), also the study's VQGAN backbone on `--dataset photos`.
PHOTO_TOKENIZER_CONFIG = CONFIG_DIR / "vqgan_photos64_cpu.yaml"

__all__ = ["CONFIG_DIR", "PHOTO_TOKENIZER_CONFIG", "TOKENIZER_CONFIG"]
