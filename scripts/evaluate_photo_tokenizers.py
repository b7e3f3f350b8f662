#!/usr/bin/env python
"""Photo tokenizers side by side: the photo test split and the held-out package (docs/photos.md, issue 26).

    python scripts/evaluate_photo_tokenizers.py --model_dirs outputs/photos-tok8 outputs/photos-tok16 \\
        --output_dir outputs/photos-eval

For each data folder (default: the test split of the training package, `outputs/photos64/photos/test`, and the
held-out package, `outputs/photos64/heldout/test`) a seeded random sample of `--num_images` patches, the same for
every model, is reconstructed in eval mode. PSNR, SSIM, codebook usage and perplexity are printed as a Markdown table
and written to `metrics.json`; `grid_<folder>.png` shows `--num_grid_images` originals (spread evenly over the
sample, so over the scenes and photographs) in its first row and each model's reconstructions of them in the rows
below, in the order of `--model_dirs`.

A random sample and not the first N files: the folders are sorted by scene, so the first 512 patches (what a training
run's `--max_eval_samples 512` evaluates) come from one or two photographs.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import PIL.Image
import torch

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hf_vq.errors import HfVqUserError  # noqa: E402
from hf_vq.evaluation import save_image_grid  # noqa: E402
from hf_vq.training.evaluate import evaluate_reconstructions  # noqa: E402

DEFAULT_DATA_DIRS = ("outputs/photos64/photos/test", "outputs/photos64/heldout/test")
METRICS = ("psnr", "ssim", "codebook_usage", "perplexity")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dirs", nargs="+", required=True, help="saved tokenizer folders")
    parser.add_argument("--data_dirs", nargs="+", default=list(DEFAULT_DATA_DIRS), help="folders of <scene>/*.png")
    parser.add_argument("--num_images", type=int, default=1024, help="patches sampled from each data folder")
    parser.add_argument("--num_grid_images", type=int, default=12, help="originals shown in each grid")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0, help="seed of the patch sample")
    parser.add_argument("--output_dir", default="outputs/photos-eval")
    args = parser.parse_args(argv)
    if args.num_images < 1 or args.num_grid_images < 0 or args.batch_size < 1:
        parser.error("--num_images and --batch_size must be >= 1 and --num_grid_images >= 0")
    return args


def sample_paths(folder: Path, num_images: int, seed: int) -> list[Path]:
    """A seeded random sample of the folder's `<scene>/*.png` (all of them when there are fewer), in sorted order."""
    paths = sorted(folder.glob("*/*.png"))
    if not paths:
        raise HfVqUserError(
            f"no patches (<scene>/*.png) in {folder}: build the photo dataset with "
            "`python scripts/make_photo_dataset.py`, or pass --data_dirs with folders of that layout"
        )
    return sorted(random.Random(seed).sample(paths, min(num_images, len(paths))))


def load_tokenizer(model_dir: str):
    """The saved tokenizer (eval mode) and its image processor."""
    from transformers import AutoImageProcessor, AutoModel

    import hf_vq  # noqa: F401  (registers the VQGAN classes with the Auto classes)

    if not (Path(model_dir) / "config.json").is_file():
        raise HfVqUserError(
            f"{model_dir} is not a saved tokenizer (no config.json): pass a train-tokenizer output_dir"
        )
    return AutoModel.from_pretrained(model_dir).eval(), AutoImageProcessor.from_pretrained(model_dir)


@torch.no_grad()
def evaluate_model(
    model, processor, paths: list[Path], batch_size: int, num_shown: int
) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """The metrics of `model` on the patches at `paths`, and `num_shown` of the patches, evenly spread, with their
    reconstructions (for the grid)."""
    images = [PIL.Image.open(path).convert("RGB") for path in paths]
    pixel_values = processor(images, return_tensors="pt").pixel_values
    batches = [
        {"pixel_values": pixel_values[start : start + batch_size]} for start in range(0, len(images), batch_size)
    ]
    metrics = evaluate_reconstructions(model, batches, torch.device("cpu"), grid_path=None)
    # Evenly spread over the sample (sorted by scene and photograph), so that the grid shows every scene.
    shown = pixel_values[torch.linspace(0, len(images) - 1, min(num_shown, len(images))).long()]
    return metrics, shown, model(shown).reconstruction.float() if num_shown else shown


def markdown_table(results: dict[str, dict[str, dict]]) -> str:
    """One row per (data folder, model)."""
    lines = ["| data | model | PSNR | SSIM | usage | perplexity |", "|---|---|---:|---:|---:|---:|"]
    for data_dir, by_model in results.items():
        for model_dir, metrics in by_model.items():
            lines.append(
                f"| {data_dir} | {model_dir} | {metrics['psnr']:.2f} | {metrics['ssim']:.3f} | "
                f"{metrics['codebook_usage']:.1%} | {metrics['perplexity']:.0f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    try:
        tokenizers = {model_dir: load_tokenizer(model_dir) for model_dir in args.model_dirs}
        samples = {data_dir: sample_paths(Path(data_dir), args.num_images, args.seed) for data_dir in args.data_dirs}
    except HfVqUserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    results: dict[str, dict[str, dict]] = {}
    for data_dir, paths in samples.items():
        results[data_dir], rows = {}, []
        for model_dir, (model, processor) in tokenizers.items():
            metrics, originals, reconstructions = evaluate_model(
                model, processor, paths, args.batch_size, args.num_grid_images
            )
            results[data_dir][model_dir] = {name: metrics[name] for name in METRICS} | {"images": len(paths)}
            rows.append(reconstructions)
        if args.num_grid_images:
            grid = torch.cat([originals, *rows])
            name = "_".join(Path(data_dir).parts[-2:])
            save_image_grid(grid, output_dir / f"grid_{name}.png", columns=min(args.num_grid_images, len(paths)))
    output_dir.mkdir(parents=True, exist_ok=True)
    settings = {name: getattr(args, name) for name in ("num_images", "seed")}
    (output_dir / "metrics.json").write_text(json.dumps({"settings": settings, "results": results}, indent=1) + "\n")
    print(markdown_table(results))
    print(f"wrote {output_dir / 'metrics.json'} and the grids grid_*.png (originals first, then {args.model_dirs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
