"""Datasets in: Fashion-MNIST and (later) any Hugging Face image dataset."""

from .fashion_mnist import LABELS as FASHION_MNIST_LABELS
from .fashion_mnist import DataNotFoundError, ImageSplit, load_fashion_mnist, read_idx

__all__ = ["DataNotFoundError", "FASHION_MNIST_LABELS", "ImageSplit", "load_fashion_mnist", "read_idx"]
