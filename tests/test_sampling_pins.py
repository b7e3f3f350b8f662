"""Exact behaviour of the generation stack (issue 25): the MaskGIT scheduler's choice noise and its count of tokens
fixed per step, the training mask, which class label each generated image gets, classifier-free guidance at every
scale, the autoregressive sampler's temperature and generators, the pipelines' input helpers and the loading of saved
pipeline folders. Each test pins a number or a set that a plausible one-line bug changes (scripts/mutants.toml)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hf_vq import (
    AutoregressivePipeline,
    MaskGITModel,
    MaskGITPipeline,
    MaskGITScheduler,
    VQGANImageProcessor,
    VQGANModel,
    VQGANPipeline,
)
from hf_vq.pipelines.autoregressive import GuidedCodeSampler, autoregressive_prior_fields
from hf_vq.pipelines.pipeline_inputs import class_names
from hf_vq.schedulers.scheduling_maskgit import mask_tokens

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
CODES = 32  # configs/vqgan_tiny.yaml: 32 codes, 8x8 grid


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return VQGANModel.from_pretrained(tokenizer_dir).eval()


@pytest.fixture(scope="module")
def maskgit_pipe(tokenizer, tokenizer_dir):
    torch.manual_seed(0)
    # A wide initialisation gives an untrained prior confident, label-dependent predictions, as a trained one has.
    prior = MaskGITModel.from_tokenizer(
        str(tokenizer_dir), tokenizer=tokenizer, num_classes=10, initializer_range=0.5, **TINY
    ).eval()
    pipeline = MaskGITPipeline(vqgan=tokenizer, transformer=prior, scheduler=MaskGITScheduler(mask_token_id=CODES))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


# ------------------------------------------------------------------------------------------- MaskGIT scheduler


def uniform_logits(admissible: list[int], codes: int) -> torch.Tensor:
    """Logits (1, L, codes) where position p's code is uniform over its first `admissible[p]` codes: every code it
    can sample then has log-probability exactly -log(admissible[p]), whichever is drawn."""
    logits = torch.full((1, len(admissible), codes), -1e4)
    for position, count in enumerate(admissible):
        logits[0, position, :count] = 0.0
    return logits


def expected_still_masked(steps: int, step_index: int, length: int, temperature: float, admissible, seed: int):
    """The positions a step leaves masked on a fully masked grid, computed from the scheduler's documented rule with
    the same random numbers: the generator draws one uniform number per position for the code, then one for the
    Gumbel noise; confidence = log p(code) + temperature * (1 - (i + 1) / N) * gumbel; the
    `floor(L cos(pi/2 (i + 1) / N))` least confident stay masked (at least 1 and at most L - 1 before the end)."""
    generator = seeded(seed)
    torch.rand((1, length, 1), generator=generator)  # the draw that picks the codes
    uniform = torch.rand((1, length), generator=generator)
    gumbel = -torch.log((-torch.log(uniform.clamp(min=1e-20))).clamp(min=1e-20))
    log_prob = -torch.log(torch.tensor(admissible, dtype=torch.float32))[None]
    confidence = log_prob + temperature * (1.0 - (step_index + 1) / steps) * gumbel
    if step_index == steps - 1:
        return set()
    count = min(max(math.floor(length * math.cos(math.pi / 2 * (step_index + 1) / steps)), 1), length - 1)
    return set(confidence[0].argsort()[:count].tolist())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scheduler_choice_noise_is_annealed_from_the_first_step_to_the_last(seed):
    """With the noise fixed (a seeded generator replayed by hand), the masked set of every step is exact: it is the
    one the noise scale `temperature * (1 - (i + 1) / N)` gives, and not the one of the neighbouring scales."""
    steps, length, codes, temperature = 5, 24, 8, 2.0
    admissible = [1 + (position * 5) % codes for position in range(length)]
    logits = uniform_logits(admissible, codes)
    scheduler = MaskGITScheduler(mask_token_id=codes)
    scheduler.set_timesteps(steps)
    for step_index, timestep in enumerate(scheduler.timesteps):
        sample = torch.full((1, length), codes)
        out = scheduler.step(logits, timestep, sample, temperature=temperature, generator=seeded(seed)).prev_sample
        masked = set((out[0] == codes).nonzero()[:, 0].tolist())
        expected = expected_still_masked(steps, step_index, length, temperature, admissible, seed)
        assert masked == expected, step_index
        # Every fixed position took one of its admissible codes.
        fixed = out[0] != codes
        assert (out[0][fixed] < torch.tensor(admissible)[fixed]).all()


def test_scheduler_without_noise_keeps_the_least_likely_positions_masked():
    """temperature 0: confidence is the log-probability alone, so the positions with the most admissible codes stay
    masked, at every step."""
    length, codes = 16, 8
    admissible = [1 + position % codes for position in range(length)]  # 8 appears at positions 7 and 15
    scheduler = MaskGITScheduler(mask_token_id=codes)
    scheduler.set_timesteps(4)
    out = scheduler.step(
        uniform_logits(admissible, codes), 2, torch.full((1, length), codes), temperature=0.0, generator=seeded(0)
    ).prev_sample
    # Step 1 of 4 keeps floor(16 cos(pi/4)) = 11 masked, the least likely: the ten positions with 4 to 8 admissible
    # codes and one of the two with 3 (a tie); the six with 1 to 2 codes, and one with 3, are fixed.
    masked = (out[0] == codes).nonzero()[:, 0].tolist()
    assert len(masked) == 11 and {3, 4, 5, 6, 7, 11, 12, 13, 14, 15} <= set(masked)
    assert not {0, 1, 8, 9} & set(masked)


@pytest.mark.parametrize(
    "steps, length, still_masked",
    [
        (4, 16, [14, 11, 6, 0]),  # the cosine schedule binds: floor(16 cos(pi/2 (i+1)/4))
        (10, 4, [3, 2, 1, 1, 1, 1, 1, 1, 1, 0]),  # more steps than tokens: one fixed per step, one kept to the end
        (3, 2, [1, 1, 0]),
    ],
)
def test_scheduler_fixes_an_exact_count_of_tokens_per_step(steps, length, still_masked):
    scheduler = MaskGITScheduler(mask_token_id=CODES)
    scheduler.set_timesteps(steps)
    generator = seeded(0)
    sample = torch.full((2, length), CODES)
    counts = []
    for timestep in scheduler.timesteps:
        logits = torch.randn(2, length, CODES, generator=generator)
        sample = scheduler.step(logits, timestep, sample, generator=generator).prev_sample
        counts.append((sample == CODES).sum(dim=1).tolist())
    assert counts == [[count, count] for count in still_masked]


def test_scheduler_draws_codes_from_the_softmax_over_codes():
    """Each masked position draws its code from softmax(logits) over the codes (not over the positions)."""
    codes, draws = 4, 8000
    probabilities = torch.tensor([0.1, 0.2, 0.3, 0.4])
    logits = probabilities.log().expand(1, draws, codes).clone()
    # A quarter of the positions prefer code 0 (uneven, so that a softmax over positions would change the draws).
    logits[0, : draws // 4] = probabilities.flip(0).log()
    scheduler = MaskGITScheduler(mask_token_id=codes)
    scheduler.set_timesteps(1)
    out = scheduler.step(logits, 0, torch.full((1, draws), codes), generator=seeded(0)).prev_sample[0]
    for part, expected in ((out[: draws // 4], probabilities.flip(0)), (out[draws // 4 :], probabilities)):
        frequencies = torch.bincount(part, minlength=codes).float() / part.numel()
        torch.testing.assert_close(frequencies, expected, atol=0.035, rtol=0)


def test_mask_tokens_masks_the_drawn_count_of_each_sample():
    """Per sample, exactly ceil(L cos(pi/2 u)) positions (at least one), u = 1 - U[0, 1) drawn first from the
    generator."""
    batch, length = 256, 20
    tokens = torch.randint(0, CODES, (batch, length))
    inputs, labels = mask_tokens(tokens, CODES, generator=seeded(3))
    u = 1.0 - torch.rand(batch, generator=seeded(3))
    expected = torch.ceil(torch.cos(math.pi / 2 * u) * length).clamp(min=1, max=length).long()
    assert torch.equal((inputs == CODES).sum(dim=1), expected)
    assert torch.equal(labels != -100, inputs == CODES)


# ------------------------------------------------------------------------------------------- MaskGIT pipeline


def test_maskgit_class_labels_expand_per_image_in_order(maskgit_pipe):
    assert maskgit_pipe._prepare_class_labels([1, 4], 3, None).tolist() == [1, 1, 1, 4, 4, 4]
    # With one generator per image, an image depends only on its generator and its label: the copies of a label
    # follow each other, and each equals that label sampled alone with the same seed.
    kwargs = {"num_inference_steps": 3, "output_type": "np"}
    tokens = maskgit_pipe(
        class_labels=[1, 4], num_images_per_prompt=2, generator=[seeded(7) for _ in range(4)], **kwargs
    ).image_tokens
    alone = {
        label: maskgit_pipe(class_labels=[label], generator=[seeded(7)], **kwargs).image_tokens[0] for label in (1, 4)
    }
    assert torch.equal(tokens[0], alone[1]) and torch.equal(tokens[1], alone[1])
    assert torch.equal(tokens[2], alone[4]) and torch.equal(tokens[3], alone[4])
    assert not torch.equal(alone[1], alone[4])


def test_maskgit_unconditional_batch_size_times_images_per_prompt(maskgit_pipe):
    out = maskgit_pipe(batch_size=2, num_images_per_prompt=3, num_inference_steps=1, output_type="np")
    assert out.image_tokens.shape == (6, 8, 8) and out.images.shape == (6, 16, 16, 3)
    labels = maskgit_pipe._prepare_class_labels(None, 3, 2)
    assert labels.tolist() == [maskgit_pipe.transformer.config.null_class_id] * 6


@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0, 2.5])
def test_maskgit_guidance_combines_the_logits_as_documented_at_every_scale(maskgit_pipe, scale):
    """`uncond + guidance_scale * (cond - uncond)`: 0 is the unconditional prediction, 1 the conditional one."""
    tokens = torch.full((2, 64), CODES)
    tokens[:, ::3] = torch.arange(0, 64, 3) % CODES  # a partly decoded grid
    labels = torch.tensor([2, 7])
    with torch.no_grad():
        conditional = maskgit_pipe.transformer(tokens, class_labels=labels).logits
        unconditional = maskgit_pipe.transformer(tokens).logits
        guided = maskgit_pipe._guided_logits(tokens, labels, scale)
    expected = unconditional + scale * (conditional - unconditional)
    torch.testing.assert_close(guided, expected, rtol=1e-4, atol=1e-4)
    if scale == 0.0:
        assert not torch.allclose(guided, conditional, atol=1e-3)  # the test can tell the two apart


# ------------------------------------------------------------------------------------ autoregressive pipeline


def test_autoregressive_sampler_applies_the_temperature_exactly():
    """Codes are drawn from softmax(logits / temperature) over the codes, with the caller's generator."""
    rows, codes, temperature = 64, 6, 2.5
    scores = torch.randn(rows, codes + 3, generator=seeded(1)) * 3
    sampler = GuidedCodeSampler(codebook_size=codes, temperature=temperature, generator=seeded(4))
    drawn = sampler(torch.zeros(rows, 1, dtype=torch.long), scores).argmax(dim=-1)
    expected = torch.multinomial((scores[:, :codes] / temperature).softmax(dim=-1), 1, generator=seeded(4))[:, 0]
    assert torch.equal(drawn, expected)
    sharper = torch.multinomial((scores[:, :codes] * temperature).softmax(dim=-1), 1, generator=seeded(4))[:, 0]
    assert not torch.equal(drawn, sharper)  # the test can tell the temperature from its inverse


@pytest.fixture(scope="module")
def autoregressive_pipe(tokenizer):
    torch.manual_seed(0)
    fields = autoregressive_prior_fields(tokenizer.config, 3, tokenizer_name_or_path="tiny")
    config = LlamaConfig(**TINY, num_key_value_heads=2, **fields, initializer_range=0.5)
    pipeline = AutoregressivePipeline(vqgan=tokenizer, transformer=LlamaForCausalLM(config).eval())
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.mark.parametrize("count", [1, 3])
def test_autoregressive_refuses_a_generator_list_of_another_length(autoregressive_pipe, count):
    with pytest.raises(ValueError, match=f"list of {count} generators, but 2 images"):
        autoregressive_pipe(class_labels=[0, 1], generator=[seeded(i) for i in range(count)], output_type="pt")


# ------------------------------------------------------------------------------------------- pipeline inputs


def test_class_names_fill_every_unnamed_class_with_a_placeholder():
    config = SimpleNamespace(num_classes=3, id2label={"2": "Bag", 0: "T-shirt"})
    assert class_names(config) == {0: "T-shirt", 1: "LABEL_1", 2: "Bag"}
    assert class_names(SimpleNamespace(num_classes=2, id2label=None)) == {0: "LABEL_0", 1: "LABEL_1"}
    # Names beyond num_classes (a config edited by hand) are not classes of the prior.
    assert class_names(SimpleNamespace(num_classes=1, id2label={0: "a", 5: "b"})) == {0: "a"}


# ------------------------------------------------------------------------------------------- saved folders


def test_installed_loading_honours_a_dtype_per_component_and_passed_components(maskgit_pipe, tokenizer, tmp_path):
    maskgit_pipe.save_pretrained(tmp_path / "pipe")
    loaded = MaskGITPipeline.from_pretrained(
        tmp_path / "pipe", dtype={"transformer": torch.bfloat16, "default": torch.float32}
    )
    assert loaded.transformer.dtype == torch.bfloat16 and loaded.vqgan.dtype == torch.float32
    with_tokenizer = MaskGITPipeline.from_pretrained(tmp_path / "pipe", vqgan=tokenizer)
    assert with_tokenizer.vqgan is tokenizer and type(with_tokenizer.transformer) is MaskGITModel


def test_vqgan_pipeline_reconstructs_with_a_bfloat16_tokenizer_and_each_output_type(tokenizer_dir):
    image = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    processor = VQGANImageProcessor.from_pretrained(tokenizer_dir)
    pipe = VQGANPipeline(vqgan=VQGANModel.from_pretrained(tokenizer_dir).eval(), image_processor=processor)
    as_array = pipe(images=[image], output_type="np").images
    assert isinstance(as_array, np.ndarray) and as_array.shape == (1, 16, 16, 3) and as_array.dtype == np.uint8
    as_tensor = pipe(images=[image], output_type="pt").images
    assert as_tensor.shape == (1, 3, 16, 16) and as_tensor.dtype == torch.float32
    bfloat16 = VQGANModel.from_pretrained(tokenizer_dir, dtype=torch.bfloat16).eval()
    half = VQGANPipeline(vqgan=bfloat16, image_processor=processor)
    out = half(images=[image], output_type="pt")
    assert out.images.shape == (1, 3, 16, 16) and out.image_tokens.shape == (1, 8, 8)


@pytest.mark.parametrize("labels", [[True, False], True, torch.tensor([True, True])])
def test_boolean_class_labels_are_refused_by_every_pipeline(maskgit_pipe, autoregressive_pipe, labels):
    """A boolean mask passed as class labels (say `labels == 3`) must not generate classes 0 and 1 in silence."""
    for pipe in (maskgit_pipe, autoregressive_pipe):
        with pytest.raises(ValueError, match="class_labels must be an int or a non-empty list of ints"):
            pipe(class_labels=labels, output_type="pt")
