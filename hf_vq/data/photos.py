"""A real-photo RGB dataset built offline from the photographs in Debian's wallpaper packages.

`build_photo_dataset` cuts 64x64 RGB patches from photographs and writes two image folders that
`build_image_dataset(train_data_dir=...)` reads:

    OUTPUT/photos/train/<scene>/*.png     patches of the training photographs
    OUTPUT/photos/test/<scene>/*.png      patches of other photographs of the same package (no photo in both)
    OUTPUT/heldout/test/<scene>/*.png     patches of the photographs of another package (generalisation checks)
    OUTPUT/manifest.json                  every file looked at: package, decision and why, measurement, scene,
                                          split, patch count; the settings and the totals

The class of a patch is the scene type of its photograph (`SCENES`), not the photograph itself: a class per
photograph could not appear in both splits once no photograph may. Photographs, not drawings: a file is kept when
`looks_like_photograph` says so (few perfectly flat pixels) and it is not in `REVIEWED_NOT_PHOTOGRAPHS` (the
textured drawings that pass that test, found by looking at every file). docs/photos.md lists the outcome.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image

from ..errors import HfVqUserError

# lomiri-wallpapers is a metapackage: its images ship in the two versioned packages it depends on.
PACKAGE_PARTS = {
    "lomiri-wallpapers": ("lomiri-wallpapers", "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04"),
}
TRAIN_PACKAGE = "lomiri-wallpapers"
HELDOUT_PACKAGE = "plasma-workspace-wallpapers"
# Scanned too: neither holds a photograph (docs/photos.md), which checks the photo test on 28 more drawings.
OTHER_PACKAGES = ("ukui-wallpapers", "gnome-backgrounds")
PHOTO_PACKAGES = (TRAIN_PACKAGE, HELDOUT_PACKAGE, *OTHER_PACKAGES)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

# The photo test works on the image resized so that its short side has this many pixels: large enough to keep a
# photograph's texture, small enough that the JPEG noise of a flat drawing is averaged away.
ANALYSIS_SIDE = 384
# A pixel is "flat" when its horizontal plus vertical grey-level step to the next pixel is below one level (of 255).
FLAT_STEP = 1.0
# Photographs have fewer flat pixels than this (0.00-0.29 measured on the 26 in the packages), flat drawings,
# gradients and logos more (0.31-1.00); textured drawings overlap the photographs (0.03-0.28), hence the list below.
MAX_FLAT_SHARE = 0.30

# Files that pass the flat-pixel test but are drawings, renders or paintings (looked at one by one): textures of
# flat tiles with shaded edges, vector art with grain. Keyed by `SourceImage.name`.
REVIEWED_NOT_PHOTOGRAPHS = {
    "Infinite-Sea_by_Aury88": "digital painting",
    "string": "3D render",
    "Autumn": "painting",
    "Honeywave": "vector drawing",
    "Patak": "vector drawing",
    "SafeLanding": "illustration",
    "Shell": "vector drawing",
    "Volna": "vector drawing",
    "grid-d": "tiled pattern",
    "grid-l": "tiled pattern",
    "licorice-d": "tiled pattern",
    "licorice-l": "tiled pattern",
    "truchet-d": "tiled pattern",
    "truchet-l": "tiled pattern",
    "wood-d": "render",
    "wood-l": "render",
    "Kay": "vector drawing",
    "symbolic-d": "tiled pattern",
}
# The scene type of each photograph (the class of its patches), by looking at it.
SCENES = {
    # lomiri-wallpapers (its parts lomiri-wallpapers-16.04 and -20.04)
    "Bridge_by_Sander_Klootwijk": "landscape",
    "aitzgorri_by_Aitzol_Berasategi": "landscape",
    "picosdeeuropa_by_Aitzol_Berasategi": "landscape",
    "sunset_by_Aitzol_Berasategi": "landscape",
    "Dragonfly_by_Bolly": "plants",
    "seeding_by_Clements_Engelhardt": "plants",
    "life_by_Aitzol_Berasategi": "plants",
    "Picture_0B_by_freespace": "objects",
    "Picture_1A_by_freespace": "objects",
    "Wine_by_Jakkub_Mede": "objects",
    "free_by_Peter_Nerlich": "objects",
    "greentock_by_Peter_Nerlich": "objects",
    "analogpattern_by_Peter_Nerlich": "objects",
    "Kleiber_by_Lukas_Baubkus": "animals",
    "friends_by_Aitzol_Berasategi": "animals",
    # plasma-workspace-wallpapers
    "BytheWater": "water",
    "ColdRipple": "water",
    "DarkestHour": "water",
    "EveningGlow": "water",
    "summer_1am": "water",
    "FallenLeaf": "plants",
    "OneStandsOut": "plants",
    "Path": "plants",
    "ColorfulCups": "objects",
    "Grey": "objects",
    "Kite": "landscape",
}
UNSORTED_SCENE = "other"  # a photograph that SCENES does not name (a newer package version)


class PhotoDatasetError(HfVqUserError, RuntimeError):
    """The photo dataset cannot be built: packages missing, or no photograph left for a split."""


@dataclass(frozen=True)
class SourceImage:
    """One image file of a wallpaper package; `name` identifies the picture (file stem, or a Plasma folder)."""

    package: str
    path: Path
    name: str


@dataclass
class SourceRecord:
    """What the builder decided about one source image (a row of manifest.json)."""

    package: str
    path: str
    name: str
    flat_share: float
    kept: bool
    reason: str
    scene: str | None = None
    split: str | None = None
    patches: int = 0


@dataclass
class PhotoDatasetSummary:
    """The outcome of `build_photo_dataset`: what was written where, and what was looked at."""

    output_dir: str
    patch_counts: dict[str, int]
    photo_counts: dict[str, int]
    sources: list[SourceRecord] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def package_parts(package: str) -> tuple[str, ...]:
    """The Debian packages whose files make up `package` (itself, plus the parts of a metapackage)."""
    return PACKAGE_PARTS.get(package, (package,))


def missing_packages(packages: Iterable[str]) -> list[str]:
    """The packages (and metapackage parts) that dpkg does not list as installed."""
    wanted = [part for package in packages for part in package_parts(package)]
    return [package for package in wanted if not _is_installed(package)]


def _is_installed(package: str) -> bool:
    if shutil.which("dpkg-query") is None:
        return False
    result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False)
    return result.returncode == 0 and result.stdout.strip().endswith("installed")


def ensure_packages(packages: Sequence[str], install: bool = True) -> None:
    """Install the missing wallpaper packages with apt-get when run as root, else raise naming them."""
    missing = missing_packages(packages)
    if not missing:
        return
    can_install = install and shutil.which("apt-get") is not None and hasattr(os, "geteuid") and os.geteuid() == 0
    if can_install:
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install_command = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
        for command in (["apt-get", "update", "-qq"], install_command):
            subprocess.run(command, capture_output=True, env=environment, check=False)
        missing = missing_packages(packages)
        if not missing:
            return
    how = "apt-get could not install them" if can_install else "installing them needs root and apt-get"
    raise PhotoDatasetError(
        f"the Debian packages {', '.join(missing)} are not installed and {how}: run "
        f"`sudo apt-get install {' '.join(missing)}` (Debian or Ubuntu), then run this command again"
    )


def list_package_images(package: str) -> list[SourceImage]:
    """The wallpapers that `package` installs (`dpkg -L`), one file per picture.

    A Plasma wallpaper is a folder with the same picture at many sizes (`contents/images/WxH.ext`): the largest
    one stands for it, and its dark variant (`images_dark`) and screenshot are left out, being the same scene.
    """
    files: list[Path] = []
    for part in package_parts(package):
        listing = subprocess.run(["dpkg", "-L", part], capture_output=True, text=True, check=False).stdout
        files += [Path(line) for line in listing.splitlines() if line.lower().endswith(IMAGE_SUFFIXES)]
    singles = [SourceImage(package, path, path.stem) for path in files if "contents" not in path.parts]
    plasma: dict[str, list[Path]] = {}
    for path in files:
        if path.parent.name == "images" and path.parent.parent.name == "contents":
            plasma.setdefault(path.parents[2].name, []).append(path)
    singles += [SourceImage(package, max(paths, key=_pixel_count), name) for name, paths in plasma.items()]
    return sorted(set(singles), key=lambda source: (source.name, str(source.path)))


def _pixel_count(path: Path) -> int:
    with PIL.Image.open(path) as image:
        return image.width * image.height


def load_rgb(path: Path, short_side: int | None = None) -> PIL.Image.Image:
    """An image file as RGB; with `short_side`, JPEG decoding at a reduced size first (fast for 6000 px photos)."""
    with PIL.Image.open(path) as image:
        if short_side is not None:
            scale = short_side / min(image.size)
            image.draft("RGB", (round(image.width * scale), round(image.height * scale)))
        return image.convert("RGB")


def resize_short_side(image: PIL.Image.Image, side: int) -> PIL.Image.Image:
    scale = side / min(image.size)
    size = (max(side, round(image.width * scale)), max(side, round(image.height * scale)))
    return image.resize(size, PIL.Image.Resampling.LANCZOS, reducing_gap=3.0)


def flat_share(image: PIL.Image.Image) -> float:
    """The share of pixels whose grey level steps by less than `FLAT_STEP` to its right and lower neighbours,
    measured at `ANALYSIS_SIDE`: high for drawings, gradients and logos (flat fills, smooth ramps), low for
    photographs (texture, grain and sensor noise make almost every pixel differ from its neighbours)."""
    grey = np.asarray(resize_short_side(image.convert("RGB"), ANALYSIS_SIDE).convert("L"), dtype=np.float32)
    step = np.abs(np.diff(grey, axis=1))[:-1] + np.abs(np.diff(grey, axis=0))[:, :-1]
    return float((step < FLAT_STEP).mean())


def looks_like_photograph(image: PIL.Image.Image) -> tuple[bool, float]:
    """(whether `image` passes the photo test, its flat-pixel share); see `flat_share` and `MAX_FLAT_SHARE`."""
    share = flat_share(image)
    return share <= MAX_FLAT_SHARE, share


def cut_patches(
    image: PIL.Image.Image, patch_size: int, scales: Sequence[int], stride: int, min_std: float
) -> list[tuple[str, PIL.Image.Image]]:
    """Square patches on a grid of `stride` pixels, from the image resized to each short side in `scales`.

    A patch tagged `s{scale}_y{top}_x{left}`; featureless ones (grey-level standard deviation under `min_std`, such
    as clear sky or a black border) are left out.
    """
    patches = []
    for scale in scales:
        if scale < patch_size:
            raise ValueError(f"every scale must be at least patch_size={patch_size} pixels, got {scale}")
        resized = np.asarray(resize_short_side(image, scale))
        height, width = resized.shape[:2]
        for top in range(0, height - patch_size + 1, stride):
            for left in range(0, width - patch_size + 1, stride):
                patch = resized[top : top + patch_size, left : left + patch_size]
                if patch.mean(axis=2).std() >= min_std:
                    patches.append((f"s{scale}_y{top}_x{left}", PIL.Image.fromarray(patch)))
    return patches


def split_photos(scenes: dict[str, str], test_fraction: float, seed: int) -> dict[str, str]:
    """Each photograph's split ("train" or "test"), drawn per scene so both splits hold every scene that has
    two photographs or more (a scene with one goes to train). Seeded: the same inputs give the same split."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    splits = {}
    for scene in sorted(set(scenes.values())):
        names = sorted(name for name, its_scene in scenes.items() if its_scene == scene)
        order = rng.permutation(len(names))
        test_count = 0 if len(names) < 2 else min(len(names) - 1, max(1, round(test_fraction * len(names))))
        for rank, index in enumerate(order):
            splits[names[index]] = "test" if rank < test_count else "train"
    return splits


def build_photo_dataset(
    sources: Sequence[SourceImage],
    output_dir: str | os.PathLike,
    heldout_package: str = HELDOUT_PACKAGE,
    patch_size: int = 64,
    scales: Sequence[int] = (256, 384, 512),
    stride: int = 32,
    min_std: float = 4.0,
    test_fraction: float = 0.25,
    seed: int = 0,
    scenes: dict[str, str] | None = None,
    reviewed_not_photographs: dict[str, str] | None = None,
) -> PhotoDatasetSummary:
    """Write the photo image folders (see the module docstring) from `sources` and return what was done.

    Photographs of `heldout_package` go to `heldout/test`; the others are split into `photos/train` and
    `photos/test` by photograph (`split_photos`). `scenes` and `reviewed_not_photographs` default to the
    tables of this module (`SCENES`, `REVIEWED_NOT_PHOTOGRAPHS`); a test passes its own.

    Example:

    ```python
    >>> from hf_vq.data.photos import PHOTO_PACKAGES, build_photo_dataset, ensure_packages, list_package_images
    >>> ensure_packages(PHOTO_PACKAGES)  # doctest: +SKIP
    >>> sources = [image for package in PHOTO_PACKAGES for image in list_package_images(package)]  # doctest: +SKIP
    >>> summary = build_photo_dataset(sources, "outputs/photos64")  # doctest: +SKIP
    >>> summary.patch_counts  # doctest: +SKIP
    {'train': ..., 'test': ..., 'heldout': ...}

    ```
    """
    scenes = SCENES if scenes is None else scenes
    reviewed = REVIEWED_NOT_PHOTOGRAPHS if reviewed_not_photographs is None else reviewed_not_photographs
    output = Path(output_dir)
    records = [_judge(source, reviewed, scenes) for source in sources]
    kept = [(source, record) for source, record in zip(sources, records, strict=True) if record.kept]
    _assign_splits(kept, heldout_package, test_fraction, seed)
    for folder in ("photos", "heldout"):
        shutil.rmtree(output / folder, ignore_errors=True)  # a rebuild never mixes with an earlier one
    for source, record in kept:
        image = load_rgb(source.path, short_side=max(scales))
        root = output / ("heldout" if record.split == "heldout" else "photos")
        folder = root / ("test" if record.split == "heldout" else record.split) / record.scene
        folder.mkdir(parents=True, exist_ok=True)
        patches = cut_patches(image, patch_size, scales, stride, min_std)
        for tag, patch in patches:
            patch.save(folder / f"{record.name}_{tag}.png")
        record.patches = len(patches)
    summary = _summarise(output, records)
    settings = {
        "patch_size": patch_size,
        "scales": list(scales),
        "stride": stride,
        "min_std": min_std,
        "test_fraction": test_fraction,
        "seed": seed,
        "heldout_package": heldout_package,
    }
    (output / "manifest.json").write_text(json.dumps({"settings": settings, **summary.to_json()}, indent=1) + "\n")
    return summary


def _judge(source: SourceImage, reviewed: dict[str, str], scenes: dict[str, str]) -> SourceRecord:
    passes, share = looks_like_photograph(load_rgb(source.path, short_side=ANALYSIS_SIDE))
    if not passes:
        reason = f"flat-pixel share {share:.2f} > {MAX_FLAT_SHARE}: drawing, gradient or logo"
    elif source.name in reviewed:
        reason = f"reviewed by eye: {reviewed[source.name]}"
    else:
        reason = "photograph"
    kept = reason == "photograph"
    scene = scenes.get(source.name, UNSORTED_SCENE) if kept else None
    return SourceRecord(source.package, str(source.path), source.name, round(share, 4), kept, reason, scene)


def _assign_splits(
    kept: list[tuple[SourceImage, SourceRecord]], heldout_package: str, test_fraction: float, seed: int
) -> None:
    """Set each kept record's split: "heldout" for `heldout_package`, else train or test by `split_photos`."""
    names = [record.name for _, record in kept]
    if len(set(names)) != len(names):
        raise PhotoDatasetError(f"two source photographs share a name, so a split could not tell them apart: {names}")
    for _, record in kept:
        if record.package == heldout_package:
            record.split = "heldout"
    in_main = {record.name: record.scene for _, record in kept if record.split is None}
    if not in_main:
        packages = sorted({record.package for _, record in kept})
        raise PhotoDatasetError(
            f"no photograph left for train/test outside the held-out package {heldout_package!r} (photographs came "
            f"from {packages or 'no package'}): choose another --heldout_package or add packages"
        )
    splits = split_photos(in_main, test_fraction, seed)
    for _, record in kept:
        record.split = record.split or splits[record.name]


def _summarise(output: Path, records: list[SourceRecord]) -> PhotoDatasetSummary:
    splits = ("train", "test", "heldout")
    patch_counts = {split: sum(record.patches for record in records if record.split == split) for split in splits}
    photo_counts = {split: sum(record.split == split for record in records) for split in splits}
    return PhotoDatasetSummary(str(output), patch_counts, photo_counts, records)
