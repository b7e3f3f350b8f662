"""Issue 25: unit tests of the Hub's local-path stripping and upload allow-list, the tokenizer fingerprint, the card's
helpers, and every entry point that decodes images (fast: no server, no training). Each test fails on a plausible
one-line bug of the code it names (scripts/mutants.toml)."""

import io
import json
import os
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import save_file

from hf_vq.data import ImageTransform, build_image_dataset, decode_image
from hf_vq.data.photos import split_photos
from hf_vq.errors import run_reporting_user_errors
from hf_vq.hub.errors import HubPushError, InvalidRepoIdError
from hf_vq.hub.identity import local_tokenizer_of, tokenizer_fingerprint
from hf_vq.hub.local_paths import check_no_local_paths, is_local_path, rewrite_json_without_local_paths
from hf_vq.hub.local_paths import without_local_paths
from hf_vq.hub.model_card import measured_metrics, merge_dependent_entries
from hf_vq.hub.model_folder import ModelFolder
from hf_vq.hub.model_set import _check_distinct, _member
from hf_vq.hub.push import check_repo_id

# ------------------------------------------------------------------------------------------------ local paths


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/data/fashion-mnist", "fashion-mnist"),  # absolute
        ("/data/fashion-mnist/", "fashion-mnist"),
        ("~/fashion-mnist", "fashion-mnist"),  # home
        ("D:/data/fashion-mnist", "fashion-mnist"),  # Windows, forward slashes
        ("\\\\server\\share\\fashion-mnist", "fashion-mnist"),  # Windows UNC
        ("..\\data\\fashion-mnist", "fashion-mnist"),
        ("runs/a/b", "b"),  # relative, more parts than a Hub id
        ("/", "/"),  # the root is no folder of the machine worth hiding
        ("hf://datasets/org/data", "hf://datasets/org/data"),  # URLs are kept
    ],
)
def test_every_kind_of_local_path_is_reduced_to_its_name_at_any_depth(value, expected):
    record = {"a": value, "nested": [[{"b": value}], {"c": [value]}]}
    assert without_local_paths(record) == {"a": expected, "nested": [[{"b": expected}], {"c": [expected]}]}
    assert is_local_path(value) == (value != expected)


def test_a_list_under_a_path_field_is_reduced_item_by_item():
    record = {"train_data_dirs": ["images/train", "images/test"], "model": ["org/name"]}
    assert without_local_paths(record) == {"train_data_dirs": ["train", "test"], "model": ["org/name"]}


def test_a_rewritten_record_never_writes_through_a_hard_link_to_the_users_file(tmp_path):
    user_file, staged = tmp_path / "training_config.json", tmp_path / "staged.json"
    user_file.write_text(json.dumps({"output_dir": "/home/me/runs/tok"}))
    os.link(user_file, staged)  # the staging folder hard-links the user's files
    rewrite_json_without_local_paths(staged, {}, {"extra": 1})
    assert json.loads(staged.read_text()) == {"output_dir": "tok", "extra": 1}
    assert json.loads(user_file.read_text()) == {"output_dir": "/home/me/runs/tok"}


def test_the_final_scan_refuses_a_text_file_naming_the_home_folder_and_skips_weights(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    save_file({"x": torch.zeros(1)}, staging / "model.safetensors", metadata={"note": str(Path.home() / "x")})
    check_no_local_paths(staging, [])  # binary files are not text: never scanned
    (staging / "README.md").write_text(f"trained in {Path.home() / 'runs'}")
    with pytest.raises(HubPushError, match=r"README.md contains"):
        check_no_local_paths(staging, [])


# ------------------------------------------------------------------------------------------------ the allow-list


def test_the_push_shares_allow_listed_files_indexed_shards_and_code_only(tmp_path):
    index = {
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
            "c": "stray.bin",
        }
    }
    files = {
        "config.json": "{}",
        "model.safetensors.index.json": json.dumps(index),
        "model-00001-of-00002.safetensors": "w",
        "model-00002-of-00002.safetensors": "w",
        "model-00003-of-00003.safetensors": "an older shard no index names",
        "stray.bin": "pickle",
        "modeling_x.py": "code",
        ".hidden.py": "secret",
        "README.md": "a card the push replaces",
        "notes.txt": "mine",
        "samples.png": "png",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "config.json").write_text("{}")
    shared = ModelFolder(tmp_path, config={}).files_to_share()
    assert [str(path) for path in shared] == [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "modeling_x.py",
        "samples.png",
    ]


# ------------------------------------------------------------------------------------------------ tokenizer identity


def test_the_tokenizer_fingerprint_ignores_bookkeeping_and_sees_shapes(tmp_path):
    def fingerprint(name: str, config: dict, tensor: torch.Tensor) -> dict:
        (tmp_path / f"{name}.json").write_text(json.dumps(config))
        save_file({"codebook": tensor}, tmp_path / f"{name}.safetensors")
        return tokenizer_fingerprint(tmp_path / f"{name}.json", [tmp_path / f"{name}.safetensors"])

    values = torch.arange(6.0)
    base = fingerprint("base", {"codebook_size": 6, "transformers_version": "5.0"}, values.reshape(2, 3))
    saved_elsewhere = {
        "codebook_size": 6,
        "_name_or_path": "/tmp/x",
        "dtype": "float32",
        "transformers_version": "5.1",
    }
    assert fingerprint("elsewhere", saved_elsewhere, values.reshape(2, 3)) == base
    reshaped = fingerprint("reshaped", {"codebook_size": 6}, values.reshape(3, 2))
    assert reshaped["config"] == base["config"] and reshaped["weights"] != base["weights"]
    assert fingerprint("other", {"codebook_size": 7}, values.reshape(2, 3))["config"] != base["config"]


def test_a_pipelines_own_tokenizer_component_is_the_one_it_was_trained_on(tmp_path):
    components = {
        "transformer": {"codebook_size": 32, "tokenizer_name_or_path": "/gone/tokenizer"},
        "vqgan": {"codebook_size": 32},
    }
    for name in components:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    folder = ModelFolder(tmp_path, config={}, components=components)
    assert local_tokenizer_of(folder) == tmp_path / "vqgan"


# ------------------------------------------------------------------------------------------------ model card helpers


def test_top5_accuracy_is_shown_from_six_classes_and_fractions_as_percentages():
    metrics = {"accuracy": 0.875, "top5_accuracy": 1.0, "psnr": 21.23456}
    assert "top5_accuracy" not in {row["key"] for row in measured_metrics(metrics, num_classes=5)}
    shown = {row["key"]: row["shown"] for row in measured_metrics(metrics, num_classes=6)}
    assert shown == {"accuracy": "87.50%", "top5_accuracy": "100.00%", "psnr": "21.23"}


def test_a_new_entry_for_a_listed_repo_replaces_the_old_one():
    kept = ["- [org/b](u): classifier, trained on revision `1`", "- [org/a](u): prior, trained on revision `1`"]
    merged = merge_dependent_entries(kept, ["- [org/b](u): classifier, trained on revision `2`"])
    assert merged == [
        "- [org/a](u): prior, trained on revision `1`",
        "- [org/b](u): classifier, trained on revision `2`",
    ]


def _classifier_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    config = {"model_type": "vit", "architectures": ["ViTForImageClassification"], "id2label": {"0": "a", "1": "b"}}
    (folder / "config.json").write_text(json.dumps(config))
    save_file({"classifier.weight": torch.zeros(2, 2)}, folder / "model.safetensors")
    return folder


def test_a_set_refuses_a_folder_of_the_wrong_kind_and_two_folders_for_one_repo(tmp_path):
    classifier = _classifier_folder(tmp_path / "vit")
    assert _member(str(classifier), "classifier", "org").repo_id == "org/vit"
    assert _member(f"{classifier}=other/name", "classifier", None).repo_id == "other/name"
    with pytest.raises(HubPushError, match="holds a classifier, not a prior: pass it with --classifier_dirs"):
        _member(str(classifier), "prior", "org")
    with pytest.raises(InvalidRepoIdError, match="Two folders would go to the same repo: org/a. Name them"):
        _check_distinct(["org/a", "org/b", "org/a"])
    _check_distinct(["org/a", "org/b"])


def test_a_bad_repo_id_is_a_value_error_shown_as_one_line(monkeypatch, capsys):
    monkeypatch.delenv("HF_VQ_DEBUG", raising=False)
    with pytest.raises(ValueError, match="Invalid --hub_model_id 'no-namespace'"):
        check_repo_id("no-namespace")
    with pytest.raises(SystemExit) as refused:
        run_reporting_user_errors("hf-vq push", lambda: check_repo_id("no-namespace"))
    assert refused.value.code == 1
    assert capsys.readouterr().err.startswith("hf-vq push: error: Invalid --hub_model_id 'no-namespace': use ")


def test_every_scene_keeps_a_photograph_in_train():
    splits = split_photos({"a": "beach", "b": "beach", "c": "forest"}, test_fraction=0.9, seed=0)
    assert sorted(splits[name] for name in ("a", "b")) == ["test", "train"] and splits["c"] == "train"


# ------------------------------------------------------------------------------------------------ image decoding


def _png_bytes(image: PIL.Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _ramp16() -> np.ndarray:
    return np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)


def test_arrays_of_every_dtype_decode_with_their_range_or_are_refused():
    assert np.array_equal(np.asarray(decode_image([[0, 255], [255, 0]])), [[0, 255], [255, 0]])  # int64 lists
    assert np.array_equal(np.asarray(decode_image(np.array([[0, 128]], dtype=np.uint8))), [[0, 128]])
    assert np.array_equal(np.asarray(decode_image(np.array([[True, False]]))), [[255, 0]])  # a mask, as PIL reads it
    sixteen = np.asarray(decode_image(_ramp16()))
    assert sixteen.dtype == np.uint8 and (sixteen.min(), sixteen.max()) == (0, 255)  # scaled, not clipped
    assert np.array_equal(sixteen, np.round(_ramp16() * (255 / 65535)).astype(np.uint8))
    for refused in (np.zeros((2, 2), dtype=np.float32), np.array([[0, 256]]), np.array([[-1, 0]])):
        with pytest.raises(TypeError, match="image arrays must hold integers in 0..255"):
            decode_image(refused)


def test_files_bytes_and_pil_images_decode_fully_and_upright(tmp_path):
    image = PIL.Image.new("L", (4, 2), 200)
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown rotated by 90 degrees
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert decode_image({"bytes": buffer.getvalue(), "path": None}).size == (2, 4)
    (tmp_path / "a.png").write_bytes(_png_bytes(image))
    assert decode_image(str(tmp_path / "a.png")).size == (4, 2) and decode_image(tmp_path / "a.png").size == (4, 2)
    assert decode_image(image) is image
    truncated = _png_bytes(PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)))
    assert decode_image(truncated[: len(truncated) // 2]) is None  # the header parses; the pixels do not


def _unusual_images() -> dict[str, tuple[PIL.Image.Image, float]]:
    """Images of unusual modes, and the mean grey level (0..255) each must decode to."""
    palette = PIL.Image.new("P", (16, 16), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.info["transparency"] = 0
    return {
        "sixteen.png": (PIL.Image.fromarray(_ramp16()), 127.5),
        "float.tiff": (PIL.Image.fromarray(np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)), 127.5),
        "palette.png": (palette, 255.0),  # fully transparent black: the white background
        "transparent.png": (PIL.Image.new("LA", (16, 16), (0, 0)), 255.0),
    }


def test_unusual_files_keep_their_range_through_the_transform_and_a_datasets_image_column(tmp_path):
    folder = tmp_path / "images" / "train"
    folder.mkdir(parents=True)
    expected = {}
    for name, (image, mean) in _unusual_images().items():
        image.save(folder / name)
        expected[name] = mean
        pixel_values = ImageTransform(num_channels=1)(str(folder / name))
        assert float(pixel_values.mean() + 1) * 127.5 == pytest.approx(mean, abs=1.5), name
    dataset = build_image_dataset(train_data_dir=str(tmp_path / "images"), cache_dir=str(tmp_path / "cache"))
    transform = ImageTransform(num_channels=3)
    means = sorted(float(transform(row["image"]).mean() + 1) * 127.5 for row in dataset)
    assert means == pytest.approx(sorted(expected.values()), abs=1.5)
