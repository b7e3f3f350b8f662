"""hf_vq's pipelines behave as diffusers' own: loading through the pipeline class, variants, per-image generators,
step callbacks, typed components; one masking schedule; every bad inference input a clear ValueError."""

import inspect
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import PreTrainedModel

from hf_vq import MaskGITModel, MaskGITPipeline, MaskGITScheduler, VQGANImageProcessor, VQGANModel, VQGANPipeline
from hf_vq.schedulers.scheduling_maskgit import cosine_mask_ratio, mask_tokens

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return VQGANModel.from_pretrained(tokenizer_dir).eval()


@pytest.fixture(scope="module")
def pipe(tokenizer, tokenizer_dir):
    torch.manual_seed(0)
    prior = MaskGITModel.from_tokenizer(
        str(tokenizer_dir), tokenizer=tokenizer, num_classes=10, initializer_range=0.5, **TINY
    ).eval()
    pipeline = MaskGITPipeline(vqgan=tokenizer, transformer=prior, scheduler=MaskGITScheduler(mask_token_id=32))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def vqgan_pipe(tokenizer):
    return VQGANPipeline(vqgan=tokenizer, image_processor=VQGANImageProcessor.from_model_config(tokenizer.config))


def sample(pipe, generator=0, **kwargs):
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    kwargs = {"class_labels": [1, 4], "num_inference_steps": 3, "output_type": "np", **kwargs}
    return pipe(generator=generator, **kwargs)


def image():
    return PIL.Image.fromarray(np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3))


# --- one home, one schedule --------------------------------------------------------------------------------------


def test_pipelines_live_in_hf_vq_pipelines():
    from hf_vq.pipelines import MaskGITPipeline as maskgit_from_home
    from hf_vq.pipelines import VQGANPipeline as vqgan_from_home

    assert vqgan_from_home is VQGANPipeline and maskgit_from_home is MaskGITPipeline
    assert VQGANPipeline.__module__ == "hf_vq.pipelines.vqgan.pipeline_vqgan"


def test_training_and_sampling_share_the_cosine_schedule():
    scheduler = MaskGITScheduler(mask_token_id=32)
    scheduler.set_timesteps(5)
    for step in range(4):
        assert scheduler.mask_ratio(step) == cosine_mask_ratio((step + 1) / 5)
    torch.testing.assert_close(
        cosine_mask_ratio(torch.tensor([0.0, 0.5, 1.0])),
        torch.tensor([1.0, math.cos(math.pi / 4), 0.0]),
        atol=1e-6,
        rtol=0,
    )
    # Training's masking draws its ratio from the same function: u = 1 - U[0, 1) with the generator's first number.
    tokens = torch.randint(0, 32, (1, 64), generator=torch.Generator().manual_seed(3))
    inputs, _ = mask_tokens(tokens, 32, generator=torch.Generator().manual_seed(7))
    u = 1.0 - torch.rand(1, generator=torch.Generator().manual_seed(7))
    assert int((inputs == 32).sum()) == max(1, math.ceil(float(cosine_mask_ratio(u)) * 64))


# --- diffusers conventions ----------------------------------------------------------------------------------------


def test_saved_folder_loads_through_the_pipeline_class_without_remote_code(pipe, vqgan_pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "maskgit")
    loaded = MaskGITPipeline.from_pretrained(tmp_path / "maskgit")
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded) is MaskGITPipeline and type(loaded.vqgan) is VQGANModel
    assert type(loaded.transformer) is MaskGITModel and type(loaded.scheduler) is MaskGITScheduler
    assert torch.equal(sample(loaded).image_tokens, sample(pipe).image_tokens)

    vqgan_pipe.save_pretrained(tmp_path / "vqgan")
    loaded_vqgan = VQGANPipeline.from_pretrained(tmp_path / "vqgan")
    assert type(loaded_vqgan.vqgan) is VQGANModel and type(loaded_vqgan.image_processor) is VQGANImageProcessor
    assert torch.equal(loaded_vqgan(images=[image()]).image_tokens, vqgan_pipe(images=[image()]).image_tokens)


HUB_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    from hf_vq import MaskGITModel, MaskGITPipeline

    folder, mode, out = sys.argv[1:4]
    if mode == "push":
        local = MaskGITPipeline.from_pretrained(folder)
        local.save_pretrained(folder + "-pushed", push_to_hub=True, repo_id="org/prior")
    # Online, then offline from the cache (where diffusers' own from_pretrained asks the Hub for model info).
    pipe = MaskGITPipeline.from_pretrained("org/prior")
    assert type(pipe.transformer) is MaskGITModel, type(pipe.transformer)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(class_labels=[1, 4], num_inference_steps=3, output_type="np")
    torch.save(pipe(generator=torch.Generator().manual_seed(0), **kwargs).image_tokens, out)
    """
)


@pytest.mark.slow
def test_pipeline_class_loads_a_hub_repo_online_and_offline_without_remote_code(pipe, tmp_path):
    sys.path.insert(0, os.path.dirname(__file__))
    from hub_server import HubServer

    pipe.save_pretrained(tmp_path / "prior")
    (tmp_path / "hub.py").write_text(HUB_SCRIPT)
    server = HubServer(tmp_path / "hub", tokens={"hf_test": "alice"}, orgs={"alice": ["org"]}).start()
    try:
        env = {
            **os.environ,
            "HF_ENDPOINT": server.url,
            "HF_HOME": str(tmp_path / "home"),
            "HF_TOKEN": "hf_test",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "PYTHONPATH": os.path.dirname(os.path.dirname(__file__)),
        }
        for mode, offline in (("push", "0"), ("offline", "1")):
            arguments = [str(tmp_path / "hub.py"), str(tmp_path / "prior"), mode, str(tmp_path / f"{mode}.pt")]
            result = subprocess.run(
                [sys.executable, *arguments],
                cwd=tmp_path,
                env={**env, "HF_HUB_OFFLINE": offline},
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert result.returncode == 0, result.stderr[-3000:]
            assert torch.equal(torch.load(tmp_path / f"{mode}.pt"), sample(pipe).image_tokens), mode
    finally:
        server.stop()


def test_variant_is_saved_and_loaded_for_every_component(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "pipe", variant="fp16")
    for component in ("vqgan", "transformer"):
        assert (tmp_path / "pipe" / component / "model.fp16.safetensors").is_file(), component
        assert not (tmp_path / "pipe" / component / "model.safetensors").exists(), component
    loaded = MaskGITPipeline.from_pretrained(tmp_path / "pipe", variant="fp16")
    for name in ("vqgan", "transformer"):
        for key, value in getattr(pipe, name).state_dict().items():
            assert torch.equal(getattr(loaded, name).state_dict()[key], value), (name, key)


def test_loading_a_variant_the_folder_lacks_is_diffusers_error(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "pipe")
    with pytest.raises(ValueError, match=r"the model files of the `variant=fp16`, but no such.*save_pretrained\("):
        MaskGITPipeline.from_pretrained(tmp_path / "pipe", variant="fp16")


def test_loading_logs_each_component_and_takes_a_device_map(pipe, vqgan_pipe, tmp_path):
    """As diffusers' own loader: one INFO line per component on its pipeline logger, and `device_map`."""
    import logging as std_logging

    from diffusers.utils import logging

    logger = logging.get_logger("diffusers.pipelines.pipeline_utils")
    pipe.save_pretrained(tmp_path / "maskgit")
    vqgan_pipe.save_pretrained(tmp_path / "vqgan")
    records: list[std_logging.LogRecord] = []
    handler = std_logging.Handler()
    handler.emit = records.append
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        loaded = MaskGITPipeline.from_pretrained(tmp_path / "maskgit", device_map="cpu")
        VQGANPipeline.from_pretrained(tmp_path / "vqgan")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    messages = {record.getMessage() for record in records}
    expected = [
        ("maskgit", "vqgan", "VQGANModel"),
        ("maskgit", "transformer", "MaskGITModel"),
        ("maskgit", "scheduler", "MaskGITScheduler"),
        ("vqgan", "image_processor", "VQGANImageProcessor"),
    ]
    for folder, name, class_name in expected:
        assert f"Loaded {name} as {class_name} from `{name}` subfolder of {tmp_path / folder}." in messages
    assert loaded.vqgan.device.type == loaded.transformer.device.type == "cpu"
    assert torch.equal(sample(loaded).image_tokens, sample(pipe).image_tokens)


def test_output_type_latent_returns_the_token_grids_undecoded(pipe):
    latent = sample(pipe, output_type="latent")
    assert torch.equal(latent.images, latent.image_tokens) and latent.images.shape == (2, 8, 8)
    assert torch.equal(latent.image_tokens, sample(pipe).image_tokens)
    with pytest.raises(ValueError, match="output_type must be 'pil', 'np', 'pt' or 'latent', got 'jpeg'"):
        sample(pipe, output_type="jpeg")


def test_a_list_of_generators_gives_each_image_its_own_seed(pipe):
    seeds = [torch.Generator().manual_seed(seed) for seed in (5, 6)]
    first = sample(pipe, generator=seeds)
    other = sample(pipe, generator=[torch.Generator().manual_seed(5), torch.Generator().manual_seed(9)])
    assert torch.equal(first.image_tokens[0], other.image_tokens[0])
    assert not torch.equal(first.image_tokens[1], other.image_tokens[1])
    with pytest.raises(ValueError, match="list of 3 generators, but 2 images"):
        sample(pipe, generator=[torch.Generator() for _ in range(3)])
    with pytest.raises(ValueError, match="list of 1 generators, but 4 images"):
        sample(pipe, generator=[torch.Generator()], num_images_per_prompt=2)


def test_step_callbacks(pipe):
    seen = []

    def record(pipeline, step_index, timestep, callback_kwargs):
        seen.append((step_index, int(timestep), sorted(callback_kwargs)))
        assert callback_kwargs["image_tokens"].shape == (2, 8, 8) and callback_kwargs["logits"].shape == (2, 64, 32)
        return {}

    plain = sample(pipe)
    out = sample(pipe, callback_on_step_end=record, callback_on_step_end_tensor_inputs=["image_tokens", "logits"])
    assert seen == [
        (0, 2, ["image_tokens", "logits"]),
        (1, 1, ["image_tokens", "logits"]),
        (2, 0, ["image_tokens", "logits"]),
    ]
    assert torch.equal(out.image_tokens, plain.image_tokens) and pipe.num_timesteps == 3

    def overwrite(pipeline, step_index, timestep, callback_kwargs):
        return {"image_tokens": torch.full_like(callback_kwargs["image_tokens"], 7)}

    assert bool((sample(pipe, callback_on_step_end=overwrite).image_tokens == 7).all())

    calls = []

    def stop_early(pipeline, step_index, timestep, callback_kwargs):
        calls.append(step_index)
        pipeline._interrupt = True
        return callback_kwargs

    sample(pipe, callback_on_step_end=stop_early)
    assert calls == [0]
    with pytest.raises(ValueError, match=r"names \['latents'\].*choose from \['image_tokens', 'logits'\]"):
        sample(pipe, callback_on_step_end=record, callback_on_step_end_tensor_inputs=["latents"])


def test_a_pipeline_callback_can_switch_guidance_off(pipe):
    from diffusers.callbacks import PipelineCallback

    class GuidanceCutoff(PipelineCallback):
        """Guidance for the first step only, as diffusers' CFG cutoff callbacks do; keeps what it sees."""

        tensor_inputs = ["image_tokens", "logits"]

        def __init__(self):
            super().__init__(cutoff_step_ratio=None, cutoff_step_index=0)
            self.seen = []

        def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
            self.seen.append({name: tensor.clone() for name, tensor in callback_kwargs.items()})
            if step_index == self.config.cutoff_step_index:
                pipeline._guidance_scale = 1.0
            return callback_kwargs

    cutoff = GuidanceCutoff()
    out = sample(pipe, guidance_scale=3.0, callback_on_step_end=cutoff)
    assert not torch.equal(out.image_tokens, sample(pipe, guidance_scale=3.0).image_tokens)
    labels = torch.tensor([1, 4])
    with torch.no_grad():
        after_first = cutoff.seen[0]["image_tokens"].reshape(2, 64)
        torch.testing.assert_close(cutoff.seen[1]["logits"], pipe.transformer(after_first, class_labels=labels).logits)
        torch.testing.assert_close(cutoff.seen[0]["logits"], pipe._guided_logits(torch.full((2, 64), 32), labels, 3.0))


def test_components_are_typed():
    for pipeline_class in (MaskGITPipeline, VQGANPipeline):
        parameters = inspect.signature(pipeline_class.__init__).parameters
        annotations = [p.annotation for name, p in parameters.items() if name != "self"]
        assert all(a not in (inspect.Parameter.empty, "Any") for a in annotations), pipeline_class
    assert MaskGITPipeline._get_signature_types() == {
        "vqgan": (PreTrainedModel,),
        "transformer": (PreTrainedModel,),
        "scheduler": (SchedulerMixin,),
    }


def test_the_folder_stand_in_accepts_classes_not_instances(pipe):
    stand_in = sys.modules["hf_vq_component"]
    assert issubclass(VQGANModel, stand_in.VQGANModel)  # what diffusers checks a passed component with
    assert not isinstance(object(), stand_in.VQGANModel)


# --- bad inference inputs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["guidance_scale", "temperature"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_sampling_numbers_are_refused(pipe, name, value):
    with pytest.raises(ValueError, match=f"{name} must be a finite number"):
        sample(pipe, **{name: value})


def test_scheduler_refuses_a_non_finite_temperature():
    scheduler = MaskGITScheduler(mask_token_id=32)
    scheduler.set_timesteps(2)
    with pytest.raises(ValueError, match="temperature must be a finite number"):
        scheduler.step(torch.randn(1, 4, 32), 1, torch.full((1, 4), 32), temperature=math.nan)


def test_num_inference_steps_has_a_cap(pipe):
    with pytest.raises(ValueError, match="num_inference_steps=65 exceeds its cap of 64"):
        sample(pipe, num_inference_steps=65)
    with pytest.raises(ValueError, match="exceeds its cap of 64"):
        sample(pipe, num_inference_steps=10**9)
    assert bool((sample(pipe, num_inference_steps=64, class_labels=[2]).image_tokens < 32).all())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device type")
def test_a_generator_on_another_device_is_refused(pipe):
    with pytest.raises(ValueError, match="generator is on cuda.* but the pipeline runs on cpu"):
        sample(pipe, generator=torch.Generator("cuda").manual_seed(0))


def test_empty_images_and_batches_are_refused(vqgan_pipe):
    empty = PIL.Image.new("RGB", (0, 0))
    with pytest.raises(ValueError, match=r"images holds an empty image \(size \(0, 0\)\)"):
        vqgan_pipe(images=[image(), empty])
    with pytest.raises(ValueError, match="empty image of size"):
        vqgan_pipe.image_processor(empty)
    with pytest.raises(ValueError, match="images is an empty list"):
        vqgan_pipe(images=[])
    with pytest.raises(ValueError, match="image_tokens is an empty batch"):
        vqgan_pipe(image_tokens=torch.zeros(0, 8, 8, dtype=torch.long))
