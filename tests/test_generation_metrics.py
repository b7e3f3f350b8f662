"""Generation metrics of a token prior against hand-computed values: Frechet distances, conditional accuracy with a
classifier whose answers are known, codebook statistics, and the judge's checks."""

import math

import PIL.Image
import pytest
import torch
from transformers import ViTConfig, ViTForImageClassification

from hf_vq.evaluation import (
    CallableFeatureExtractor,
    ClassifierJudge,
    GenerationMetrics,
    load_classifier_judge,
    save_image_grid,
)


def _vit(num_labels=3, image_size=8, num_channels=1):
    config = ViTConfig(
        image_size=image_size,
        patch_size=4,
        num_channels=num_channels,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=num_labels,
    )
    return ViTForImageClassification(config).eval()


def _always(vit, label):
    """Make `vit` answer `label` for every image: a zero head whose bias favours that class."""
    with torch.no_grad():
        vit.classifier.weight.zero_()
        vit.classifier.bias.zero_()
        vit.classifier.bias[label] = 1.0
    return vit


def test_judge_features_and_predictions_are_the_classifiers_own():
    vit = _vit()
    judge = ClassifierJudge(vit)
    images = torch.rand(5, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        expected = vit(pixel_values=images, output_hidden_states=False)
        cls_token = vit.vit(pixel_values=images).last_hidden_state[:, 0]
    torch.testing.assert_close(judge(images), cls_token)
    assert judge.predict(images).tolist() == expected.logits.argmax(-1).tolist()


def test_conditional_accuracy_counts_matches_with_the_conditioning_labels():
    metrics = GenerationMetrics(codebook_size=4, judge=ClassifierJudge(_always(_vit(), 2)))
    real = torch.rand(4, 1, 8, 8) * 2 - 1
    tokens = torch.zeros(4, 2, 2, dtype=torch.long)
    metrics.update_real(real, torch.tensor([2, 2, 2, 1]), tokens, reconstructions=real)
    metrics.update_generated(torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([2, 0, 1, 2]), tokens)
    result = metrics.compute()
    assert result["real_accuracy"] == pytest.approx(0.75)  # 3 of the 4 real images are of class 2
    assert result["conditional_accuracy"] == pytest.approx(0.5)  # 2 of the 4 samples were asked for class 2
    assert result["relative_conditional_accuracy"] == pytest.approx(0.5 / 0.75)
    assert result["reconstruction_classifier_fid"] == pytest.approx(0.0, abs=1e-6)  # reconstructions == originals


def test_frechet_distance_is_zero_for_identical_sets_and_the_squared_shift_for_shifted_ones():
    # Features = per-image mean of each half of the image: 2-D, and a constant pixel shift c moves both by c.
    def halves(images):
        return torch.stack([images[..., :4].mean(dim=(1, 2, 3)), images[..., 4:].mean(dim=(1, 2, 3))], dim=1)

    extractor = CallableFeatureExtractor(halves, num_features=2)
    generator = torch.Generator().manual_seed(0)
    real = torch.rand(64, 1, 8, 8, generator=generator) - 0.5
    metrics = GenerationMetrics(codebook_size=2, inception=extractor)
    tokens = torch.zeros(64, 1, 1, dtype=torch.long)
    shifted = real.clone()
    shifted[..., :4] += 0.3
    shifted[..., 4:] -= 0.4
    metrics.update_real(real, None, tokens, reconstructions=real)
    metrics.update_generated(shifted, None, tokens)
    result = metrics.compute()
    # Equal covariances: FID = |mean difference|^2 = 0.3^2 + 0.4^2.
    assert result["inception_fid"] == pytest.approx(0.25, rel=1e-4)
    assert result["reconstruction_inception_fid"] == pytest.approx(0.0, abs=1e-6)
    assert "inception_fid_ratio" not in result  # no ratio to a floor of zero
    assert "conditional_accuracy" not in result and "classifier_fid" not in result  # no judge given

    # The floor from reconstructions of other images: here the shifted set stands for them.
    floor = GenerationMetrics(codebook_size=2, inception=extractor)
    floor.update_real(real, None, tokens)
    floor.update_reconstructions(shifted)
    floor.update_generated(real, None, tokens)
    result = floor.compute()
    assert result["reconstruction_inception_fid"] == pytest.approx(0.25, rel=1e-4)
    assert result["inception_fid"] == pytest.approx(0.0, abs=1e-6) and result["inception_fid_ratio"] == pytest.approx(
        0.0, abs=1e-4
    )


def test_token_statistics_of_generated_and_real_tokens():
    metrics = GenerationMetrics(codebook_size=8)
    metrics.update_real(None, None, torch.tensor([[[0, 1], [2, 3]], [[4, 5], [6, 7]]]))
    metrics.update_generated(torch.zeros(2, 1, 8, 8), None, torch.tensor([[[0, 0], [0, 0]], [[1, 1], [1, 1]]]))
    result = metrics.compute()
    assert result["real_usage"] == 1.0 and result["real_perplexity"] == pytest.approx(8.0)
    assert result["generated_usage"] == 0.25 and result["generated_perplexity"] == pytest.approx(2.0)
    assert math.isfinite(result["generated_perplexity"])


def test_classifier_metrics_need_the_real_images():
    metrics = GenerationMetrics(codebook_size=2, judge=ClassifierJudge(_vit()))
    with pytest.raises(ValueError, match="need the real images"):
        metrics.update_real(None, None, torch.zeros(1, 1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(batch, 1 or 3, height, width\)"):
        metrics.update_generated(torch.zeros(1, 8, 8), None, torch.zeros(1, 1, 1, dtype=torch.long))


def test_judge_of_other_images_or_other_layout_is_refused(tmp_path):
    _vit(image_size=8).save_pretrained(tmp_path / "vit")
    assert load_classifier_judge(str(tmp_path / "vit"), image_size=8, num_channels=1).num_labels == 3
    with pytest.raises(ValueError, match="image_size=8, the generated images have image_size=16"):
        load_classifier_judge(str(tmp_path / "vit"), image_size=16, num_channels=1)
    with pytest.raises(TypeError, match="pixel_vit"):
        ClassifierJudge(torch.nn.Linear(2, 2))


def test_image_grid_has_one_row_per_class(tmp_path):
    images = -torch.ones(6, 1, 8, 8)  # black ([-1, 1] images)
    images[3:] = 1.0  # second row white
    path = save_image_grid(images, tmp_path / "grid.png", columns=3)
    grid = PIL.Image.open(path)
    assert grid.size == (3 * 8 + 4 * 2, 2 * 8 + 3 * 2)
    assert grid.getpixel((2, 2)) == 0 and grid.getpixel((2, 2 + 8 + 2)) == 255
