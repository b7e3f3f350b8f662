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


@pytest.fixture(scope="module")
def tiny_photo_tokenizer(built, tmp_path_factory) -> tuple[Path, dict]:
    """The photo config at a tiny width, trained 2 steps on the generated patches: its folder and the run's result."""
    output, _ = built
    run_dir = tmp_path_factory.mktemp("photo-tokenizer") / "run"
    tiny = yaml.safe_load(PHOTO_CONFIG.read_text())["model"] | {
        "block_out_channels": [8, 8, 16, 16],
        "norm_num_groups": 8,
        "latent_channels": 8,
        "codebook_size": 16,
    }
    result = train(
        run_dir,
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
    return run_dir, result


def test_the_photo_config_trains_on_the_patches_and_saves_a_loadable_tokenizer(built, tiny_photo_tokenizer):
    from hf_vq.models.vqgan import VQGANImageProcessor, VQGANModel

    output, _ = built
    run_dir, result = tiny_photo_tokenizer
    assert result["global_step"] == 2
    model = VQGANModel.from_pretrained(run_dir).eval()
    processor = VQGANImageProcessor.from_pretrained(run_dir)
    patch = next((output / "photos" / "test").rglob("*.png"))
    pixel_values = processor(PIL.Image.open(patch), return_tensors="pt").pixel_values
    assert pixel_values.shape == (1, 3, 64, 64)
    with torch.no_grad():
        assert model.encode(pixel_values).image_tokens.shape == (1, 8, 8)


def test_the_study_reads_the_photo_patches_with_scene_labels(built):
    from hf_vq.experiments.datasets import load_dataset

    output, _ = built
    data = load_dataset("photos", str(output / "photos"))
    assert data.in_channels == 3 and data.image_size == 64
    for images, labels, split in (
        (data.train_images, data.train_labels, "train"),
        (data.test_images, data.test_labels, "test"),
    ):
        paths = sorted((output / "photos" / split).glob("*/*.png"))
        assert len(images) == len(labels) == len(paths)
        pixels = {path: torch.from_numpy(np.asarray(PIL.Image.open(path), dtype=np.float32)) for path in paths}
        for image, label in zip(images, labels):  # every patch once, with its scene's index in sorted order
            (path,) = [
                path for path, patch in pixels.items() if torch.equal(patch.permute(2, 0, 1) / 127.5 - 1, image)
            ]
            assert label == ["leafy", "rough"].index(path.parent.name)
            del pixels[path]
        # Shuffled (the folders are sorted by scene): a first-N cut, as the study's --eval_size takes, has both scenes.
        assert set(labels[: len(labels) // 3].tolist()) == {0, 1}
        assert torch.equal(
            load_dataset("photos", str(output / "photos")).train_images, data.train_images
        )  # fixed order


def test_the_study_without_photo_patches_names_the_command_that_builds_them(tmp_path):
    from hf_vq.data import DataNotFoundError
    from hf_vq.experiments.compare import main
    from hf_vq.experiments.datasets import load_dataset

    with pytest.raises(DataNotFoundError, match="no train/<scene>/.* or test/.*make_photo_dataset.py"):
        load_dataset("photos", str(tmp_path))
    with pytest.raises(SystemExit, match="make_photo_dataset.py"):
        main(
            [
                "--quick",
                "--arch",
                "vqgan",
                "--dataset",
                "photos",
                "--data_dir",
                str(tmp_path),
                "--output_dir",
                str(tmp_path),
            ]
        )


def test_photo_patches_of_two_sizes_are_a_clear_error(built, tmp_path):
    import shutil

    from hf_vq.experiments.datasets import load_dataset

    output, _ = built
    shutil.copytree(output / "photos", tmp_path / "photos")
    PIL.Image.new("RGB", (32, 32)).save(tmp_path / "photos" / "test" / "rough" / "small.png")
    with pytest.raises(ConfigError, match=r"several sizes .*\(32, 32\), \(64, 64\).*--patch_size"):
        load_dataset("photos", str(tmp_path / "photos"))


def test_the_study_trains_the_photo_tokenizer_model_on_the_photo_patches(built, tmp_path):
    from hf_vq.experiments.compare import main
    from hf_vq.experiments.methods import method_defaults
    from hf_vq.experiments.reproduce import configure
    from hf_vq.experiments.vqgan_backbone import vqgan_config

    output, _ = built
    # The backbone on --dataset photos is the photo config's model with the method's quantizer, at 64 px RGB.
    photo_model = yaml.safe_load(PHOTO_CONFIG.read_text())["model"]
    config = vqgan_config(method_defaults("fsq", configure("vqgan", "photos", quick=False)), "fsq", num_channels=3)
    assert config.image_size == 64 and config.num_channels == 3 and config.quantizer_type == "fsq"
    for name in ("block_out_channels", "latent_channels", "norm_num_groups", "reconstruction_loss_type"):
        assert getattr(config, name) == photo_model[name], name
    assert config.codebook_size != photo_model["codebook_size"] and not config.alternating  # the method's quantizer
    result = main(
        ["--quick", "--arch", "vqgan", "--methods", "baseline", "--dataset", "photos"]
        + ["--data_dir", str(output / "photos"), "--output_dir", str(tmp_path)]
    )
    (run,) = result["runs"]
    assert run["dataset"] == "photos" and run["steps"] == 4 and np.isfinite(run["metrics"]["mse"])
    assert run["defaults"]["model_options"]["image_size"] == 64  # --quick keeps the photo side (a smaller model)
    assert (tmp_path / "compare_photos_steps4.md").is_file()


def test_the_photo_evaluation_script_compares_tokenizers_on_both_packages(built, tiny_photo_tokenizer, tmp_path):
    import importlib.util
    import shutil

    output, _ = built
    run_dir, _ = tiny_photo_tokenizer
    spec = importlib.util.spec_from_file_location("evaluate_photo", REPO / "scripts" / "evaluate_photo_tokenizers.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    data_dirs = [str(output / "photos" / "test"), str(output / "heldout" / "test")]
    flags = ["--data_dirs", *data_dirs, "--num_images", "6", "--num_grid_images", "3", "--output_dir", str(tmp_path)]
    copy = shutil.copytree(run_dir, tmp_path / "copy")  # a second tokenizer: the same weights, so the same metrics
    assert script.main(["--model_dirs", str(run_dir), str(copy), *flags]) == 0
    results = json.loads((tmp_path / "metrics.json").read_text())["results"]
    assert list(results) == data_dirs
    for by_model in results.values():
        first, second = by_model.values()
        assert first == second and first["images"] == 6 and 0 < first["codebook_usage"] <= 1 and first["psnr"] > 0
    with PIL.Image.open(tmp_path / "grid_heldout_test.png") as grid:  # originals, then a row per model
        assert grid.size == (3 * 64 + 4 * 2, 3 * 64 + 4 * 2)
    assert script.main(["--model_dirs", str(tmp_path), *flags]) == 1  # not a tokenizer: one clear line
    (tmp_path / "empty").mkdir()
    assert script.main(["--model_dirs", str(run_dir), "--data_dirs", str(tmp_path / "empty")]) == 1  # no patches


def dry_run_commands(target: str, **variables: str) -> list[list[str]]:
    """The commands `make -n TARGET VAR=VALUE...` would run (echo lines left out), each split as the shell would."""
    import shlex
    import subprocess

    flags = [f"{name}={value}" for name, value in variables.items()]
    listing = subprocess.run(
        ["make", "-n", "--no-print-directory", target, *flags], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    lines = listing.replace("\\\n", " ").splitlines()
    return [shlex.split(line) for line in lines if line.strip() and not line.startswith("echo")]


def load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_make_demo_photos_runs_the_photo_chain_with_commands_that_parse(built, tiny_photo_tokenizer, tmp_path):
    from hf_vq.training.args import CLASSIFIER_COMMAND, PRIOR_COMMAND, TOKENIZER_COMMAND, parse_args

    output, _ = built
    flags = {"PY": "python", "PHOTOS_DATA": str(output), "PHOTOS_OUT": str(tmp_path), "PHOTOS_PRIOR_STEPS": "7"}
    commands = dry_run_commands("photos-chain", **flags)
    # Each stage is skipped once its result exists: the dataset's manifest.json (so the chain above starts at the
    # tokenizer; without it, the dataset comes first), the tokenizer's metrics.json.
    assert dry_run_commands("photos-chain", **flags | {"PHOTOS_DATA": str(tmp_path / "none")})[0][1] == (
        "scripts/make_photo_dataset.py"
    )
    (tmp_path / "tokenizer").symlink_to(tiny_photo_tokenizer[0])
    assert [command[3] for command in dry_run_commands("photos-chain", **flags) if "-m" in command] == [
        "train-classifier",
        "train-classifier",
        "train-prior",
    ]
    commands_by_subcommand = {"train-tokenizer": TOKENIZER_COMMAND, "train-classifier": CLASSIFIER_COMMAND}
    commands_by_subcommand["train-prior"] = PRIOR_COMMAND
    stages = []
    for command in commands:
        assert command[0] == "python", command
        if command[1:3] == ["-m", "hf_vq.cli"]:
            config = parse_args(commands_by_subcommand[command[3]], command[4:])  # flags and YAML checked together
            stages.append((command[3], Path(config.output_dir).name, config.max_train_steps))
        else:
            script = load_script(Path(command[1]).stem)
            stages.append((command[1], Path(script.parse_args(command[2:]).output_dir).name, None))
    tokenizer_steps = yaml.safe_load(PHOTO_CONFIG.read_text())["training"]["max_train_steps"]
    classifier_steps = yaml.safe_load((REPO / "configs" / "token_vit_photos64.yaml").read_text())["training"]
    assert stages == [
        ("train-tokenizer", "tokenizer", tokenizer_steps),
        ("scripts/evaluate_photo_tokenizers.py", "tokenizer-eval", None),
        ("train-classifier", "token_vit", classifier_steps["max_train_steps"]),
        ("train-classifier", "pixel_vit", classifier_steps["max_train_steps"]),
        ("train-prior", "prior", 7),
    ]


def test_make_demo_photos_trains_the_tokenizer_config_it_is_given(tmp_path):
    from hf_vq.models.vqgan import VQGANConfig
    from hf_vq.training.args import TOKENIZER_COMMAND, parse_args

    data = tmp_path / "photos64"
    (data / "photos" / "train" / "plants").mkdir(parents=True)
    (data / "manifest.json").write_text("{}")  # the dataset stage is done: the chain starts at the tokenizer
    flags = {"PY": "python", "PHOTOS_DATA": str(data), "PHOTOS_OUT": str(tmp_path / "chain")}
    grids = {}
    for config_file in (None, "configs/vqgan_photos64_16x16_cpu.yaml"):
        chosen = {} if config_file is None else {"PHOTOS_TOKENIZER_CONFIG": config_file}
        tokenizer_stage = dry_run_commands("photos-chain", **flags | chosen)[0]
        assert tokenizer_stage[3] == "train-tokenizer", tokenizer_stage
        config = parse_args(TOKENIZER_COMMAND, tokenizer_stage[4:])
        grids[config_file] = VQGANConfig(**config.model_config).token_grid_size
    assert grids == {None: (8, 8), "configs/vqgan_photos64_16x16_cpu.yaml": (16, 16)}
