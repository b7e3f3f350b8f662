"""The image data pipeline on real files made here: image folders, parquet, IDX files, and the installed
Fashion-MNIST."""

import gzip
import io
import pickle
import struct

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from torch.utils.data import DataLoader

from hf_vq.data import (
    ImageDatasetError,
    ImageTransform,
    SkippedImageCounter,
    build_image_dataset,
    collate_images,
    decode_image,
    load_fashion_mnist,
    shard_for_process,
)
from hf_vq.data.fashion_mnist import find_idx_dir


def png_bytes(array: np.ndarray, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format=image_format)
    return buffer.getvalue()


def gradient_image(height: int, width: int, channels: int = 3, offset: int = 0) -> np.ndarray:
    values = (np.arange(height * width * channels) * 7 + offset) % 256
    shape = (height, width, channels) if channels > 1 else (height, width)
    return values.reshape(shape).astype(np.uint8)


@pytest.fixture
def image_folder(tmp_path):
    """3 readable images of different sizes (PNG, JPEG, grayscale PNG), a truncated PNG, a text file named .jpg,
    and a notes.txt that the imagefolder builder must ignore."""
    root = tmp_path / "images"
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    (root / "cats" / "wide.png").write_bytes(png_bytes(gradient_image(12, 20)))
    (root / "cats" / "photo.jpg").write_bytes(png_bytes(gradient_image(16, 16, offset=3), "JPEG"))
    (root / "dogs" / "gray.png").write_bytes(png_bytes(gradient_image(24, 18, channels=1)))
    complete = png_bytes(gradient_image(16, 16, offset=5))
    (root / "dogs" / "truncated.png").write_bytes(complete[: len(complete) // 2])
    (root / "dogs" / "not_really.jpg").write_bytes(b"this is a text file, not a JPEG")
    (root / "notes.txt").write_text("not an image")
    return root


def load_all(dataset, batch_size=2, num_workers=0):
    counter = SkippedImageCounter()
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_images, num_workers=num_workers)
    batches = [batch["pixel_values"] for batch in loader if counter.update(batch) >= 0]
    return torch.cat([batch for batch in batches if batch.numel()]), counter


# --- sources ---------------------------------------------------------------------------------------------------


def test_imagefolder_skips_and_counts_unreadable_images(image_folder, tmp_path):
    dataset = build_image_dataset(
        train_data_dir=image_folder, cache_dir=tmp_path / "cache", transform=ImageTransform(resolution=16)
    )
    assert len(dataset) == 5  # notes.txt is not an image file; the two broken ones are rows until decoded
    pixel_values, counter = load_all(dataset)
    assert pixel_values.shape == (3, 3, 16, 16)
    assert pixel_values.dtype == torch.float32
    assert -1.0 <= float(pixel_values.min()) < 0.0 < float(pixel_values.max()) <= 1.0
    assert counter.total() == 2


def test_skips_are_counted_through_dataloader_workers(image_folder, tmp_path):
    dataset = build_image_dataset(
        train_data_dir=image_folder,
        cache_dir=tmp_path / "cache",
        transform=ImageTransform(resolution=8, num_channels=1),
    )
    pixel_values, counter = load_all(dataset, batch_size=1, num_workers=2)
    assert pixel_values.shape == (3, 1, 8, 8)
    assert counter.total() == 2


def test_without_transform_the_image_column_stays_undecoded(image_folder, tmp_path):
    dataset = build_image_dataset(train_data_dir=image_folder, cache_dir=tmp_path / "cache")
    assert dataset.features["image"] == datasets.Image(decode=False)
    assert set(dataset.features["label"].names) == {"cats", "dogs"}
    decoded = [decode_image(example["image"]) for example in dataset]  # reading every row must not raise
    assert sum(image is None for image in decoded) == 2


@pytest.fixture
def parquet_file(tmp_path):
    images = [{"bytes": png_bytes(gradient_image(10, 14, channels=1, offset=i)), "path": None} for i in range(4)]
    images.append({"bytes": b"\x89PNG\r\n\x1a\n garbage", "path": None})
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    table = {"image": images, "caption": [f"image {i}" for i in range(5)]}
    path = tmp_path / "parquet" / "train-00000.parquet"
    path.parent.mkdir()
    datasets.Dataset.from_dict(table, features=features).to_parquet(str(path))
    return path


@pytest.mark.parametrize("as_folder", [False, True])
def test_parquet_file_or_folder(parquet_file, tmp_path, as_folder):
    source = {"train_data_dir": parquet_file.parent} if as_folder else {"dataset_name": str(parquet_file)}
    dataset = build_image_dataset(
        **source, cache_dir=tmp_path / "cache", transform=ImageTransform(resolution=8, num_channels=1)
    )
    pixel_values, counter = load_all(dataset)
    assert pixel_values.shape == (4, 1, 8, 8)
    assert counter.total() == 1


def write_idx(directory, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    prefix = {"train": "train", "test": "t10k"}[split]
    header = struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">3I", *images.shape)
    (directory / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
    header = struct.pack(">HBB", 0, 0x08, 1) + struct.pack(">I", len(labels))
    (directory / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(header + labels.astype(np.uint8).tobytes())
    )


@pytest.fixture
def idx_dir(tmp_path):
    directory = tmp_path / "idx"
    directory.mkdir()
    images = np.zeros((10, 28, 28), dtype=np.uint8)
    images[:, :, 14:] = 255  # right half white
    images[np.arange(10), 0, 0] = np.arange(10) * 20  # tells the images apart
    write_idx(directory, "train", images, np.arange(10) % 10)
    return directory


def test_idx_folder_reads_exact_pixels_and_labels(idx_dir):
    dataset = build_image_dataset(train_data_dir=idx_dir, transform=ImageTransform(num_channels=1))
    assert len(dataset) == 10
    pixel_values, _ = load_all(dataset, batch_size=10)
    assert pixel_values.shape == (10, 1, 28, 28)
    assert torch.all(pixel_values[:, 0, 1:, :14] == -1.0) and torch.all(pixel_values[:, 0, :, 14:] == 1.0)
    assert pixel_values[3, 0, 0, 0] == pytest.approx(60 / 127.5 - 1.0)
    raw = build_image_dataset(train_data_dir=idx_dir)
    assert raw.features["label"].names[9] == "Ankle boot" and raw[9]["label"] == 9


@pytest.mark.skipif(find_idx_dir() is None, reason="Fashion-MNIST IDX files are not installed")
def test_installed_fashion_mnist():
    dataset = build_image_dataset(
        "fashion_mnist", split="test", transform=ImageTransform(resolution=32, num_channels=1)
    )
    assert len(dataset) == 10_000
    expected = torch.from_numpy(load_fashion_mnist("test").images[:4].astype(np.float32))
    pixel_values = collate_images([dataset[i] for i in range(4)])["pixel_values"]
    assert pixel_values.shape == (4, 1, 32, 32)
    # Bicubic upsampling keeps each image's mean brightness close to the original's.
    torch.testing.assert_close(
        pixel_values.mean(dim=(1, 2, 3)), (expected / 127.5 - 1).mean(dim=(1, 2)), atol=0.02, rtol=0
    )


def test_streaming_split_across_processes_is_disjoint_and_complete(idx_dir):
    def first_pixels(dataset):
        return sorted(round(float(example["pixel_values"][0, 0, 0]), 4) for example in dataset)

    transform = ImageTransform(num_channels=1)
    streamed = build_image_dataset(train_data_dir=idx_dir, streaming=True, transform=transform)
    assert isinstance(streamed, datasets.IterableDataset)
    everything = first_pixels(streamed)
    assert len(everything) == 10 and len(set(everything)) == 10
    shards = [first_pixels(shard_for_process(streamed, rank, 2)) for rank in range(2)]
    assert shards[0] and shards[1] and not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == everything


def test_streaming_imagefolder_counts_skips(image_folder):
    dataset = build_image_dataset(train_data_dir=image_folder, streaming=True, transform=ImageTransform(resolution=8))
    pixel_values, counter = load_all(dataset, batch_size=5)
    assert pixel_values.shape == (3, 3, 8, 8) and counter.total() == 2


def test_hub_dataset_id_goes_to_load_dataset(monkeypatch, tmp_path):
    calls = []
    table = datasets.Dataset.from_dict(
        {"img": [{"bytes": png_bytes(gradient_image(8, 8)), "path": None}]},
        features=datasets.Features({"img": datasets.Image()}),
    )

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        return table

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dataset = build_image_dataset(
        "someone/pictures", "small", image_column="img", split="validation", cache_dir=tmp_path, max_samples=1
    )
    assert calls == [
        ("someone/pictures", "small", {"split": "validation", "streaming": False, "cache_dir": str(tmp_path)})
    ]
    assert dataset.features["img"] == datasets.Image(decode=False)


def test_max_samples(idx_dir):
    assert len(build_image_dataset(train_data_dir=idx_dir, max_samples=3)) == 3
    assert len(list(build_image_dataset(train_data_dir=idx_dir, streaming=True, max_samples=3))) == 3


# --- clear errors at build time ----------------------------------------------------------------------------------


def test_missing_image_column_lists_the_columns(parquet_file, tmp_path):
    with pytest.raises(ImageDatasetError, match=r"no column 'img'.*\['image', 'caption'\].*--image_column"):
        build_image_dataset(str(parquet_file), image_column="img", cache_dir=tmp_path / "cache")


def test_column_without_images_is_refused(tmp_path):
    # A string column could hold file paths; a label column cannot hold images.
    with pytest.raises(ImageDatasetError, match=r"column 'label'.*not images"):
        build_image_dataset(train_data_dir=idx_dir_with_labels(tmp_path), image_column="label")


def idx_dir_with_labels(tmp_path):
    directory = tmp_path / "labels_idx"
    directory.mkdir()
    write_idx(directory, "train", np.zeros((2, 28, 28), np.uint8), np.zeros(2))
    return directory


@pytest.mark.parametrize(
    "contents, message",
    [
        ("nothing", r"empty is empty: it holds no image files"),
        ("text_only", r"empty gives no 'train' split with images"),
    ],
)
def test_empty_folder_is_an_error(tmp_path, contents, message):
    folder = tmp_path / "empty"
    folder.mkdir()
    if contents == "text_only":
        (folder / "readme.txt").write_text("no images here")
    with pytest.raises(ImageDatasetError, match=message):
        build_image_dataset(train_data_dir=folder, cache_dir=tmp_path / "cache")


def test_no_examples_is_an_error(idx_dir):
    with pytest.raises(ImageDatasetError, match="no examples"):
        build_image_dataset(train_data_dir=idx_dir, max_samples=0)
    with pytest.raises(ImageDatasetError, match="no examples"):
        build_image_dataset(train_data_dir=idx_dir, max_samples=0, streaming=True)


def test_sources_must_be_given_once(tmp_path):
    with pytest.raises(ImageDatasetError, match="exactly one"):
        build_image_dataset()
    with pytest.raises(ImageDatasetError, match="exactly one"):
        build_image_dataset("fashion_mnist", train_data_dir=tmp_path)
    with pytest.raises(ImageDatasetError, match="does not exist"):
        build_image_dataset(train_data_dir=tmp_path / "missing")


# --- decoding and transforms -------------------------------------------------------------------------------------


def test_decode_image_skips_unreadable_and_refuses_non_images():
    complete = png_bytes(gradient_image(16, 16))
    assert decode_image({"bytes": complete, "path": None}).size == (16, 16)
    assert decode_image({"bytes": complete[:-40], "path": None}) is None
    assert decode_image(b"GIF89a nonsense") is None
    assert decode_image("/nonexistent/image.png") is None
    with pytest.raises(TypeError, match="image_column"):
        decode_image(3)
    with pytest.raises(TypeError, match="0..255"):
        decode_image(np.full((2, 2), 300))


def test_grayscale_and_rgb_outputs_and_exact_range():
    rgb = np.zeros((6, 6, 3), np.uint8)
    rgb[:, 3:] = 255
    for channels in (1, 3):
        pixel_values = ImageTransform(num_channels=channels)(PIL.Image.fromarray(rgb))
        assert pixel_values.shape == (channels, 6, 6)
        assert torch.all(pixel_values[:, :, :3] == -1.0) and torch.all(pixel_values[:, :, 3:] == 1.0)


def test_resize_shorter_side_then_center_crop():
    image = np.zeros((20, 40), np.uint8)
    image[:, 20:] = 255  # left half black, right half white
    pixel_values = ImageTransform(resolution=10, num_channels=1)(image)
    assert pixel_values.shape == (1, 10, 10)  # 40x20 -> 20x10, centre 10 columns: 5 black then 5 white
    assert torch.all(pixel_values[0, :, :4] < -0.9) and torch.all(pixel_values[0, :, 6:] > 0.9)


def images_for_randomness(count=16):
    return [gradient_image(12, 20, channels=1, offset=i) for i in range(count)]


def test_random_flip_and_crop_depend_on_image_seed_and_epoch_only():
    transform = ImageTransform(resolution=8, center_crop=False, random_flip=True, num_channels=1, seed=1)
    images = images_for_randomness()
    first = [transform(image) for image in images]
    # Same image, same seed and epoch -> same crop and flip, whatever was transformed before (a resumed run).
    resumed = ImageTransform(resolution=8, center_crop=False, random_flip=True, num_channels=1, seed=1)
    assert all(torch.equal(resumed(image), expected) for image, expected in zip(reversed(images), reversed(first)))
    transform.set_epoch(1)
    assert any(not torch.equal(transform(image), expected) for image, expected in zip(images, first))


def test_random_flip_mirrors_about_half_of_the_images():
    plain = ImageTransform(num_channels=1)
    flipping = ImageTransform(num_channels=1, random_flip=True)
    images = images_for_randomness(64)
    flipped = sum(not torch.equal(plain(image), flipping(image)) for image in images)
    assert all(
        torch.equal(flipping(image), plain(image)) or torch.equal(flipping(image), plain(image).flip(-1))
        for image in images
    )
    assert 16 <= flipped <= 48


def test_transform_uses_the_model_processor():
    from hf_vq.models.vqgan.image_processing_vqgan import VQGANImageProcessor

    processor = VQGANImageProcessor(size={"height": 32, "width": 32}, num_channels=1, downsampling_factor=4)
    image = gradient_image(28, 28, channels=3)
    with_processor = ImageTransform(processor=processor, resolution=16)(image)
    with_numpy = ImageTransform(resolution=16, num_channels=1)(image)
    torch.testing.assert_close(with_processor, with_numpy, atol=1e-6, rtol=0)
    assert ImageTransform(processor=processor)(image).shape == (1, 32, 32)  # the processor's own resize
    with pytest.raises(ValueError, match="disagrees"):
        ImageTransform(processor=processor, num_channels=3)


@pytest.mark.parametrize("with_processor", [True, False])
@pytest.mark.parametrize("resolution", [12, None])
def test_a_batch_transform_gives_the_tensors_of_one_image_at_a_time(with_processor, resolution):
    from hf_vq.models.vqgan.image_processing_vqgan import VQGANImageProcessor

    processor = VQGANImageProcessor(size={"height": 16, "width": 16}, num_channels=3, downsampling_factor=4)
    transform = ImageTransform(processor if with_processor else None, resolution, random_flip=True, num_channels=3)
    values = [
        {"bytes": png_bytes(gradient_image(20, 24, offset=1)), "path": None},
        {"bytes": b"not an image", "path": "broken.png"},  # unreadable: None in its place
        gradient_image(18, 18, channels=1, offset=2),
        PIL.Image.fromarray(gradient_image(16, 16, offset=3)),
        np.asarray(gradient_image(18, 18, channels=1, offset=4), dtype=np.int64),  # how numpy-formatted rows come
    ]
    batch = transform.transform_batch(values)
    one_by_one = [transform(value) for value in values]
    assert [tensor is None for tensor in batch] == [False, True, False, False, False]
    assert all(
        torch.equal(got, expected) and got.dtype == expected.dtype
        for got, expected in zip(batch, one_by_one)
        if expected is not None
    )
    assert transform.transform_batch([values[1]]) == [None]


def test_transform_pickles_for_spawned_workers():
    transform = ImageTransform(resolution=8, random_flip=True, seed=3)
    clone = pickle.loads(pickle.dumps(transform))
    image = gradient_image(10, 10)
    assert torch.equal(clone(image), transform(image))


# --- collate and counter -----------------------------------------------------------------------------------------


def test_collate_drops_none_and_handles_all_skipped_batches():
    batch = collate_images(
        [{"pixel_values": torch.ones(1, 2, 2)}, {"pixel_values": None}, {"pixel_values": torch.zeros(1, 2, 2)}]
    )
    assert batch["pixel_values"].shape == (2, 1, 2, 2) and batch["num_skipped"].tolist() == [1]
    empty = collate_images([{"pixel_values": None}] * 3)
    assert empty["pixel_values"].numel() == 0 and empty["num_skipped"].tolist() == [3]
    with pytest.raises(ValueError, match="different shapes"):
        collate_images([{"pixel_values": torch.ones(1, 2, 2)}, {"pixel_values": torch.ones(1, 3, 3)}])


def test_counter_accumulates_and_survives_a_checkpoint():
    counter = SkippedImageCounter()
    counter.update({"num_skipped": torch.tensor([2])})
    counter.update({"num_skipped": torch.tensor([0, 1])})  # what Accelerate's batch dispatching can produce
    assert counter.total() == 3
    restored = SkippedImageCounter()
    restored.load_state_dict(counter.state_dict())
    assert restored.total() == 3
