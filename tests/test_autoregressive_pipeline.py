"""AutoregressivePipeline: transformers' LlamaForCausalLM over a tokenizer's codes, sampled through generate()."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from hf_vq import AutoregressivePipeline, VQGANConfig, VQGANModel
from hf_vq.pipelines.autoregressive import GuidedCodeSampler, autoregressive_prior_fields
from hf_vq.pipelines.pipeline_inputs import label_ids
from hf_vq.pipelines.autoregressive.pipeline_autoregressive import prepare_class_labels

TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "intermediate_size": 64,
}
CODES, CLASSES = 32, 3  # configs/vqgan_tiny.yaml's codebook; three classes


def build_prior(tokenizer_config, num_classes=CLASSES, seed=0, **kwargs) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    fields = autoregressive_prior_fields(tokenizer_config, num_classes, tokenizer_name_or_path="tiny")
    # A wide initialisation gives an untrained prior confident, class-dependent predictions, as a trained one has.
    config = LlamaConfig(**TINY, **fields, initializer_range=0.5, **kwargs)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return VQGANModel.from_pretrained(tokenizer_dir).eval()


@pytest.fixture(scope="module")
def pipe(tokenizer):
    prior = build_prior(tokenizer.config)
    prior.config.id2label = {0: "T-shirt", 1: "Sneaker", 2: "Bag"}
    pipeline = AutoregressivePipeline(vqgan=tokenizer, transformer=prior)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def sample(pipe, seed=0, **kwargs):
    kwargs = {"class_labels": [0, 2], "output_type": "pt", **kwargs}
    return pipe(generator=torch.Generator().manual_seed(seed), **kwargs)


def greedy_by_hand(prior, label: int, guidance_scale: float = 1.0) -> list[int]:
    """Raster-order greedy decoding without generate() or a KV cache: one full forward per position (two with
    guidance: the class token and the null token before the same codes)."""
    codes = []
    for _ in range(64):
        logits = prior(torch.tensor([[CODES + label] + codes, [CODES + CLASSES] + codes])).logits[:, -1, :CODES]
        conditional, unconditional = logits
        codes.append(int((unconditional + guidance_scale * (conditional - unconditional)).argmax()))
    return codes


def test_prior_config_layout(tokenizer):
    prior = build_prior(tokenizer.config)
    config = prior.config
    assert config.vocab_size == CODES + CLASSES + 1 and config.max_position_embeddings == 65
    assert (config.codebook_size, config.num_classes, list(config.grid_size)) == (CODES, CLASSES, [8, 8])
    assert config.pad_token_id == CODES + CLASSES and config.eos_token_id is None


def test_greedy_generation_equals_decoding_by_hand(pipe):
    """Layout (class token first, raster order), the KV cache and the sampler agree with a plain loop."""
    out = sample(pipe, class_labels=[0, 1], temperature=0.0)
    with torch.no_grad():
        expected = [greedy_by_hand(pipe.transformer, label) for label in (0, 1)]
    assert out.image_tokens.reshape(2, 64).tolist() == expected
    assert expected[0] != expected[1]  # the class token conditions the prior


def test_guided_greedy_generation_equals_decoding_by_hand(pipe):
    out = sample(pipe, class_labels=[2, 0], temperature=0.0, guidance_scale=3.0)
    with torch.no_grad():
        expected = [greedy_by_hand(pipe.transformer, label, guidance_scale=3.0) for label in (2, 0)]
        unguided = greedy_by_hand(pipe.transformer, 2)
    assert out.image_tokens.reshape(2, 64).tolist() == expected
    assert expected[0] != unguided  # guidance changed the greedy path


def test_sampling_is_deterministic_and_guidance_changes_it(pipe):
    first, again, other = sample(pipe, seed=0), sample(pipe, seed=0), sample(pipe, seed=1)
    assert first.image_tokens.shape == (2, 8, 8) and first.image_tokens.dtype == torch.int64
    assert torch.equal(first.image_tokens, again.image_tokens) and torch.equal(first.images, again.images)
    assert not torch.equal(first.image_tokens, other.image_tokens)
    guided, guided_again = sample(pipe, guidance_scale=3.0), sample(pipe, guidance_scale=3.0)
    assert torch.equal(guided.image_tokens, guided_again.image_tokens)
    assert not torch.equal(guided.image_tokens, first.image_tokens)
    assert first.images.shape == (2, 3, 16, 16) and 0 <= float(first.images.min()) <= float(first.images.max()) <= 1


def test_class_and_null_tokens_are_never_sampled(tokenizer):
    prior = build_prior(tokenizer.config)
    with torch.no_grad():  # make the class and null tokens by far the most likely next tokens
        prior.lm_head.weight[CODES:] *= 100
    pipeline = AutoregressivePipeline(vqgan=tokenizer, transformer=prior)
    scores = prior(torch.tensor([[CODES]])).logits[0, -1]
    assert int(scores.argmax()) >= CODES  # the test is meaningful: a plain sampler would pick them
    for kwargs in ({"temperature": 5.0}, {"guidance_scale": 2.0, "temperature": 0.0}, {"top_k": 40, "top_p": 1.0}):
        tokens = sample(pipeline, class_labels=[0, 1, 2], **kwargs).image_tokens
        assert 0 <= int(tokens.min()) and int(tokens.max()) < CODES


def test_guidance_combines_logits_as_documented():
    conditional = torch.tensor([[1.0, 4.0, 0.0, 7.0]])
    unconditional = torch.tensor([[2.0, 1.0, 0.0, -7.0]])
    sampler = GuidedCodeSampler(codebook_size=3, guidance_scale=2.5)
    guided = sampler.guided_logits(torch.cat([conditional, unconditional]))
    torch.testing.assert_close(guided, unconditional[:, :3] + 2.5 * (conditional[:, :3] - unconditional[:, :3]))
    # Both rows of a pair are forced to the same drawn code.
    forced = GuidedCodeSampler(codebook_size=3, guidance_scale=2.5, temperature=0.0)(
        torch.zeros(2, 1, dtype=torch.long), torch.cat([conditional, unconditional])
    )
    assert forced.argmax(dim=-1).tolist() == [1, 1] and torch.isinf(forced).sum() == 6


def test_top_k_one_is_greedy(pipe):
    assert torch.equal(sample(pipe, top_k=1, seed=3).image_tokens, sample(pipe, temperature=0.0).image_tokens)


def test_class_labels_expand_per_image_in_order(pipe):
    assert prepare_class_labels([2, 0], 3, num_images_per_prompt=2, batch_size=None).tolist() == [2, 2, 0, 0]
    assert prepare_class_labels(None, 3, num_images_per_prompt=2, batch_size=3).tolist() == [3] * 6
    greedy = sample(pipe, class_labels=[1, 2], num_images_per_prompt=2, temperature=0.0).image_tokens
    assert torch.equal(greedy[0], greedy[1]) and torch.equal(greedy[2], greedy[3])
    assert torch.equal(greedy[0], sample(pipe, class_labels=[1], temperature=0.0).image_tokens[0])


def test_generator_list_gives_each_image_its_own_stream(pipe):
    def with_generators(seeds):
        return pipe(
            class_labels=[0, 1], output_type="pt", generator=[torch.Generator().manual_seed(seed) for seed in seeds]
        ).image_tokens

    first, again, changed = with_generators([5, 6]), with_generators([5, 6]), with_generators([5, 9])
    assert torch.equal(first, again)
    assert torch.equal(first[0], changed[0]) and not torch.equal(first[1], changed[1])
    with pytest.raises(ValueError, match="list of 3 generators, but 2 images"):
        pipe(class_labels=[0, 1], generator=[torch.Generator()] * 3)


def test_step_callback_sees_the_codes_and_can_replace_them(pipe):
    seen = []

    def callback(pipeline, step_index, timestep, tensors):
        seen.append((step_index, tensors["image_tokens"].clone(), tensors["logits"].shape))
        return {"image_tokens": torch.full_like(tensors["image_tokens"], 7)} if step_index == 10 else {}

    out = sample(pipe, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["image_tokens", "logits"])
    assert [step for step, _, _ in seen] == list(range(64))
    assert all(tokens.shape == (2, step + 1) and shape == (2, CODES) for step, tokens, shape in seen)
    flat = out.image_tokens.reshape(2, 64)
    assert torch.equal(seen[-1][1], flat) and flat[:, 10].tolist() == [7, 7]
    with pytest.raises(ValueError, match=r"names \['latents'\].*choose from \['image_tokens', 'logits'\]"):
        sample(pipe, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents"])


def test_output_type_latent_and_num_timesteps(pipe):
    """diffusers' conventions: `output_type="latent"` skips the decoder; `num_timesteps` counts the steps a callback
    sees (one per code)."""
    steps = []
    latent = sample(pipe, output_type="latent", callback_on_step_end=lambda p, i, t, kw: steps.append(i) or kw)
    assert torch.equal(latent.images, latent.image_tokens) and latent.images.shape == (2, 8, 8)
    assert torch.equal(latent.image_tokens, sample(pipe).image_tokens)
    assert pipe.num_timesteps == 64 and steps == list(range(pipe.num_timesteps))


def test_class_names(pipe):
    assert pipe.id2label == {0: "T-shirt", 1: "Sneaker", 2: "Bag"}
    assert pipe.get_label_ids(["Sneaker", "Bag"]) == [1, 2] and pipe.get_label_ids("T-shirt") == [0]
    with pytest.raises(ValueError, match=r"unknown class name\(s\) \['Boot'\].*'Bag', 'Sneaker', 'T-shirt'"):
        pipe.get_label_ids(["Bag", "Boot"])
    assert label_ids({0: "a"}, []) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"class_labels": [0, 3]}, r"class labels must lie in \[0, 2\].*got \[3\]"),
        ({"class_labels": [-1]}, r"class labels must lie in \[0, 2\]"),
        ({"top_k": 0}, "top_k must be an integer >= 1"),
        ({"top_p": 0.0}, r"top_p must lie in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p must lie in \(0, 1\]"),
        ({"guidance_scale": float("nan")}, "guidance_scale must be a finite number"),
        ({"guidance_scale": "2"}, "guidance_scale must be a number"),
        ({"temperature": float("inf")}, "temperature must be a finite number"),
        ({"temperature": -1.0}, "temperature must be a finite number >= 0"),
        ({"class_labels": None, "guidance_scale": 2.0}, "guidance_scale=2.0 steers samples towards class labels"),
        ({"num_images_per_prompt": 0}, "num_images_per_prompt must be an integer >= 1"),
        ({"output_type": "jpeg"}, "output_type must be .pil., .np., .pt. or .latent."),
    ],
)
def test_bad_sampling_arguments(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(**{"class_labels": [0], **kwargs})


def test_mismatched_and_unsupported_tokenizers_are_refused(tokenizer):
    prior = build_prior(tokenizer.config)
    other = VQGANConfig(**{**tokenizer.config.to_dict(), "codebook_size": 64})
    with pytest.raises(ValueError, match="codebook_size=64 but .* codebook_size=32"):
        AutoregressivePipeline(vqgan=VQGANModel(other), transformer=prior)
    bigger = VQGANConfig(**{**tokenizer.config.to_dict(), "image_size": 32, "attention_resolutions": [16]})
    with pytest.raises(ValueError, match="16x16 token grid but .* 8x8 grids"):
        AutoregressivePipeline(vqgan=VQGANModel(bigger), transformer=prior)
    grouped = VQGANConfig(**{**tokenizer.config.to_dict(), "quantizer_type": "grouped", "num_groups": 2})
    with pytest.raises(ValueError, match="does not support grouped tokenizers"):
        autoregressive_prior_fields(grouped, num_classes=3)
    with pytest.raises(ValueError, match="not supported yet"):
        AutoregressivePipeline(vqgan=VQGANModel(grouped), transformer=prior)
    plain = LlamaForCausalLM(LlamaConfig(**TINY, vocab_size=40))
    with pytest.raises(ValueError, match="not an hf_vq autoregressive prior"):
        AutoregressivePipeline(vqgan=tokenizer, transformer=plain)


def test_unconditional_prior(tokenizer):
    prior = build_prior(tokenizer.config, num_classes=0)
    pipeline = AutoregressivePipeline(vqgan=tokenizer, transformer=prior)
    out = pipeline(batch_size=2, output_type="pt", generator=torch.Generator().manual_seed(0))
    assert out.image_tokens.shape == (2, 8, 8) and int(out.image_tokens.max()) < CODES
    with pytest.raises(ValueError, match="this prior is unconditional"):
        pipeline(class_labels=[0])


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["hf_vq"] = None  # any `import hf_vq` now raises ImportError: the folder must bring its own code
    import torch
    from diffusers import DiffusionPipeline

    folder, out = sys.argv[1:3]
    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    tokens = pipe(class_labels=pipe.get_label_ids(["T-shirt", "Bag"]), guidance_scale=2.0, output_type="pt",
                  generator=torch.Generator().manual_seed(0)).image_tokens
    torch.save({"classes": [type(c).__name__ for c in (pipe, pipe.vqgan, pipe.transformer)], "tokens": tokens}, out)
    """
)


def test_saved_folder_loads_where_hf_vq_cannot_be_imported(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["transformer"] == ["transformers", "LlamaForCausalLM"]
    # The prior itself is transformers' own: it loads with no remote code at all.
    prior = AutoModelForCausalLM.from_pretrained(tmp_path / "pipe" / "transformer")
    assert type(prior) is LlamaForCausalLM and prior.config.codebook_size == CODES
    # Where hf_vq is installed, the class that wrote the folder loads it without remote code.
    loaded = AutoregressivePipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.vqgan) is VQGANModel and type(loaded.transformer) is LlamaForCausalLM
    assert torch.equal(sample(loaded, guidance_scale=2.0).image_tokens, sample(pipe, guidance_scale=2.0).image_tokens)
    (tmp_path / "remote.py").write_text(REMOTE_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), str(tmp_path / "pipe"), str(tmp_path / "o.pt")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "o.pt")
    assert remote["classes"] == ["AutoregressivePipeline", "VQGANModel", "LlamaForCausalLM"]
    assert torch.equal(remote["tokens"], sample(pipe, guidance_scale=2.0).image_tokens)
