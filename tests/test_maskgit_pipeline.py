"""MaskGITPipeline: sampling, guidance, bad inputs, and Hub-native folders that load where hf_vq cannot be imported
(the same for VQGANPipeline)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import PIL.Image
import pytest
import torch

from hf_vq import MaskGITModel, MaskGITPipeline, MaskGITScheduler, VQGANImageProcessor, VQGANModel, VQGANPipeline

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return VQGANModel.from_pretrained(tokenizer_dir).eval()


@pytest.fixture(scope="module")
def pipe(tokenizer, tokenizer_dir):
    torch.manual_seed(0)
    # A wide initialisation gives an untrained prior confident, label-dependent predictions, as a trained one has.
    prior = MaskGITModel.from_tokenizer(
        str(tokenizer_dir), tokenizer=tokenizer, num_classes=10, initializer_range=0.5, **TINY
    ).eval()
    pipeline = MaskGITPipeline(vqgan=tokenizer, transformer=prior, scheduler=MaskGITScheduler(mask_token_id=32))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def sample(pipe, seed=0, **kwargs):
    kwargs = {"class_labels": [1, 4], "num_inference_steps": 3, "output_type": "np", **kwargs}
    return pipe(generator=torch.Generator().manual_seed(seed), **kwargs)


@pytest.fixture(scope="module")
def first(pipe):
    return sample(pipe, seed=0)


def test_sampling_is_deterministic_under_a_seed(pipe, first):
    again, other = sample(pipe, seed=0), sample(pipe, seed=1)
    assert first.image_tokens.shape == (2, 8, 8) and first.image_tokens.dtype == torch.int64
    assert 0 <= int(first.image_tokens.min()) and int(first.image_tokens.max()) < 32
    assert torch.equal(first.image_tokens, again.image_tokens) and np.array_equal(first.images, again.images)
    assert not torch.equal(first.image_tokens, other.image_tokens)


def test_outputs_and_class_labels(pipe, first):
    out = sample(pipe, class_labels=[0, 3, 7], num_images_per_prompt=2, output_type="pil", num_inference_steps=1)
    assert len(out.images) == 6 and all(isinstance(i, PIL.Image.Image) and i.size == (16, 16) for i in out.images)
    images = first.images
    assert images.shape == (2, 16, 16, 3) and images.dtype == np.float32 and 0 <= images.min() <= images.max() <= 1
    # The images are the tokenizer's decoding of the tokens (diffusers' [0, 1] convention).
    with torch.no_grad():
        decoded = pipe.vqgan.decode(image_tokens=first.image_tokens).reconstruction
    torch.testing.assert_close(torch.from_numpy(images).permute(0, 3, 1, 2), (decoded / 2 + 0.5).clamp(0, 1))
    tensor = sample(pipe, class_labels=None, batch_size=3, output_type="pt", num_inference_steps=1).images
    assert tensor.shape == (3, 3, 16, 16)
    assert sample(pipe, class_labels=5, num_inference_steps=1).image_tokens.shape == (1, 8, 8)


def test_guidance_changes_the_output(pipe, first):
    assert not torch.equal(first.image_tokens, sample(pipe, guidance_scale=3.0).image_tokens)
    # Guidance runs conditional and null-label predictions in one batch: uncond + s * (cond - uncond).
    tokens = torch.full((1, 64), 32)
    with torch.no_grad():
        cond = pipe.transformer(tokens, class_labels=torch.tensor([2])).logits
        uncond = pipe.transformer(tokens).logits
        guided_logits = pipe._guided_logits(tokens, torch.tensor([2]), 3.0)
    torch.testing.assert_close(guided_logits, uncond + 3.0 * (cond - uncond), rtol=1e-4, atol=1e-4)


def test_bad_inputs_get_clear_errors(pipe, tokenizer):
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 9\]"):
        pipe(class_labels=[3, 10])
    with pytest.raises(ValueError, match="num_inference_steps must be an integer >= 1"):
        pipe(class_labels=[1], num_inference_steps=0)
    with pytest.raises(ValueError, match="pass class_labels"):
        pipe(class_labels=None, guidance_scale=2.0)
    with pytest.raises(ValueError, match="batch_size applies to unconditional"):
        pipe(class_labels=[1], batch_size=2)
    with pytest.raises(ValueError, match="output_type"):
        pipe(class_labels=[1], output_type="jpeg")
    unconditional = MaskGITPipeline(
        vqgan=tokenizer,
        transformer=MaskGITModel.from_tokenizer("t", tokenizer=tokenizer, **TINY).eval(),
        scheduler=MaskGITScheduler(mask_token_id=32),
    )
    with pytest.raises(ValueError, match="needs a class-conditional prior"):
        unconditional(guidance_scale=2.0)
    with pytest.raises(ValueError, match="prior is unconditional"):
        unconditional(class_labels=[0])
    assert unconditional(batch_size=2, num_inference_steps=1, output_type="np").images.shape == (2, 16, 16, 3)
    other = MaskGITModel.from_tokenizer("t", tokenizer=tokenizer, **TINY)
    other.config.codebook_size = 64
    with pytest.raises(ValueError, match="codebook_size=32 but .* codebook_size=64"):
        MaskGITPipeline(vqgan=tokenizer, transformer=other, scheduler=MaskGITScheduler(mask_token_id=64))
    with pytest.raises(ValueError, match="scheduler's mask_token_id=33"):
        MaskGITPipeline(vqgan=tokenizer, transformer=pipe.transformer, scheduler=MaskGITScheduler(mask_token_id=33))


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["hf_vq"] = None  # any `import hf_vq` now raises ImportError: the folders must bring their own code
    import PIL.Image, numpy as np, torch
    from diffusers import DiffusionPipeline

    maskgit_folder, vqgan_folder, resaved, out = sys.argv[1:5]
    pipe = DiffusionPipeline.from_pretrained(maskgit_folder, trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    result = {"classes": [type(c).__name__ for c in (pipe, pipe.vqgan, pipe.transformer, pipe.scheduler)]}
    kwargs = dict(class_labels=[1, 4], num_inference_steps=3, guidance_scale=2.0, output_type="np")
    result["tokens"] = pipe(generator=torch.Generator().manual_seed(0), **kwargs).image_tokens
    pipe.save_pretrained(resaved)  # a pipeline loaded from remote code saves a complete folder again
    again = DiffusionPipeline.from_pretrained(resaved, trust_remote_code=True)
    again.set_progress_bar_config(disable=True)
    result["tokens_resaved"] = again(generator=torch.Generator().manual_seed(0), **kwargs).image_tokens

    vqgan_pipe = DiffusionPipeline.from_pretrained(vqgan_folder, trust_remote_code=True)
    image = PIL.Image.fromarray(np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3))
    result["vqgan_classes"] = [type(c).__name__ for c in (vqgan_pipe, vqgan_pipe.vqgan, vqgan_pipe.image_processor)]
    result["vqgan_tokens"] = vqgan_pipe(images=[image]).image_tokens
    torch.save(result, out)
    """
)


def test_saved_folders_load_where_hf_vq_cannot_be_imported(pipe, tokenizer, tmp_path):
    pipe.save_pretrained(tmp_path / "maskgit")
    index = json.loads((tmp_path / "maskgit" / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_maskgit", "MaskGITPipeline"]
    assert {name: index[name] for name in ("vqgan", "transformer", "scheduler")} == {
        "vqgan": ["hf_vq_component", "VQGANModel"],
        "transformer": ["hf_vq_component", "MaskGITModel"],
        "scheduler": ["hf_vq_component", "MaskGITScheduler"],
    }
    processor = VQGANImageProcessor.from_model_config(tokenizer.config)
    VQGANPipeline(vqgan=tokenizer, image_processor=processor).save_pretrained(tmp_path / "vqgan")

    (tmp_path / "remote.py").write_text(REMOTE_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    folders = [str(tmp_path / name) for name in ("maskgit", "vqgan", "resaved", "out.pt")]
    result = subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), *folders],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "out.pt")
    assert remote["classes"] == ["MaskGITPipeline", "VQGANModel", "MaskGITModel", "MaskGITScheduler"]
    expected = sample(pipe, guidance_scale=2.0).image_tokens
    assert torch.equal(remote["tokens"], expected) and torch.equal(remote["tokens_resaved"], expected)
    assert remote["vqgan_classes"] == ["VQGANPipeline", "VQGANModel", "VQGANImageProcessor"]
    image = PIL.Image.fromarray(np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3))
    with torch.no_grad():
        assert torch.equal(
            remote["vqgan_tokens"], tokenizer.encode(processor(image, return_tensors="pt").pixel_values).image_tokens
        )


def test_folder_errors(pipe, tmp_path):
    from diffusers import DiffusionPipeline

    pipe.save_pretrained(tmp_path / "pipe")
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        DiffusionPipeline.from_pretrained(tmp_path / "pipe")
    loaded = DiffusionPipeline.from_pretrained(tmp_path / "pipe", trust_remote_code=True)
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.transformer.state_dict().values(), pipe.transformer.state_dict().values())
    )
    # A component passed in replaces the folder's (here, the tokenizer as hf_vq's own class).
    replaced = DiffusionPipeline.from_pretrained(tmp_path / "pipe", trust_remote_code=True, vqgan=pipe.vqgan)
    assert replaced.vqgan is pipe.vqgan
    shutil.rmtree(tmp_path / "pipe" / "transformer")
    with pytest.raises(ValueError, match="lacks the folder of its MaskGITModel component"):
        DiffusionPipeline.from_pretrained(tmp_path / "pipe", trust_remote_code=True)


HUB_SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.modules["hf_vq"] = None
    import torch
    from diffusers import DiffusionPipeline
    from huggingface_hub import hf_hub_download

    folder, mode, out = sys.argv[1:4]
    if mode == "push":
        # Pushed by a pipeline that itself came from remote code: save_pretrained(push_to_hub=True) uploads the folder
        # once its code is written.
        local = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
        local.save_pretrained(folder + "-resaved", push_to_hub=True, repo_id="org/maskgit")
        pipe = DiffusionPipeline.from_pretrained("org/maskgit", trust_remote_code=True)
    else:
        # Offline, diffusers 0.42 asks the Hub for the commit of a repo's pipeline file even when it is cached; the
        # cached snapshot folder loads as any local folder.
        snapshot = os.path.dirname(hf_hub_download("org/maskgit", "model_index.json"))
        pipe = DiffusionPipeline.from_pretrained(snapshot, trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(class_labels=[1, 4], num_inference_steps=3, guidance_scale=2.0, output_type="np")
    torch.save(pipe(generator=torch.Generator().manual_seed(0), **kwargs).image_tokens, out)
    """
)


@pytest.mark.slow
def test_pipeline_pushed_to_the_hub_loads_where_hf_vq_cannot_be_imported(pipe, tmp_path):
    """diffusers downloads only the weights, config.json and the named .py file of a model folder: the entry files
    must carry the code. Online from the (loopback) Hub, then offline from the cache."""
    sys.path.insert(0, os.path.dirname(__file__))
    from hub_server import HubServer

    pipe.save_pretrained(tmp_path / "maskgit")
    (tmp_path / "hub.py").write_text(HUB_SCRIPT)
    expected = sample(pipe, guidance_scale=2.0).image_tokens
    server = HubServer(tmp_path / "hub", tokens={"hf_test": "alice"}, orgs={"alice": ["org"]}).start()
    try:
        env = {
            **os.environ,
            "HF_ENDPOINT": server.url,
            "HF_HOME": str(tmp_path / "home"),
            "HF_TOKEN": "hf_test",
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "PYTHONPATH": "",
        }
        for mode, offline in (("push", "0"), ("offline", "1")):
            result = subprocess.run(
                [
                    sys.executable,
                    str(tmp_path / "hub.py"),
                    str(tmp_path / "maskgit"),
                    mode,
                    str(tmp_path / f"{mode}.pt"),
                ],
                cwd=tmp_path,
                env={**env, "HF_HUB_OFFLINE": offline},
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert result.returncode == 0, result.stderr[-3000:]
            assert torch.equal(torch.load(tmp_path / f"{mode}.pt"), expected), mode
    finally:
        server.stop()


def test_class_names_map_to_ids(pipe):
    names = {index: f"LABEL_{index}" for index in range(10)}
    assert pipe.id2label == names  # a prior built without names gets placeholders
    original = pipe.transformer.config.id2label
    pipe.transformer.config.id2label = {**names, 4: "Coat", 7: "Sneaker"}
    try:
        assert pipe.get_label_ids(["Sneaker", "Coat"]) == [7, 4]
        with pytest.raises(ValueError, match=r"unknown class name\(s\) \['Boot'\].*'Coat'"):
            pipe.get_label_ids("Boot")
        tokens = sample(pipe, class_labels=pipe.get_label_ids(["Coat"])).image_tokens
        assert torch.equal(tokens, sample(pipe, class_labels=[4]).image_tokens)
    finally:
        pipe.transformer.config.id2label = original
