"""Datasets in: Fashion-MNIST and any Hugging Face image dataset (Hub, image folders, parquet), decoded safely."""

from .fashion_mnist import LABELS as FASHION_MNIST_LABELS
from .fashion_mnist import DataNotFoundError, ImageSplit, load_fashion_mnist, read_idx
from .images import ImageDatasetError, apply_image_transform, build_image_dataset, shard_for_process
from .transforms import ImageTransform, SkippedImageCounter, collate_images, decode_image

__all__ = [
    "DataNotFoundError",
    "FASHION_MNIST_LABELS",
    "ImageDatasetError",
    "ImageSplit",
    "ImageTransform",
    "SkippedImageCounter",
    "apply_image_transform",
    "build_image_dataset",
    "collate_images",
    "decode_image",
    "load_fashion_mnist",
    "read_idx",
    "shard_for_process",
]
