"""`hf-vq convert SOURCE --output_dir OUT [--subfolder vqvae] [--revision R] [--image_size N]
[--initialize_missing_decoder]`: a diffusers VQModel or a transformers JanusVQVAE or ChameleonVQVAE (a folder or a Hub
id) becomes a VQGANModel + VQGANImageProcessor folder, with a model card that names the source as `base_model` and says
what was converted (and, for Chameleon, that the decoder was not in the source and must be trained)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hf_vq.errors import HfVqUserError

from .convert import ConvertedTokenizer, convert_tokenizer

# What the card and `hf-vq push` read about the source (the training runs' file: a converted model's "run").
CONVERSION_RECORD_NAME = "training_config.json"


class OutputDirError(HfVqUserError, FileExistsError):
    """--output_dir holds a model already."""


def add_convert_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert",
        help="convert a diffusers VQModel or a transformers JanusVQVAE / ChameleonVQVAE (folder or Hub id) into an "
        "hf_vq tokenizer",
    )
    parser.add_argument("source", help="folder or Hub id (org/name) of the tokenizer, or of the model that holds it")
    parser.add_argument("--output_dir", required=True, help="folder to write the converted tokenizer to")
    parser.add_argument("--subfolder", default=None, help="subfolder of the source holding it (a pipeline's vqvae)")
    parser.add_argument("--revision", default=None, help="branch, tag or commit of a Hub source")
    parser.add_argument(
        "--image_size", type=int, default=None, help="image side the processor resizes to (default: the source's)"
    )
    parser.add_argument(
        "--initialize_missing_decoder",
        action="store_true",
        help="convert a source without a decoder (transformers' ChameleonVQVAE): encoder and codebook exactly, the "
        "decoder freshly initialised, to be trained with hf-vq train-tokenizer --pretrained_model_name_or_path",
    )
    parser.set_defaults(handler=run_convert)
    return parser


def run_convert(args: argparse.Namespace) -> Path:
    output_dir = Path(args.output_dir)
    if (output_dir / "config.json").exists():
        raise OutputDirError(f"{output_dir} holds a model already; choose an empty --output_dir")
    converted = convert_tokenizer(
        args.source,
        subfolder=args.subfolder,
        revision=args.revision,
        image_size=args.image_size,
        initialize_missing_decoder=args.initialize_missing_decoder,
    )
    write_converted_folder(converted, output_dir)
    config = converted.model.config
    grid = "x".join(map(str, config.token_grid_size))
    print(
        f"Converted {converted.source_name} {converted.source.description} -> {output_dir}: {config.codebook_size} "
        f"codes of dimension {config.embed_dim}, {config.image_size}x{config.image_size} images -> {grid} tokens"
    )
    if converted.initialized_parts:
        print(
            f"The source has no {' or '.join(converted.initialized_parts)}: freshly initialised, so reconstructions "
            f"mean nothing until it is trained: hf-vq train-tokenizer --pretrained_model_name_or_path {output_dir} ..."
        )
    return output_dir


def write_converted_folder(converted: ConvertedTokenizer, output_dir: Path) -> None:
    """The model and processor, the record of the source, and the model card rendered from them."""
    from hf_vq.hub import load_model_folder, render_model_card

    converted.save_pretrained(output_dir)
    record = converted.conversion_record()
    (output_dir / CONVERSION_RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    # `hf-vq push` renders the card again for the repo it pushes to; this one reads well before that.
    card = render_model_card(load_model_folder(output_dir), output_dir.resolve().name)
    card.save(output_dir / "README.md")


__all__ = ["add_convert_subcommand", "run_convert", "write_converted_folder"]
