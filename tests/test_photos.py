"""The photo dataset builder (hf_vq/data/photos.py) on generated "photographs", drawings and gradients, and the
64x64 RGB photo tokenizer configs: they load, train a few steps and save a loadable tokenizer."""

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import yaml

from hf_vq.data import build_image_dataset
from hf_vq.data.photos import (
    PHOTO_PACKAGES,
    PhotoDatasetError,
    SourceImage,
    build_photo_dataset,
    ensure_packages,
    list_package_images,
    looks_like_photograph,
    missing_packages,
    split_photos,
)
from hf_vq.errors import ConfigError

from training_helpers import REPO, train, training_args

PHOTO_CONFIG = REPO / "configs" / "vqgan_photos64_cpu.yaml"
PHOTO_CONFIG_16 = REPO / "configs" / "vqgan_photos64_16x16_cpu.yaml"
# Generated sources: name -> (package, kind, scene). "texture" stands in for a photograph (grain everywhere).
GENERATED = {
    "rocks_a": ("pkg-main", "texture", "rough"),
    "rocks_b": ("pkg-main", "texture", "rough"),
    "rocks_c": ("pkg-main", "texture", "rough"),
    "leaves_a": ("pkg-main", "texture", "leafy"),
    "leaves_b": ("pkg-main", "texture", "leafy"),
    "logo": ("pkg-main", "drawing", None),
    "sunset_ramp": ("pkg-main", "gradient", None),
    "other_rocks": ("pkg-other", "texture", "rough"),
    "other_ramp": ("pkg-other", "gradient", None),
}
SCALES = (64, 96)


def make_image(kind: str, seed: int, size: tuple[int, int] = (150, 100)) -> PIL.Image.Image:
    """A texture (smoothed coloured noise plus grain, like a photograph's), a drawing (flat shapes on a flat
    ground, like a logo) or a gradient (a smooth colour ramp)."""
    rng = np.random.default_rng(seed)
    width, height = size
    if kind == "texture":
        coarse = rng.random((height // 10 + 1, width // 10 + 1, 3)) * 255
        base = np.asarray(PIL.Image.fromarray(coarse.astype(np.uint8)).resize(size, PIL.Image.Resampling.BICUBIC))
        pixels = base + rng.normal(0, 12, (height, width, 3))
    elif kind == "drawing":
        pixels = np.zeros((height, width, 3)) + rng.integers(0, 255, 3)
        pixels[height // 4 : height // 2, width // 5 : width // 2] = rng.integers(0, 255, 3)
        pixels[height // 2 :, width // 2 :] = rng.integers(0, 255, 3)
    else:
        ramp = np.linspace(0, 1, width)[None, :, None]
        pixels = 255 * (ramp * rng.random(3) + (1 - ramp) * rng.random(3)) * np.ones((height, 1, 1))
    return PIL.Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def generated_sources(tmp_path_factory) -> list[SourceImage]:
    folder = tmp_path_factory.mktemp("wallpapers")
    sources = []
    for seed, (name, (package, kind, _)) in enumerate(GENERATED.items()):
        path = folder / f"{name}.{'jpg' if kind == 'texture' else 'png'}"
        make_image(kind, seed).save(path)
        sources.append(SourceImage(package, path, name))
    return sources


def build_generated(sources: list[SourceImage], output: Path):
    scenes = {name: scene for name, (_, _, scene) in GENERATED.items() if scene}
    return build_photo_dataset(
        sources,
        output,
        heldout_package="pkg-other",
        scales=SCALES,
        stride=32,
        test_fraction=0.34,
        seed=0,
        scenes=scenes,
        reviewed_not_photographs={},
    )


@pytest.fixture(scope="module")
def built(generated_sources, tmp_path_factory):
    output = tmp_path_factory.mktemp("photos64")
    return output, build_generated(generated_sources, output)


def patch_sources(folder: Path) -> set[str]:
    """The source photograph of every patch under `folder` (file names are NAME_s{scale}_y{top}_x{left}.png)."""
    return {path.name.split("_s")[0] for path in folder.rglob("*.png")}


def test_the_heuristic_keeps_textures_and_skips_drawings_and_gradients(built):
    _, summary = built
    decisions = {record.name: record for record in summary.sources}
    assert {name for name, record in decisions.items() if not record.kept} == {"logo", "sunset_ramp", "other_ramp"}
    assert all("flat-pixel share" in decisions[name].reason for name in ("logo", "sunset_ramp", "other_ramp"))
    assert all(decisions[name].flat_share < 0.1 for name in GENERATED if GENERATED[name][1] == "texture")


def test_a_reviewed_file_is_skipped_even_when_it_passes_the_test(generated_sources, tmp_path):
    summary = build_photo_dataset(
        generated_sources[:3],
        tmp_path,
        heldout_package="none",
        scales=(64,),
        stride=64,
        scenes={},
        reviewed_not_photographs={"rocks_a": "a render"},
    )
    reasons = {record.name: record.reason for record in summary.sources}
    assert reasons == {"rocks_a": "reviewed by eye: a render", "rocks_b": "photograph", "rocks_c": "photograph"}
    assert patch_sources(tmp_path / "photos") == {"rocks_b", "rocks_c"}
    assert {path.parent.name for path in (tmp_path / "photos").rglob("*.png")} == {"other"}  # no scene named


def test_no_photograph_has_patches_in_two_splits(built):
    output, summary = built
    train, test = patch_sources(output / "photos" / "train"), patch_sources(output / "photos" / "test")
    heldout = patch_sources(output / "heldout" / "test")
    assert train and test and heldout
    assert not train & test and not (train | test) & heldout
    assert heldout == {"other_rocks"}  # the held-out package, and only it
    assert train | test == {"rocks_a", "rocks_b", "rocks_c", "leaves_a", "leaves_b"}
    assert summary.patch_counts == {
        split: len(list(folder.rglob("*.png")))
        for split, folder in (
            ("train", output / "photos" / "train"),
            ("test", output / "photos" / "test"),
            ("heldout", output / "heldout" / "test"),
        )
    }


def test_patches_are_64_pixel_rgb_with_scene_labels(built):
    output, _ = built
    for path in list(output.rglob("*.png"))[:20]:
        with PIL.Image.open(path) as patch:
            assert patch.size == (64, 64) and patch.mode == "RGB"
    for split in ("train", "test"):  # every scene with two photographs or more is in both splits
        dataset = build_image_dataset(train_data_dir=output / "photos", split=split)
        assert sorted(dataset.features["label"].names) == ["leafy", "rough"]
        assert set(dataset["label"]) == {0, 1}
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["settings"]["scales"] == list(SCALES)
    assert {record["name"] for record in manifest["sources"]} == set(GENERATED)


def test_the_same_sources_give_the_same_files(built, generated_sources, tmp_path):
    output, _ = built
    build_generated(generated_sources, tmp_path)
    files = sorted(path.relative_to(output) for path in output.rglob("*.png"))
    assert files == sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*.png"))
    assert all((output / name).read_bytes() == (tmp_path / name).read_bytes() for name in files[::7])


def test_the_split_is_seeded_and_keeps_every_scene_in_train():
    scenes = {f"photo_{index}": ("sea", "hill", "town")[index % 3] for index in range(12)} | {"lonely": "desert"}
    first = split_photos(scenes, test_fraction=0.25, seed=3)
    assert first == split_photos(scenes, test_fraction=0.25, seed=3)
    assert first != split_photos(scenes, test_fraction=0.25, seed=4)
    assert first["lonely"] == "train"  # a scene with one photograph cannot be in both splits
    for scene in ("sea", "hill", "town"):
        in_scene = sorted(split for name, split in first.items() if scenes[name] == scene)
        assert in_scene == ["test", "train", "train", "train"]


def test_the_photo_test_on_a_real_photograph_style_image_and_a_flat_one():
    assert looks_like_photograph(make_image("texture", seed=0))[0]
    assert not looks_like_photograph(make_image("gradient", seed=0))[0]
    assert not looks_like_photograph(make_image("drawing", seed=0))[0]


def test_missing_packages_are_named_with_the_command_to_install_them():
    with pytest.raises(PhotoDatasetError, match=r"hf-vq-no-such-wallpapers.*apt-get install hf-vq-no-such-wallpapers"):
        ensure_packages(["hf-vq-no-such-wallpapers"], install=False)


def test_the_script_names_missing_packages_and_fails(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_photo_dataset", REPO / "scripts" / "make_photo_dataset.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = ["--packages", "hf-vq-no-such-wallpapers", "--no_install", "--output_dir", str(tmp_path)]
    assert script.main(argv) == 1
    assert "hf-vq-no-such-wallpapers are not installed" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(bool(missing_packages(PHOTO_PACKAGES)), reason="the wallpaper packages are not installed")
def test_installed_packages_give_one_file_per_picture():
    plasma = {image.name: image.path for image in list_package_images("plasma-workspace-wallpapers")}
    assert len(plasma) == 30 and plasma["Path"].name == "2560x1600.jpg"  # the largest of its 12 sizes
    assert all("images_dark" not in str(path) and path.name != "screenshot.png" for path in plasma.values())
    lomiri = {image.name for image in list_package_images("lomiri-wallpapers")}
    assert {"Bridge_by_Sander_Klootwijk", "Kleiber_by_Lukas_Baubkus"} <= lomiri  # both parts of the metapackage


def test_a_package_with_every_photograph_held_out_is_a_clear_error(generated_sources, tmp_path):
    with pytest.raises(PhotoDatasetError, match="no photograph left for train/test.*--heldout_package"):
        build_photo_dataset(generated_sources[:2], tmp_path, heldout_package="pkg-main", scales=(64,), scenes={})


def test_both_photo_configs_load_and_differ_only_in_the_token_grid():
    sections = [yaml.safe_load(path.read_text()) for path in (PHOTO_CONFIG, PHOTO_CONFIG_16)]
    for section in sections:
        section["model"].pop("block_out_channels")
        section["training"].pop("output_dir")
    assert sections[0] == sections[1]
    for path, grid in ((PHOTO_CONFIG, 8), (PHOTO_CONFIG_16, 16)):
        args = training_args(Path("unused"), config=str(path), train_data_dir=str(REPO))
        assert args.model_config["image_size"] // 2 ** (len(args.model_config["block_out_channels"]) - 1) == grid
        assert args.model_config["num_channels"] == 3 and args.model_config["sync_nu"] > 0


def test_a_resolution_the_downsampling_factor_does_not_divide_is_a_clear_error():
    with pytest.raises(ConfigError, match="--resolution 60.*downsampling factor 8"):
        training_args(Path("unused"), config=str(PHOTO_CONFIG), train_data_dir=str(REPO), resolution=60)
    model = yaml.safe_load(PHOTO_CONFIG.read_text())["model"] | {"image_size": 60}
    with pytest.raises(ConfigError, match="image_size=60 is not divisible by the downsampling factor 8"):
        training_args(Path("unused"), config=str(PHOTO_CONFIG), train_data_dir=str(REPO), model_config=model)


def test_the_photo_config_trains_on_the_patches_and_saves_a_loadable_tokenizer(built, tmp_path):
    from hf_vq.models.vqgan import VQGANImageProcessor, VQGANModel

    output, _ = built
    tiny = yaml.safe_load(PHOTO_CONFIG.read_text())["model"] | {
        "block_out_channels": [8, 8, 16, 16],
        "norm_num_groups": 8,
        "latent_channels": 8,
        "codebook_size": 16,
    }
    result = train(
        tmp_path / "run",
        config=str(PHOTO_CONFIG),
        model_config=tiny,
        train_data_dir=str(output / "photos"),
        max_train_steps=2,
        train_batch_size=4,
        eval_batch_size=8,
        max_eval_samples=8,
        num_sample_images=4,
        checkpointing_steps=100,
        lr_warmup_steps=0,
        logging_steps=1,
    )
    assert result["global_step"] == 2
    model = VQGANModel.from_pretrained(tmp_path / "run").eval()
    processor = VQGANImageProcessor.from_pretrained(tmp_path / "run")
    patch = next((output / "photos" / "test").rglob("*.png"))
    pixel_values = processor(PIL.Image.open(patch), return_tensors="pt").pixel_values
    assert pixel_values.shape == (1, 3, 64, 64)
    with torch.no_grad():
        assert model.encode(pixel_values).image_tokens.shape == (1, 8, 8)
