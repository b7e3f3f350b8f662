"""The image tokenizer a token-ViT classifier reads, seen through one sibling module.

Why this file exists (the same device as `hf_vq/models/vqgan/quantization_vqgan.py`): a classifier given pixels
tokenizes them with its tokenizer, so a classifier folder shared with `trust_remote_code=True` must carry the
tokenizer's code as well as its own. transformers copies a modeling file together with the files it imports
*relatively from its own folder*, and the VQGAN lives in a sibling package.

So `modeling_token_vit.py` imports the tokenizer only through `from .vqgan_token_vit import ...`:

- inside the installed package, this module re-exports `hf_vq.models.vqgan` with absolute imports (which the copier
  ignores);
- when a classifier is saved, `TokenViTForImageClassification.save_pretrained` copies the VQGAN's files into the
  folder (`hf_vq.models.vqgan.modeling_vqgan.copy_remote_code`) and writes `remote_code_source()` as this module's
  copy, so that the checkpoint's classifier builds the checkpoint's own VQGAN, with no hf_vq installed.
"""

from hf_vq.models.vqgan.modeling_vqgan import VQGANModel, copy_remote_code, eager_attention_forward

# What the checkpoint's copy of this module imports from the VQGAN files copied beside it.
_REMOTE_IMPORTS = {"modeling_vqgan": "VQGANModel, eager_attention_forward"}


def remote_code_source() -> str:
    """Source of this module's copy in a saved classifier: the same names, imported from sibling files.

    Built here rather than written as a literal: transformers scans source text for lines that start with a
    relative import, and would look for the VQGAN files beside this file when saving.
    """
    imports = "\n".join(f"from .{module} import {names}" for module, names in _REMOTE_IMPORTS.items())
    return (
        '"""The image tokenizer (hf_vq\'s VQGAN) that this classifier reads, copied with it for '
        'trust_remote_code."""\n\n'
        f"{imports}\n\n"
        "# This module is already the checkpoint's copy: the VQGAN files are its siblings.\n"
        "remote_code_source = None\n"
        "copy_remote_code = None\n\n"
        '__all__ = ["VQGANModel", "eager_attention_forward"]\n'
    )


__all__ = ["VQGANModel", "copy_remote_code", "eager_attention_forward", "remote_code_source"]
