"""Token datasets: `hf-vq encode` (the format, 1 vs 2 processes, resume after a stop, bad inputs) and training the
classifier and the prior on one (`--token_dataset`), refused with another tokenizer."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from hf_vq import VQGANConfig, VQGANModel
from hf_vq.cli import main as cli_main
from hf_vq.data import ImageTransform, build_image_dataset
from hf_vq.data.token_dataset import (
    TOKEN_DATASET_FILE,
    TokenDatasetError,
    TokenizerMismatchError,
    load_token_dataset,
    token_dtype,
)
from hf_vq.errors import ConfigError
from hf_vq.training.classifier_command import resolve_classifier_args, train_classifier
from hf_vq.training.encode_command import encode
from hf_vq.training.encoding import PAUSE_IN_SHARD_ENV, STOP_AFTER_SHARDS_ENV, WORK_DIR, OutputDirInUseError
from hf_vq.training.prior_command import resolve_prior_args, train_prior
from hf_vq.training.token_data import ImageEncoder, build_token_data, load_tokenizer

from hub_server import HubServer
from training_helpers import CLASSES, REPO, one_thread, reset_accelerate, write_labelled_imagefolder

ENCODE_SCRIPT = REPO / "scripts" / "encode.py"


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """3 classes x (4 train + 2 test) images: 18 images, 5 shards of 4 at --shard_size 4."""
    return write_labelled_imagefolder(tmp_path_factory.mktemp("images"), train_count=4, test_count=2)


@pytest.fixture(scope="module")
def encoded_dir(tokenizer_dir, image_dir, tmp_path_factory):
    """The token dataset of `image_dir`, encoded on one process."""
    folder = tmp_path_factory.mktemp("encoded") / "tokens"
    _encode(_flags(tokenizer_dir, image_dir, folder))
    return folder


@pytest.fixture(scope="module")
def other_tokenizer_dir(tokenizer_dir, tmp_path_factory):
    """A tokenizer of the same architecture and shapes, with other weights (other codes)."""
    folder = tmp_path_factory.mktemp("other_tokenizer")
    torch.manual_seed(1)
    VQGANModel(VQGANConfig.from_pretrained(tokenizer_dir)).eval().save_pretrained(folder)
    return folder


def _flags(tokenizer_dir, image_dir, output_dir, **overrides):
    return {
        "tokenizer_name_or_path": str(tokenizer_dir),
        "train_data_dir": str(image_dir),
        "output_dir": str(output_dir),
        "shard_size": 4,
        "batch_size": 3,  # batches do not line up with shards: a shard's last batch is short
        "progress_bar": False,
        **overrides,
    }


def _encode(flags):
    reset_accelerate()
    with one_thread():
        return encode(flags)


def _rows(folder):
    dataset = datasets.load_from_disk(str(folder))
    return {name: split.to_dict() for name, split in dataset.items()}, {
        name: split.features for name, split in dataset.items()
    }


# ------------------------------------------------------------------------------------------------ the format


def test_token_dtype_is_the_smallest_integer_type_holding_the_codebook():
    assert [token_dtype(size) for size in (2, 256, 257, 65_536, 65_537, 2**18)] == [
        "uint8",
        "uint8",
        "uint16",
        "uint16",
        "int32",
        "int32",
    ]


def test_encode_writes_the_splits_labels_and_tokenizer_record_the_cache_also_has(
    tokenizer_dir, image_dir, encoded_dir, tmp_path
):
    dataset, info = load_token_dataset(str(encoded_dir))
    assert {name: len(split) for name, split in dataset.items()} == {"train": 12, "test": 6}
    features = dataset["train"].features
    assert features["image_tokens"] == datasets.Array2D((8, 8), "uint8")  # 32 codes
    assert features["labels"] == datasets.ClassLabel(names=list(CLASSES))
    tokenizer, processor = load_tokenizer(str(tokenizer_dir), "cpu")
    assert info.tokenizer_name_or_path == str(Path(tokenizer_dir).resolve())
    assert (info.codebook_size, info.token_grid, info.image_size, info.token_dtype) == (32, [8, 8], 16, "uint8")
    assert info.source["splits"] == {"train": 12, "test": 6} and info.source["label_column"] == "label"
    assert not (encoded_dir / WORK_DIR).exists()  # the shards are gone once the dataset is saved
    # The private cache of train-classifier / train-prior holds the same rows, columns and types: one format.
    config = resolve_classifier_args(
        {"tokenizer_name_or_path": str(tokenizer_dir), "train_data_dir": str(image_dir), "cache_dir": str(tmp_path)}
    )
    cached = build_token_data(config, tokenizer, processor, encode=True)
    for name, split in (("train", cached.train), ("test", cached.eval)):
        assert split.features == dataset[name].features
        assert split.with_format(None).to_dict() == dataset[name].to_dict()
    # Read through torch, the ids are int64 (what nn.Embedding takes), whatever their stored type.
    assert dataset["train"].with_format("torch")[0]["image_tokens"].dtype == torch.int64


def test_a_source_without_an_eval_split_has_the_split_the_training_commands_hold_out(
    tokenizer_dir, image_dir, tmp_path
):
    """An imagefolder with train/ only (the README's `my_images/`): encode holds out the part of it the classifier
    and prior hold out (same --eval_fraction, same --seed) and names it "validation"."""
    import shutil

    images = shutil.copytree(image_dir, tmp_path / "images", ignore=shutil.ignore_patterns("test"))
    _encode(_flags(tokenizer_dir, images, tmp_path / "tokens", eval_fraction=0.25))
    dataset, info = load_token_dataset(str(tmp_path / "tokens"))
    assert info.source["splits"] == {"train": 9, "validation": 3}
    tokenizer, processor = load_tokenizer(str(tokenizer_dir), "cpu")
    config = resolve_classifier_args(
        {"tokenizer_name_or_path": str(tokenizer_dir), "train_data_dir": str(images), "eval_fraction": 0.25}
        | {"cache_dir": str(tmp_path / "cache")}
    )
    cached = build_token_data(config, tokenizer, processor, encode=True)
    for name, split in (("train", cached.train), ("validation", cached.eval)):
        assert split.with_format(None).to_dict() == dataset[name].to_dict()
    # A classifier trained from that export names the split it is evaluated on (the rows read from disk do not).
    from hf_vq.training.classifier_loop import evaluated_split_name

    from_tokens_config = resolve_classifier_args(
        {"tokenizer_name_or_path": str(tokenizer_dir), "token_dataset": str(tmp_path / "tokens")}
    )
    from_tokens = build_token_data(from_tokens_config, tokenizer, processor, encode=True)
    assert evaluated_split_name(from_tokens_config, from_tokens.eval, from_tokens.eval_split_name) == "validation"


def _write_idx_folder(folder, counts):
    """Fashion-MNIST's IDX files (an `Array2D` image column): random 28x28 images and labels 0..9."""
    import gzip
    import struct

    rng = np.random.default_rng(0)
    folder.mkdir()
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = rng.integers(0, 256, (counts[split], 28, 28), dtype=np.uint8)
        labels = np.arange(counts[split], dtype=np.uint8) % 10
        header = struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">3I", *images.shape)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
        header = struct.pack(">HBB", 0, 0x08, 1) + struct.pack(">I", len(labels))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header + labels.tobytes()))
    return folder


@pytest.mark.parametrize("source", ["imagefolder", "idx"])
def test_every_row_holds_the_tokenizer_s_own_encode_of_its_image_alone(source, tokenizer_dir, image_dir, tmp_path):
    # Whatever encode's shortcuts (numpy rows for array images, one processor call per batch, the CPU's small
    # default batch), each row is what the tokenizer's `encode` gives for that one image, as the cache computed it.
    data_dir = image_dir if source == "imagefolder" else _write_idx_folder(tmp_path / "idx", {"train": 37, "test": 5})
    flags = _flags(tokenizer_dir, data_dir, tmp_path / "tokens")
    del flags["shard_size"], flags["batch_size"]  # the defaults: 37 training images are 3 batches on the CPU
    _encode(flags)
    dataset, _ = load_token_dataset(str(tmp_path / "tokens"))
    tokenizer, processor = load_tokenizer(str(tokenizer_dir), "cpu")
    transform = ImageTransform(processor, resolution=16, center_crop=True, random_flip=False)
    for name in ("train", "test"):
        images = build_image_dataset(train_data_dir=str(data_dir), split=name)
        assert len(dataset[name]) == len(images) > 0
        for row, image in zip(dataset[name], images):
            with torch.no_grad():
                expected = tokenizer.encode(transform(image["image"])[None]).image_tokens[0]
            assert row["image_tokens"] == expected.tolist() and row["labels"] == int(image["label"])


@pytest.mark.slow
def test_a_run_killed_while_saving_a_shard_resumes_to_the_same_dataset(
    tokenizer_dir, image_dir, encoded_dir, tmp_path
):
    """A real SIGKILL of `hf-vq encode` in the middle of saving its third shard (written, not yet renamed into
    place): the rerun keeps the two finished shards, writes the third again and gives the uninterrupted dataset."""
    output_dir = tmp_path / "tokens"
    flags = _flags(tokenizer_dir, image_dir, output_dir)
    command = [sys.executable, str(ENCODE_SCRIPT), *(f"--{key}={value}" for key, value in flags.items())]
    command = [arg for arg in command if not arg.startswith("--progress_bar")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **{PAUSE_IN_SHARD_ENV: "3"})
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    paused = output_dir / WORK_DIR / "train" / "00002.tmp.paused"
    try:
        for _ in range(1200):
            if paused.exists() or process.poll() is not None:
                break
            time.sleep(0.1)
        assert paused.exists(), process.stderr.read()[-3000:] if process.poll() is not None else "never paused"
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    finished = sorted(str(path.relative_to(output_dir)) for path in (output_dir / WORK_DIR).glob("*/0*"))
    assert finished == [
        ".shards/train/00000",
        ".shards/train/00001",
        ".shards/train/00002.tmp",
        ".shards/train/00002.tmp.paused",
    ]
    result = _encode(flags)
    assert (result["images"], result["skipped_shards"]) == (10, 2)  # 18 images, the two finished shards kept
    assert _rows(output_dir) == _rows(encoded_dir)


@pytest.mark.distributed
@pytest.mark.slow
def test_two_processes_write_the_dataset_one_process_writes(tokenizer_dir, image_dir, encoded_dir, tmp_path):
    output_dir = tmp_path / "two"
    flags = _flags(tokenizer_dir, image_dir, output_dir)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
    command += [str(ENCODE_SCRIPT), *(f"--{key}={value}" for key, value in flags.items() if key != "progress_bar")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "images/s on 2 process(es)" in result.stdout
    assert _rows(output_dir) == _rows(encoded_dir)
    assert json.loads((output_dir / TOKEN_DATASET_FILE).read_text()) == json.loads(
        (encoded_dir / TOKEN_DATASET_FILE).read_text()
    )


def test_a_stopped_run_resumes_without_encoding_its_finished_shards_again(
    tokenizer_dir, image_dir, encoded_dir, tmp_path, monkeypatch
):
    output_dir = tmp_path / "tokens"
    flags = _flags(tokenizer_dir, image_dir, output_dir)
    monkeypatch.setenv(STOP_AFTER_SHARDS_ENV, "2")
    with pytest.raises(SystemExit, match="stopped after 2 shards"):
        _encode(flags)
    monkeypatch.delenv(STOP_AFTER_SHARDS_ENV)
    finished = sorted(path.relative_to(output_dir) for path in (output_dir / WORK_DIR).glob("*/0*"))
    assert [str(path) for path in finished] == [".shards/train/00000", ".shards/train/00001"]
    # A kill in the middle of saving a shard leaves only its temporary folder, which is written again.
    (output_dir / WORK_DIR / "train" / "00002.tmp").mkdir()
    batches = []
    original = ImageEncoder.__call__
    monkeypatch.setattr(ImageEncoder, "__call__", lambda self, batch: batches.append(1) or original(self, batch))
    result = _encode(flags)
    # 3 shards left (train 8:12, test 0:4, test 4:6): 2 + 2 + 1 batches of at most 3 images.
    assert (len(batches), result["images"], result["skipped_shards"]) == (5, 10, 2)
    assert _rows(output_dir) == _rows(encoded_dir)
    # Run again on a finished dataset: nothing is encoded.
    batches.clear()
    assert _encode(flags)["images"] == 0 and batches == []


def test_push_to_hub_and_load_back_keeps_rows_labels_record_and_card(tokenizer_dir, image_dir, tmp_path):
    """`hf-vq encode --push_to_hub` to a loopback Hub, then `load_token_dataset(hub id)` in a fresh process with
    HF_ENDPOINT set, as a user would: the same rows and features as the local folder, the tokenizer record, and a
    dataset card that `load_dataset` still reads the features from."""
    script = textwrap.dedent(f"""
        import json
        import datasets
        from huggingface_hub import DatasetCard
        from hf_vq.cli import main
        from hf_vq.data.token_dataset import load_token_dataset

        main(["encode", "--tokenizer_name_or_path", r"{tokenizer_dir}", "--train_data_dir", r"{image_dir}",
              "--output_dir", r"{tmp_path / "tokens"}", "--no-progress_bar", "--push_to_hub",
              "--hub_dataset_id", "org/tokens"])
        hub, info = load_token_dataset("org/tokens")
        local = datasets.load_from_disk(r"{tmp_path / "tokens"}")
        card = DatasetCard.load("org/tokens", repo_type="dataset")
        print("REPORT" + json.dumps({{
            "same_rows": {{name: split.to_dict() == local[name].to_dict() for name, split in hub.items()}},
            "same_features": all(hub[name].features == local[name].features for name in local),
            "weights": info.weights_sha256,
            "tags": card.data.tags,
            "card_names_tokenizer": str(info.tokenizer_name_or_path) in card.text,
        }}))
    """)
    with HubServer(
        tmp_path / "hub", tokens={"hf_test": "alice"}, orgs={"alice": ["org"]}, lfs_suffixes=(".parquet",)
    ) as hub:
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.url,
            "HF_HOME": str(tmp_path / "home"),
            "HF_HUB_OFFLINE": "0",
            "HF_DATASETS_OFFLINE": "0",
            "HF_TOKEN": "hf_test",
            "HF_HUB_DISABLE_XET": "1",  # the loopback Hub speaks LFS, not Xet
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO),
        }
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        assert hub.unhandled == []
    report = json.loads(result.stdout.split("REPORT", 1)[1])
    assert report["same_rows"] == {"train": True, "test": True} and report["same_features"]
    assert report["weights"] == json.loads((tmp_path / "tokens" / TOKEN_DATASET_FILE).read_text())["weights_sha256"]
    assert {"hf-vq", "image-tokens"} <= set(report["tags"]) and report["card_names_tokenizer"]


# ------------------------------------------------------------------------------------------------ bad inputs


def _cli_error(argv, capsys) -> str:
    reset_accelerate()
    with pytest.raises(SystemExit) as exit_info:
        cli_main(argv)
    assert exit_info.value.code in (1, 2)
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith(f"hf-vq {argv[0]}: error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr  # one line, no traceback
    return errors[0]


def _argv(flags):
    def option(key, value):
        return (f"--{key}" if value else f"--no-{key}") if isinstance(value, bool) else f"--{key}={value}"

    return ["encode", *(option(key, value) for key, value in flags.items())]


def test_a_tokenizer_that_does_not_exist_is_one_line(image_dir, tmp_path, capsys):
    flags = _flags("nobody/no-such-tokenizer", image_dir, tmp_path / "out")
    assert "cannot load the tokenizer --tokenizer_name_or_path 'nobody/no-such-tokenizer'" in _cli_error(
        _argv(flags), capsys
    )


def test_a_column_that_is_not_an_image_is_one_line(tokenizer_dir, image_dir, tmp_path, capsys):
    flags = _flags(tokenizer_dir, image_dir, tmp_path / "out", image_column="label")
    assert "column 'label'" in (message := _cli_error(_argv(flags), capsys)) and "not images" in message


def test_an_output_dir_of_another_tokenizer_is_refused(other_tokenizer_dir, image_dir, encoded_dir, tmp_path, capsys):
    message = _cli_error(_argv(_flags(other_tokenizer_dir, image_dir, encoded_dir)), capsys)
    assert "holds the tokens of another tokenizer" in message and "pass a new --output_dir" in message
    # ... and so are the unfinished shards of another tokenizer's run.
    unfinished = tmp_path / "unfinished"
    (unfinished / WORK_DIR).mkdir(parents=True)
    manifest = json.loads((encoded_dir / TOKEN_DATASET_FILE).read_text())
    (unfinished / WORK_DIR / "encoding.json").write_text(json.dumps(manifest))
    with pytest.raises(TokenizerMismatchError, match="another tokenizer"):
        _encode(_flags(other_tokenizer_dir, image_dir, unfinished))


def test_a_push_that_cannot_succeed_is_refused_before_encoding(tokenizer_dir, image_dir, tmp_path, capsys):
    flags = _flags(tokenizer_dir, image_dir, tmp_path / "out", push_to_hub=True, hub_dataset_id="no-namespace")
    assert "Invalid --hub_dataset_id 'no-namespace'" in _cli_error(_argv(flags), capsys)
    flags["hub_dataset_id"] = "org/tokens"  # the tests run offline (conftest.py)
    assert "offline mode is on" in _cli_error(_argv(flags), capsys)
    assert not (tmp_path / "out").exists()  # refused before anything was encoded


def test_an_output_dir_of_other_data_or_other_files_is_refused(tokenizer_dir, image_dir, encoded_dir, tmp_path):
    with pytest.raises(OutputDirInUseError, match="tokens of other data"):
        _encode(_flags(tokenizer_dir, image_dir, encoded_dir, max_train_samples=5))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirInUseError, match="not empty and holds no token dataset"):
        _encode(_flags(tokenizer_dir, image_dir, tmp_path / "busy"))


@pytest.mark.parametrize(
    "override, message",
    [
        ({"output_dir": None}, "no --output_dir"),
        ({"push_to_hub": True}, "--push_to_hub needs --hub_dataset_id"),
        ({"train_data_dir": None}, "no training data"),
        ({"dataloader_num_workers": 2}, "unknown flag --dataloader_num_workers"),
    ],
)
def test_encode_flags_that_cannot_work_are_refused(override, message, tokenizer_dir, image_dir, tmp_path):
    from hf_vq.training.encode_command import resolve_encode_args

    with pytest.raises(ConfigError, match=message):
        resolve_encode_args({**_flags(tokenizer_dir, image_dir, tmp_path / "out"), **override})


# ------------------------------------------------------------------------------------------------ training on tokens


def test_train_classifier_from_a_token_dataset(tokenizer_dir, encoded_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(ImageEncoder, "__call__", lambda self, batch: pytest.fail("images tokenized again"))
    flags = {
        "config": "configs/token_vit_tiny.yaml",
        "tokenizer_name_or_path": str(tokenizer_dir),
        "token_dataset": str(encoded_dir),
        "output_dir": str(tmp_path / "classifier"),
        "max_train_steps": 2,
    }
    reset_accelerate()
    with one_thread():
        result = train_classifier(flags)
    assert (result["metrics"]["eval_examples"], result["metrics"]["global_step"]) == (6, 2)
    config = json.loads((tmp_path / "classifier" / "config.json").read_text())
    assert list(config["id2label"].values()) == list(CLASSES)
    assert result["metrics"]["dataset"] == str(encoded_dir)


def test_train_prior_from_a_token_dataset(tokenizer_dir, encoded_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(ImageEncoder, "__call__", lambda self, batch: pytest.fail("images tokenized again"))
    flags = {
        "config": "configs/maskgit_tiny.yaml",
        "tokenizer_name_or_path": str(tokenizer_dir),
        "token_dataset": str(encoded_dir),
        "output_dir": str(tmp_path / "prior"),
        "max_train_steps": 2,
        "num_eval_images": 3,
        "num_sample_images": 1,
    }
    reset_accelerate()
    with one_thread():
        result = train_prior(flags)
    metrics = result["metrics"]
    assert (metrics["num_classes"], metrics["global_step"], metrics["eval_images"]) == (3, 2, 3)
    assert metrics["real_perplexity"] > 0 and Path(result["sample_grid"]).is_file()


def test_a_token_dataset_of_another_tokenizer_is_refused(other_tokenizer_dir, encoded_dir, tmp_path, capsys):
    argv = ["train-prior", "--config", "configs/maskgit_tiny.yaml", "--tokenizer_name_or_path"]
    argv += [str(other_tokenizer_dir), "--token_dataset", str(encoded_dir), "--output_dir", str(tmp_path / "p")]
    message = _cli_error(argv, capsys)
    assert f"--token_dataset '{encoded_dir}' holds the tokens of the tokenizer" in message
    assert "is another tokenizer (other weights)" in message


def test_a_folder_that_is_not_a_token_dataset_is_refused(tokenizer_dir, image_dir, tmp_path):
    config = resolve_classifier_args({"tokenizer_name_or_path": str(tokenizer_dir), "token_dataset": str(image_dir)})
    tokenizer, processor = load_tokenizer(str(tokenizer_dir), "cpu")
    with pytest.raises(TokenDatasetError, match="holds no token_dataset.json: it is not a token dataset"):
        build_token_data(config, tokenizer, processor, encode=True)


@pytest.mark.parametrize(
    "command, override, message",
    [
        ("classifier", {"train_data_dir": "."}, "pass either it or --dataset_name / --train_data_dir, not both"),
        ("classifier", {"model_type": "pixel_vit"}, "pixel_vit reads pixels"),
        ("prior", {"eval_classifier_name_or_path": "judge"}, "judge samples against real images"),
    ],
)
def test_token_dataset_flags_that_cannot_work_are_refused(command, override, message, tokenizer_dir, tmp_path):
    resolve = resolve_classifier_args if command == "classifier" else resolve_prior_args
    flags = {"tokenizer_name_or_path": str(tokenizer_dir), "token_dataset": str(tmp_path), **override}
    with pytest.raises(ConfigError, match=message):
        resolve(flags)


def test_a_local_token_dataset_is_kept_out_of_what_a_push_uploads(tmp_path, monkeypatch):
    """training_config.json records --token_dataset; a push rewrites it when it names a folder of this machine."""
    from hf_vq.hub.local_paths import is_local_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tokens").mkdir()
    assert is_local_path("tokens", "token_dataset")
    assert not is_local_path("org/fashion-mnist-tokens", "token_dataset")  # a Hub id stays as it is


def test_a_split_the_token_dataset_lacks_is_refused_naming_its_splits(tokenizer_dir, encoded_dir):
    config = resolve_classifier_args(
        {"tokenizer_name_or_path": str(tokenizer_dir), "token_dataset": str(encoded_dir), "eval_split": "validation"}
    )
    tokenizer, processor = load_tokenizer(str(tokenizer_dir), "cpu")
    with pytest.raises(
        TokenDatasetError, match=r"has no split 'validation' \(--eval_split\); its splits are train, test"
    ):
        build_token_data(config, tokenizer, processor, encode=True)


def test_an_unreadable_image_is_left_out_counted_and_reported(tokenizer_dir, image_dir, tmp_path, capsys):
    import shutil

    from hf_vq.training.encode_command import report

    images = shutil.copytree(image_dir, tmp_path / "images")
    (images / "train" / CLASSES[0] / "broken.png").write_bytes(b"not a png")
    result = report(_encode(_flags(tokenizer_dir, images, tmp_path / "tokens")))
    dataset, _ = load_token_dataset(str(tmp_path / "tokens"))
    assert (len(dataset["train"]), result["unreadable_images"]) == (12, 1)
    assert "skipped 1 unreadable images (left out of the token dataset)" in capsys.readouterr().out
