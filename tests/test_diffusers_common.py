"""diffusers' own common pipeline tests (`PipelineTesterMixin`) run against hf_vq's pipelines with tiny components, as
diffusers runs them against its own pipelines: the measure of "behaves like a diffusers pipeline" (issue 27).

The suite is not in diffusers' source distribution on PyPI, only in its git repository, and none of its code is
committed here. Run the module where a copy of diffusers' `tests/` folder can be had (a clone needs GitHub, which CI
lacks, so there this module skips):

    git clone --depth 1 --branch v$(python -c 'import diffusers;print(diffusers.__version__)') \\
        https://github.com/huggingface/diffusers /tmp/diffusers_src
    pip install parameterized requests-mock   # imported by the suite's modules
    python -m pytest -m slow tests/test_diffusers_common.py

`HF_VQ_DIFFUSERS_TESTS` names another checkout. What applies, what passes and each opt-out with its reason:
docs/diffusers_common_tests.md.
"""

import importlib.util
import os
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hf_vq import (
    AutoregressivePipeline,
    MaskGITModel,
    MaskGITPipeline,
    MaskGITScheduler,
    VQGANConfig,
    VQGANImageProcessor,
    VQGANModel,
    VQGANPipeline,
)
from hf_vq.pipelines.autoregressive import autoregressive_prior_fields

pytestmark = pytest.mark.slow

SOURCE_TREE = Path(os.environ.get("HF_VQ_DIFFUSERS_TESTS", "/tmp/diffusers_src"))
if not (SOURCE_TREE / "tests" / "pipelines" / "test_pipelines_common.py").is_file():
    pytest.skip(
        f"diffusers' common pipeline tests not found under {SOURCE_TREE}: clone diffusers' repository there (or set "
        "HF_VQ_DIFFUSERS_TESTS); see this module's docstring",
        allow_module_level=True,
    )
for _module in ("parameterized", "requests_mock"):
    pytest.importorskip(_module, reason=f"diffusers' test modules import {_module}: pip install it")


def import_diffusers_tests(name: str = "diffusers_tests"):
    """diffusers' `tests/` package under its own name: its modules import each other relatively, and the name `tests`
    is already ours (and, in the same session, transformers')."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, SOURCE_TREE / "tests" / "__init__.py", submodule_search_locations=[str(SOURCE_TREE / "tests")]
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)
    common = importlib.import_module(f"{name}.pipelines.test_pipelines_common")
    return common, importlib.import_module(f"{name}.pipelines.pipeline_params")


common, pipeline_params = import_diffusers_tests()
PipelineTesterMixin = common.PipelineTesterMixin

TOKENIZER = {
    "num_channels": 3,
    "image_size": 16,
    "block_out_channels": [16, 32],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "latent_channels": 8,
    "embed_dim": 4,
    "codebook_size": 32,
}
PRIOR = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def tiny_tokenizer() -> VQGANModel:
    """16x16 RGB images -> an 8x8 grid of 32 codes."""
    torch.manual_seed(0)
    return VQGANModel(VQGANConfig(**TOKENIZER)).eval()


class TokenPipelineTesterMixin(PipelineTesterMixin):
    """What the token priors' testers share. diffusers' DiT tests set the class-conditional parameters, and drop
    `latents` from the required optional ones, the same way."""

    params = pipeline_params.CLASS_CONDITIONED_IMAGE_GENERATION_PARAMS
    batch_params = pipeline_params.CLASS_CONDITIONED_IMAGE_GENERATION_BATCH_PARAMS
    callback_cfg_params = frozenset()
    test_attention_slicing = False  # a diffusers `Attention` feature: the components are transformers models
    test_xformers_attention = False

    def get_dummy_inputs(self, device, seed=0):
        generator = torch.Generator(device="cpu").manual_seed(seed)
        return {"class_labels": 1, "generator": generator, "guidance_scale": 1.0, "output_type": "np"}

    def zero_tokens(self, step_index: int, num_timesteps: int, image_tokens: torch.Tensor) -> torch.Tensor:
        """What a callback returns to make the final grid all zeros: the grid at the last step (MaskGIT)."""
        return torch.zeros_like(image_tokens) if step_index == num_timesteps - 1 else image_tokens

    def test_callback_inputs(self):
        """The mixin's test, with the token grid (`image_tokens`, the state a token pipeline's steps change) where
        diffusers' latent pipelines have `latents`: a subset and all of `_callback_tensor_inputs` reach the callback,
        and tokens the callback returns are what `output_type="latent"` gives back."""
        pipe = self.pipeline_class(**self.get_dummy_components()).to("cpu")
        pipe.set_progress_bar_config(disable=True)
        seen: list[set[str]] = []

        def record(pipe, step_index, timestep, callback_kwargs):
            self.assertTrue(set(callback_kwargs) <= set(pipe._callback_tensor_inputs))
            seen.append(set(callback_kwargs))
            return callback_kwargs

        def zero(pipe, step_index, timestep, callback_kwargs):
            tokens = self.zero_tokens(step_index, pipe.num_timesteps, callback_kwargs["image_tokens"])
            return {**callback_kwargs, "image_tokens": tokens}

        inputs = {**self.get_dummy_inputs("cpu"), "output_type": "latent"}
        for names in (["image_tokens"], pipe._callback_tensor_inputs):
            pipe(**inputs, callback_on_step_end=record, callback_on_step_end_tensor_inputs=names)
            self.assertEqual(seen[-1], set(names))
        output = pipe(**inputs, callback_on_step_end=zero, callback_on_step_end_tensor_inputs=["image_tokens"])
        self.assertEqual(int(output[0].abs().sum()), 0)


class MaskGITPipelineFastTests(TokenPipelineTesterMixin, unittest.TestCase):
    pipeline_class = MaskGITPipeline
    required_optional_params = PipelineTesterMixin.required_optional_params - {"latents"}

    def get_dummy_components(self):
        tokenizer = tiny_tokenizer()
        torch.manual_seed(0)
        prior = MaskGITModel.from_tokenizer("tiny", tokenizer=tokenizer, num_classes=3, **PRIOR).eval()
        return {"vqgan": tokenizer, "transformer": prior, "scheduler": MaskGITScheduler(mask_token_id=32)}

    def get_dummy_inputs(self, device, seed=0):
        return {**super().get_dummy_inputs(device, seed), "num_inference_steps": 2}


class AutoregressivePipelineFastTests(TokenPipelineTesterMixin, unittest.TestCase):
    pipeline_class = AutoregressivePipeline
    # One step per code: the number of steps is the grid's size, not a choice.
    required_optional_params = PipelineTesterMixin.required_optional_params - {"latents", "num_inference_steps"}

    def get_dummy_components(self):
        tokenizer = tiny_tokenizer()
        torch.manual_seed(0)
        fields = autoregressive_prior_fields(tokenizer.config, num_classes=3, tokenizer_name_or_path="tiny")
        prior = LlamaForCausalLM(LlamaConfig(**PRIOR, num_key_value_heads=2, **fields)).eval()
        return {"vqgan": tokenizer, "transformer": prior}

    def _test_inference_batch_single_identical(self, *args, **kwargs):
        kwargs["additional_params_copy_to_batched_inputs"] = []  # no num_inference_steps
        super()._test_inference_batch_single_identical(*args, **kwargs)

    def zero_tokens(self, step_index: int, num_timesteps: int, image_tokens: torch.Tensor) -> torch.Tensor:
        """The codes drawn before a step are in the prior's cache: a callback replaces the newest one (documented),
        so zero it at every step."""
        return torch.cat([image_tokens[:, :-1], torch.zeros_like(image_tokens[:, -1:])], dim=1)


class VQGANPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
    pipeline_class = VQGANPipeline
    params = frozenset(["images", "image_tokens"])
    batch_params = frozenset(["images"])
    # Reconstruction is deterministic, one image out per image in: nothing to sample, no steps, no seeds.
    required_optional_params = frozenset(["output_type", "return_dict"])
    test_attention_slicing = False
    test_xformers_attention = False

    def get_dummy_components(self):
        tokenizer = tiny_tokenizer()
        return {"vqgan": tokenizer, "image_processor": VQGANImageProcessor.from_model_config(tokenizer.config)}

    def get_dummy_inputs(self, device, seed=0):
        pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
        return {"images": PIL.Image.fromarray(pixels), "output_type": "np"}

    # The mixin's two batch tests always pass `generator` (every sampling pipeline takes one); reconstruction draws
    # nothing, so VQGANPipeline has none. The same checks without it:

    def test_inference_batch_consistent(self, batch_sizes=(2,)):
        pipe = self.pipeline_class(**self.get_dummy_components())
        for batch_size in batch_sizes:
            images = [self.get_dummy_inputs("cpu", seed)["images"] for seed in range(batch_size)]
            self.assertEqual(len(pipe(images=images, output_type="np")[0]), batch_size)

    def test_inference_batch_single_identical(self, batch_size=3, expected_max_diff=1e-4):
        pipe = self.pipeline_class(**self.get_dummy_components())
        inputs = self.get_dummy_inputs("cpu")
        single = pipe(**inputs)[0]
        batch = pipe(**{**inputs, "images": batch_size * [inputs["images"]]})[0]
        self.assertEqual(batch.shape[0], batch_size)
        self.assertLess(np.abs(batch[0].astype(float) - single[0].astype(float)).max(), expected_max_diff)

    def test_pipeline_with_accelerator_device_map(self, expected_max_difference=1e-4):
        pipe = self.pipeline_class(**self.get_dummy_components())
        inputs = self.get_dummy_inputs("cpu")
        with tempfile.TemporaryDirectory() as folder:
            pipe.save_pretrained(folder)
            loaded = self.pipeline_class.from_pretrained(folder, device_map="cpu")
        difference = np.abs(pipe(**inputs)[0].astype(float) - loaded(**inputs)[0].astype(float)).max()
        self.assertLess(difference, expected_max_difference)
