"""`hf-vq reconstruct` through the real command line: reconstructions, the grid and metrics that agree with a
computation by hand, the training commands' data flags, and one-line errors for what cannot be reconstructed."""

import json

import numpy as np
import PIL.Image
import pytest
import torch

from hf_vq import VQGANConfig, VQGANModel
from hf_vq.cli import main
from hf_vq.evaluation.samples import GRID_PADDING
from hf_vq.models.vqgan import VQGANImageProcessor

from training_helpers import TINY_CONFIG, write_images, write_labelled_imagefolder


def _save_tokenizer(folder, **overrides):
    torch.manual_seed(0)
    model = VQGANModel(VQGANConfig.from_yaml(TINY_CONFIG, **overrides)).eval()
    model.save_pretrained(folder, image_processor=VQGANImageProcessor.from_model_config(model.config))
    return folder


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return _save_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """5 readable 16x16 RGB images (the tokenizer's size: no resizing), one truncated PNG and a text file."""
    folder = write_images(tmp_path_factory.mktemp("images") / "images", count=5, size=16, corrupt=1)
    (folder / "notes.txt").write_text("not an image")
    return folder


def _run(*argv, capsys=None):
    """`hf-vq reconstruct ARGV`: (exit code, stdout, stderr)."""
    try:
        code = main(["reconstruct", *map(str, argv)])
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr() if capsys else ("", "")
    return code, out, err


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    offsets = np.arange(size) - (size - 1) / 2
    gauss = np.exp(-(offsets**2) / (2 * sigma**2))
    gauss /= gauss.sum()
    return np.outer(gauss, gauss)


def _ssim_by_hand(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. (2004) on (C, H, W) images in [0, 1]: a Gaussian 11x11 window (sigma 1.5) centred on every pixel
    (the image mirrored at its borders, as torchmetrics does), C1 = 0.01^2, C2 = 0.03^2, averaged over pixels and
    channels."""
    window = _gaussian_window()
    c1, c2 = 0.01**2, 0.03**2
    pad = window.shape[0] // 2
    values = []
    for a, b in zip(x, y):
        patches_a = np.lib.stride_tricks.sliding_window_view(np.pad(a, pad, mode="reflect"), window.shape)
        patches_b = np.lib.stride_tricks.sliding_window_view(np.pad(b, pad, mode="reflect"), window.shape)

        def mean(patches):
            return (patches * window).sum(axis=(-2, -1))

        mu_a, mu_b = mean(patches_a), mean(patches_b)
        var_a = np.maximum(mean(patches_a**2) - mu_a**2, 0)
        var_b = np.maximum(mean(patches_b**2) - mu_b**2, 0)
        covariance = mean(patches_a * patches_b) - mu_a * mu_b
        ssim = ((2 * mu_a * mu_b + c1) * (2 * covariance + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        values.append(ssim.mean())
    return float(np.mean(values))


def _metrics_by_hand(tokenizer_dir, files):
    """PSNR, SSIM, codebook usage and perplexity of the tokenizer's reconstructions of `files`, from the formulas."""
    model = VQGANModel.from_pretrained(tokenizer_dir).eval()
    processor = VQGANImageProcessor.from_pretrained(tokenizer_dir)
    pixel_values = processor([PIL.Image.open(path) for path in files], return_tensors="pt").pixel_values
    with torch.no_grad():
        output = model(pixel_values)
    originals = ((pixel_values.double() + 1) / 2).numpy()
    reconstructions = ((output.reconstruction.double().clamp(-1, 1) + 1) / 2).numpy()
    psnr = np.mean([10 * np.log10(1 / np.mean((a - b) ** 2)) for a, b in zip(originals, reconstructions)])
    ssim = np.mean([_ssim_by_hand(a, b) for a, b in zip(originals, reconstructions)])
    counts = np.bincount(output.image_tokens.reshape(-1).numpy(), minlength=model.config.codebook_size)
    probabilities = counts[counts > 0] / counts.sum()
    return {
        "psnr": psnr,
        "ssim": ssim,
        "codebook_usage": (counts > 0).sum() / model.config.codebook_size,
        "perplexity": float(np.exp(-(probabilities * np.log(probabilities)).sum())),
    }, output.reconstruction


def test_a_folder_is_reconstructed_with_metrics_equal_to_the_formulas(tokenizer_dir, image_dir, tmp_path, capsys):
    output_dir = tmp_path / "out"
    code, out, _ = _run(
        "--tokenizer_name_or_path", tokenizer_dir, "--image_dir", image_dir, "--output_dir", output_dir,
        "--batch_size", 2, "--grid_columns", 3, capsys=capsys,
    )  # fmt: skip
    assert code == 0
    files = sorted(image_dir.glob("image_*.png"))
    written = sorted(path.name for path in (output_dir / "reconstructions").iterdir())
    assert written == [path.name for path in files]  # the truncated PNG skipped, the text file ignored
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["num_images"] == 5 and metrics["skipped_images"] == 1
    expected, reconstruction = _metrics_by_hand(tokenizer_dir, files)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    # The printed table, one row per metric.
    assert f"PSNR (dB)             {metrics['psnr']:.3f}" in out
    assert f"SSIM                  {metrics['ssim']:.4f}" in out
    assert "skipped (unreadable)  1" in out and str(output_dir / "metrics.json") in out
    # Each PNG is the reconstruction as the processor turns it into an image (batches of 2 here, 5 by hand: float
    # sums in another order may round a pixel the other way).
    processor = VQGANImageProcessor.from_pretrained(tokenizer_dir)
    first = np.asarray(PIL.Image.open(output_dir / "reconstructions" / files[0].name)).astype(int)
    assert np.abs(first - processor.postprocess(reconstruction[:1], output_type="np")[0]).max() <= 1
    _check_grid(output_dir / "grid.png", files, output_dir / "reconstructions", columns=3)


def _check_grid(grid_path, files, reconstructions_dir, columns):
    """Originals in a row, their reconstructions in the row below; a short last pair of rows padded with black."""
    grid = np.asarray(PIL.Image.open(grid_path))
    side, pad = 16, GRID_PADDING
    rows = 2 * -(-len(files) // columns)
    assert grid.shape == (rows * side + (rows + 1) * pad, columns * side + (columns + 1) * pad, 3)

    def tile(row, column):
        top, left = pad + row * (side + pad), pad + column * (side + pad)
        return grid[top : top + side, left : left + side]

    for index, path in enumerate(files):
        row, column = 2 * (index // columns), index % columns
        assert np.array_equal(tile(row, column), np.asarray(PIL.Image.open(path).convert("RGB")))
        reconstruction = np.asarray(PIL.Image.open(reconstructions_dir / path.name)).astype(int)
        assert np.abs(tile(row + 1, column) - reconstruction).max() <= 1  # both rounded from one float image
    assert not tile(rows - 1, columns - 1).any()  # 5 images in rows of 3: the last tile is padding


def test_the_training_data_flags_give_the_held_out_split(tokenizer_dir, tmp_path, capsys):
    data = write_labelled_imagefolder(tmp_path / "labelled")  # 18x18 images, center-cropped to 16
    code, _, _ = _run(
        "--tokenizer_name_or_path", tokenizer_dir, "--train_data_dir", data, "--output_dir", tmp_path / "out",
        "--max_images", 7, capsys=capsys,
    )  # fmt: skip
    assert code == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["num_images"] == 7 and metrics["source"] == f"--train_data_dir {data}"
    assert sorted(path.name for path in (tmp_path / "out" / "reconstructions").iterdir()) == [
        f"{index:05d}.png" for index in range(7)
    ]
    code, _, _ = _run(
        "--tokenizer_name_or_path", tokenizer_dir, "--train_data_dir", data, "--output_dir", tmp_path / "all",
        capsys=capsys,
    )  # fmt: skip
    assert json.loads((tmp_path / "all" / "metrics.json").read_text())["num_images"] == 9  # test/: 3 per class


def test_rgb_images_into_a_grayscale_tokenizer_are_converted_as_in_training(image_dir, tmp_path, capsys):
    grayscale = _save_tokenizer(tmp_path / "grayscale", num_channels=1)
    code, _, _ = _run(
        "--tokenizer_name_or_path", grayscale, "--image_dir", image_dir, "--output_dir", tmp_path / "out",
        capsys=capsys,
    )  # fmt: skip
    assert code == 0
    reconstruction = PIL.Image.open(tmp_path / "out" / "reconstructions" / "image_000.png")
    assert reconstruction.mode == "L" and PIL.Image.open(tmp_path / "out" / "grid.png").mode == "L"


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_tokenizer", "cannot load the tokenizer --tokenizer_name_or_path 'org/no-such-tokenizer'"),
        ("missing_tokenizer_dir", "--tokenizer_name_or_path '{tmp}/missing' does not exist"),
        ("empty_dir", "--image_dir '{tmp}/empty' holds no image files"),
        ("text_only_dir", "--image_dir '{tmp}/text' holds no image files"),
        ("corrupt_only_dir", "no readable image in --image_dir {tmp}/corrupt (2 unreadable files skipped)"),
        ("two_sources", "pass exactly one of --image_dir, --dataset_name and --train_data_dir"),
        ("no_source", "pass exactly one of --image_dir, --dataset_name and --train_data_dir (got none)"),
        ("bad_max_images", "--max_images must be >= 1"),
    ],
)
def test_what_cannot_be_reconstructed_is_one_line(case, message, tokenizer_dir, image_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "readme.txt").write_text("no images here")
    write_images(tmp_path / "corrupt", count=0, corrupt=2)
    tokenizer, images = str(tokenizer_dir), ["--image_dir", image_dir]
    argv = {
        "no_tokenizer": ["--tokenizer_name_or_path", "org/no-such-tokenizer", *images],
        "missing_tokenizer_dir": ["--tokenizer_name_or_path", tmp_path / "missing", *images],
        "empty_dir": ["--tokenizer_name_or_path", tokenizer, "--image_dir", tmp_path / "empty"],
        "text_only_dir": ["--tokenizer_name_or_path", tokenizer, "--image_dir", tmp_path / "text"],
        "corrupt_only_dir": ["--tokenizer_name_or_path", tokenizer, "--image_dir", tmp_path / "corrupt"],
        "two_sources": ["--tokenizer_name_or_path", tokenizer, *images, "--train_data_dir", image_dir],
        "no_source": ["--tokenizer_name_or_path", tokenizer],
        "bad_max_images": ["--tokenizer_name_or_path", tokenizer, *images, "--max_images", 0],
    }[case]
    code, _, err = _run(*argv, "--output_dir", tmp_path / "out", capsys=capsys)
    assert code in (1, 2)
    # One line, no traceback (loading a tokenizer may draw transformers' progress bar above it).
    errors = [line for line in err.strip().splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("hf-vq reconstruct: error: ") and "Traceback" not in err, err
    assert message.format(tmp=tmp_path) in errors[0], errors[0]


def test_images_of_one_name_in_two_formats_get_two_reconstructions(tokenizer_dir, tmp_path, capsys):
    folder = write_images(tmp_path / "images", count=2, size=16)
    PIL.Image.open(folder / "image_000.png").save(folder / "image_000.jpg")
    (folder / "nested").mkdir()
    PIL.Image.open(folder / "image_001.png").save(folder / "nested" / "deep.bmp")
    code, _, _ = _run("--tokenizer_name_or_path", tokenizer_dir, "--image_dir", folder, "--output_dir",
                      tmp_path / "out", capsys=capsys)  # fmt: skip
    assert code == 0
    written = sorted(str(path.relative_to(tmp_path / "out" / "reconstructions"))
                     for path in (tmp_path / "out" / "reconstructions").rglob("*.png"))  # fmt: skip
    assert written == ["image_000.jpg.png", "image_000.png.png", "image_001.png", "nested/deep.png"]


def test_a_perfect_reconstructions_infinite_psnr_is_written_as_strict_json(tmp_path):
    from hf_vq.evaluation.reconstruct_command import ReconstructConfig, _write_results

    config = ReconstructConfig(tokenizer_name_or_path="tok", image_dir="images", num_grid_images=2, grid_columns=2)
    images = torch.rand(2, 1, 8, 8)
    result = _write_results(config, tmp_path, {"psnr": float("inf"), "ssim": 1.0}, [(images, images)])
    written = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=pytest.fail)
    assert written["psnr"] is None and written["ssim"] == 1.0 and written["tokenizer"] == "tok"
    assert result["metrics"]["ssim"] == 1.0
