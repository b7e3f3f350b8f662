"""Shared test setup: no Hub access (a missing file would otherwise cost a network time-out) and seeds."""

import os

# huggingface_hub reads these at import time, so they are set before any test imports it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A real saved tokenizer (configs/vqgan_tiny.yaml: 16x16 RGB -> 8x8 grid of 32 codes) with its processor."""
    from pathlib import Path

    from hf_vq import VQGANConfig, VQGANModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tokenizer")
    config = VQGANConfig.from_yaml(Path(__file__).parents[1] / "configs" / "vqgan_tiny.yaml")
    VQGANModel(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def labelled_image_dir(tmp_path_factory):
    """A labelled imagefolder (training_helpers.write_labelled_imagefolder): train/ and test/, 8 + 3 images per
    class."""
    from training_helpers import write_labelled_imagefolder

    return write_labelled_imagefolder(tmp_path_factory.mktemp("images"))


@pytest.fixture
def one_thread():
    """The test runs with torch on one thread (see training_helpers.one_thread)."""
    from training_helpers import one_thread as single_thread

    with single_thread():
        yield
