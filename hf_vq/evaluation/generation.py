"""How good a token prior's samples are, measured without downloadable Inception weights.

A classifier that hf_vq trains itself on the same data (`hf-vq train-classifier --model_type pixel_vit`) is the
judge:

- conditional accuracy: the share of generated images that it classifies as the class they were generated for,
  beside its accuracy on real test images (the ceiling: a perfect generator scores as well as the real data);
- classifier FID: the Frechet distance between its pre-logit features (the final-layer class token) of generated
  images and of real test images, beside the same distance for the tokenizer's reconstructions of those test
  images (the floor: a prior over these tokens cannot beat the decoder that turns them into pixels);
- Inception FID of both, when the Inception weights are given (`InceptionFeatureExtractor`);
- codebook usage and perplexity of the generated tokens beside those of the real images' tokens (a prior that
  collapses onto a few codes shows here first);
- within-class diversity of the generated token grids over that of the real ones (`diversity.py`: 1.0 is as diverse
  as the data; guidance and low temperature push it down).

The Frechet distances are torchmetrics' `FrechetInceptionDistance` over any feature module (see `fid.py`), so
they reduce across processes like the reconstruction metrics. Classifier-feature distances compare runs judged by
the same classifier, not published FIDs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.image.fid import FrechetInceptionDistance

from .diversity import WithinClassDiversity, diversity_ratio
from .fid import FIDFeatureExtractor, as_feature_module
from .metrics import CodebookUsage

__all__ = ["ClassifierJudge", "GenerationMetrics", "load_classifier_judge"]


class ClassifierJudge(nn.Module):
    """An image classifier split into its pre-logit features (`forward`, for the Frechet distance) and its
    predictions (`predict`), both from one pass of images (B, C, H, W) in [-1, 1].

    Works with classifiers laid out like transformers' `ViTForImageClassification`: a base model (named by
    `base_model_prefix`) whose `last_hidden_state[:, 0]` is the class token after the final norm, and a `classifier`
    head on it.

    Example:

    ```python
    >>> import torch
    >>> from transformers import ViTConfig, ViTForImageClassification
    >>> from hf_vq.evaluation import ClassifierJudge
    >>> vit = ViTForImageClassification(ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16,
    ...     num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=3)).eval()
    >>> judge = ClassifierJudge(vit)
    >>> judge(torch.zeros(2, 1, 8, 8)).shape, judge.num_features, judge.num_labels
    (torch.Size([2, 16]), 16, 3)

    ```
    """

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        prefix = getattr(classifier, "base_model_prefix", None)
        if (
            not prefix
            or not hasattr(classifier, prefix)
            or not isinstance(getattr(classifier, "classifier", None), nn.Module)
        ):
            raise TypeError(
                f"{type(classifier).__name__} is not laid out as an image classifier with a base model and a "
                "`classifier` head (as transformers' ViTForImageClassification); train one with `hf-vq "
                "train-classifier --model_type pixel_vit`"
            )
        self.classifier = classifier.eval().requires_grad_(False)
        self.num_features = int(classifier.config.hidden_size)
        self.num_labels = int(classifier.config.num_labels)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        base = getattr(self.classifier, self.classifier.base_model_prefix)
        return base(pixel_values=images.float()).last_hidden_state[:, 0]

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._features(images).float()

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class ids (B,)."""
        return self.classifier.classifier(self._features(images)).argmax(-1)


def load_classifier_judge(
    name_or_path: str, image_size: int | None = None, num_channels: int | None = None
) -> ClassifierJudge:
    """The classifier saved by `hf-vq train-classifier --model_type pixel_vit` (folder or Hub id), checked against
    the images it will judge."""
    from transformers import AutoModelForImageClassification

    classifier = AutoModelForImageClassification.from_pretrained(name_or_path)
    config = classifier.config
    expected = {"image_size": image_size, "num_channels": num_channels}
    for name, value in expected.items():
        if value is not None and getattr(config, name, value) != value:
            raise ValueError(
                f"the evaluation classifier {name_or_path} takes images with {name}={getattr(config, name)}, the "
                f"generated images have {name}={value}: train it on the same data and tokenizer (`hf-vq "
                "train-classifier --model_type pixel_vit --tokenizer_name_or_path <the prior's tokenizer>`)"
            )
    return ClassifierJudge(classifier)


class GenerationMetrics(nn.Module):
    """Conditional accuracy, classifier FID (generated and reconstructed vs real), optional Inception FID, and
    codebook usage / perplexity of generated vs real tokens.

    `update_real(images, labels, image_tokens, reconstructions)` adds real test images, their class ids, their token
    grids and (optionally) the tokenizer's reconstructions of them; `update_reconstructions(reconstructions)` adds
    reconstructions of other real images instead (an independent set, as the samples are: the fairer floor, since a
    Frechet distance between two finite independent sets is not zero even for one distribution);
    `update_generated(images, labels, image_tokens)` adds samples
    and the classes they were generated for (None for an unconditional prior: no conditional accuracy then).
    `compute()` returns floats; metrics whose inputs were not given are left out. Images are (B, C, H, W) in [-1, 1].
    Use as many generated images as real ones: a Frechet distance estimated from fewer samples is larger.

    Example:

    ```python
    >>> import torch
    >>> from hf_vq.evaluation import CallableFeatureExtractor, GenerationMetrics
    >>> metrics = GenerationMetrics(codebook_size=4)
    >>> tokens = torch.tensor([[[0, 1], [2, 3]]])
    >>> metrics.update_real(torch.zeros(1, 1, 8, 8), None, tokens)
    >>> metrics.update_generated(torch.zeros(1, 1, 8, 8), None, torch.zeros_like(tokens))
    >>> {name: round(value, 3) for name, value in sorted(metrics.compute().items())}
    {'generated_perplexity': 1.0, 'generated_usage': 0.25, 'real_perplexity': 4.0, 'real_usage': 1.0}

    ```
    """

    def __init__(
        self,
        codebook_size: int,
        judge: ClassifierJudge | None = None,
        inception: FIDFeatureExtractor | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.real_tokens = CodebookUsage(codebook_size)
        self.generated_tokens = CodebookUsage(codebook_size)
        # Classes of the within-class diversity: the data's (the judge's labels by default); 1 without labels.
        num_classes = num_classes or (judge.num_labels if judge is not None else 1)
        self.real_diversity = WithinClassDiversity(num_classes, codebook_size)
        self.generated_diversity = WithinClassDiversity(num_classes, codebook_size)
        self.judge = judge
        if judge is not None:
            self.real_accuracy = MulticlassAccuracy(judge.num_labels, average="micro")
            self.conditional_accuracy = MulticlassAccuracy(judge.num_labels, average="micro")
            self.classifier_fid = _frechet(judge)
            self.reconstruction_classifier_fid = _frechet(judge)
        if inception is not None:
            self.inception_fid = _frechet(inception)
            self.reconstruction_inception_fid = _frechet(inception)
        self.has_inception = inception is not None
        self.has_reconstructions = False
        self.has_conditional = False
        self.has_unconditional_samples = False

    @torch.no_grad()
    def update_real(
        self,
        images: torch.Tensor | None,
        labels: torch.Tensor | None,
        image_tokens: torch.Tensor,
        reconstructions: torch.Tensor | None = None,
    ) -> None:
        """`images` may be None when neither a judge nor Inception features are measured (token statistics only)."""
        self.real_tokens.update(image_tokens)
        self.real_diversity.update(image_tokens, labels)
        if images is None:
            if self.judge is not None or self.has_inception:
                raise ValueError("the classifier and Inception metrics need the real images: pass images=...")
            return
        images = _check_images(images, "real images")
        pairs = []
        if self.judge is not None:
            if labels is not None:
                self.real_accuracy.update(self.judge.predict(images), labels.to(images.device))
            pairs.append((self.classifier_fid, self.reconstruction_classifier_fid))
        if self.has_inception:
            pairs.append((self.inception_fid, self.reconstruction_inception_fid))
        if reconstructions is not None:
            reconstructions = _check_images(reconstructions, "reconstructions")
            self.has_reconstructions = True
        for generated_fid, reconstruction_fid in pairs:
            generated_fid.update(images, real=True)
            reconstruction_fid.update(images, real=True)
            if reconstructions is not None:
                reconstruction_fid.update(reconstructions, real=False)

    @torch.no_grad()
    def update_reconstructions(self, reconstructions: torch.Tensor) -> None:
        """Add the tokenizer's reconstructions of real images other than those given to `update_real` (the floor
        then carries the same finite-sample error as the samples' distance: two independent sets of N images)."""
        reconstructions = _check_images(reconstructions, "reconstructions")
        self.has_reconstructions = True
        for metric in self._reconstruction_fids():
            metric.update(reconstructions, real=False)

    def _reconstruction_fids(self) -> list[FrechetInceptionDistance]:
        fids = [self.reconstruction_classifier_fid] if self.judge is not None else []
        return fids + ([self.reconstruction_inception_fid] if self.has_inception else [])

    @torch.no_grad()
    def update_generated(self, images: torch.Tensor, labels: torch.Tensor | None, image_tokens: torch.Tensor) -> None:
        images = _check_images(images, "generated images")
        self.generated_tokens.update(image_tokens)
        self.generated_diversity.update(image_tokens, labels)
        self.has_unconditional_samples = self.has_unconditional_samples or labels is None
        if self.judge is not None:
            if labels is not None:
                self.conditional_accuracy.update(self.judge.predict(images), labels.to(images.device))
                self.has_conditional = True
            self.classifier_fid.update(images, real=False)
        if self.has_inception:
            self.inception_fid.update(images, real=False)

    def compute(self) -> dict[str, float]:
        """Every metric that its inputs allow, over everything added so far (over all processes)."""
        result: dict[str, float] = {}
        for prefix, usage in (("real", self.real_tokens), ("generated", self.generated_tokens)):
            if int(usage.counts.sum()) > 0:
                statistics = usage.compute()
                result[f"{prefix}_usage"] = float(statistics["codebook_usage"])
                result[f"{prefix}_perplexity"] = float(statistics["perplexity"])
        result.update(self._diversity())
        if self.judge is not None:
            if self.real_accuracy.update_count:
                result["real_accuracy"] = float(self.real_accuracy.compute())
            if self.has_conditional:
                result["conditional_accuracy"] = float(self.conditional_accuracy.compute())
            result.update(
                _frechet_pair(
                    "classifier_fid", self.classifier_fid, self.reconstruction_classifier_fid, self.has_reconstructions
                )
            )
        if self.has_inception:
            result.update(
                _frechet_pair(
                    "inception_fid", self.inception_fid, self.reconstruction_inception_fid, self.has_reconstructions
                )
            )
        if result.get("real_accuracy") and "conditional_accuracy" in result:
            result["relative_conditional_accuracy"] = result["conditional_accuracy"] / result["real_accuracy"]
        return result

    def _diversity(self) -> dict[str, float]:
        """Within-class diversity of real and generated grids and their ratio, where both have pairs of grids."""
        pooled = self.has_unconditional_samples
        values = {}
        for prefix, metric in (("real", self.real_diversity), ("generated", self.generated_diversity)):
            value = metric.pooled() if pooled else float(metric.compute())
            if math.isfinite(value):
                values[f"{prefix}_diversity"] = value
        ratio = diversity_ratio(self.generated_diversity, self.real_diversity, pooled=pooled)
        if len(values) == 2 and math.isfinite(ratio):
            values["diversity_ratio"] = ratio
        return values


def _frechet(extractor: FIDFeatureExtractor) -> FrechetInceptionDistance:
    return FrechetInceptionDistance(feature=as_feature_module(extractor), reset_real_features=True)


def _frechet_pair(
    name: str, generated: FrechetInceptionDistance, reconstructed: FrechetInceptionDistance, has_reconstructions: bool
) -> dict[str, float]:
    """`name` (generated vs real), `reconstruction_name` (the floor) and their ratio `name_ratio`, where there are
    samples."""
    result: dict[str, float] = {}
    if generated.fake_features_num_samples >= 2 and generated.real_features_num_samples >= 2:
        result[name] = float(generated.compute())
    if has_reconstructions and reconstructed.fake_features_num_samples >= 2:
        result[f"reconstruction_{name}"] = float(reconstructed.compute())
    floor = result.get(f"reconstruction_{name}")
    if name in result and floor is not None and math.isfinite(floor) and floor > 0:
        result[f"{name}_ratio"] = result[name] / floor
    return result


def _check_images(images: Any, what: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{what} must be a (batch, 1 or 3, height, width) tensor in [-1, 1], got {shape}")
    return images.float().clamp(-1.0, 1.0)
