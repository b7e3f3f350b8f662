#!/usr/bin/env python
"""Build the 64x64 RGB photo dataset from Debian's wallpaper packages, offline (docs/photos.md).

    python scripts/make_photo_dataset.py                          # -> outputs/photos64/{photos,heldout}
    hf-vq train-tokenizer --config configs/vqgan_photos64_cpu.yaml --train_data_dir outputs/photos64/photos

Installs the packages with apt-get when run as root (else names the missing ones and stops), keeps only the
photographs (hf_vq.data.photos.looks_like_photograph plus the files reviewed by eye), and prints what it wrote.
"""

from __future__ import annotations

import argparse
import sys

from hf_vq.data.photos import (
    HELDOUT_PACKAGE,
    PHOTO_PACKAGES,
    PhotoDatasetError,
    build_photo_dataset,
    ensure_packages,
    list_package_images,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/photos64", help="where photos/, heldout/, manifest.json go")
    parser.add_argument("--packages", nargs="+", default=list(PHOTO_PACKAGES), help="Debian packages to read")
    parser.add_argument("--heldout_package", default=HELDOUT_PACKAGE, help="package kept out of train and test")
    parser.add_argument("--patch_size", type=int, default=64)
    parser.add_argument("--scales", type=int, nargs="+", default=[256, 384, 512], help="short sides to cut at")
    parser.add_argument("--stride", type=int, default=32, help="pixels between neighbouring patches")
    parser.add_argument("--test_fraction", type=float, default=0.25, help="share of photographs per scene in test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_install", action="store_true", help="never call apt-get; fail if packages are missing")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        ensure_packages(args.packages, install=not args.no_install)
        sources = [image for package in args.packages for image in list_package_images(package)]
        summary = build_photo_dataset(
            sources,
            args.output_dir,
            heldout_package=args.heldout_package,
            patch_size=args.patch_size,
            scales=args.scales,
            stride=args.stride,
            test_fraction=args.test_fraction,
            seed=args.seed,
        )
    except PhotoDatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for record in summary.sources:
        print(
            f"{'kept' if record.kept else 'skip'}  {record.package:28s} {record.name:38s} {record.reason}"
            + (f" -> {record.split}/{record.scene} ({record.patches} patches)" if record.kept else "")
        )
    print(f"photographs {summary.photo_counts}, patches {summary.patch_counts}")
    print(f"wrote {args.output_dir}/photos (train, test), {args.output_dir}/heldout (test), manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
