"""Loading and sharing the VQGAN: save/load, Auto classes, remote code without hf_vq, an offline Hub cache, and a
diffusers pipeline folder."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModel

from hf_vq import VQGANConfig, VQGANImageProcessor, VQGANModel

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture
def trained_model() -> VQGANModel:
    """A tiny model whose weights, codebook and counters moved away from their initial values."""
    model = VQGANModel(VQGANConfig.from_yaml(CONFIGS / "vqgan_tiny.yaml", affine="running", kmeans_init=True))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(2):
        optimizer.zero_grad()
        model.train()(torch.rand(4, 3, 16, 16) * 2 - 1).loss.backward()
        optimizer.step()
    return model.eval()


def assert_same_state(model: torch.nn.Module, other: torch.nn.Module) -> None:
    state, other_state = model.state_dict(), other.state_dict()
    assert state.keys() == other_state.keys()
    for key, value in state.items():
        assert value.dtype == other_state[key].dtype and torch.equal(value, other_state[key]), key


def test_save_and_load_are_bit_identical(tmp_path, trained_model):
    trained_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    assert (tmp_path / "preprocessor_config.json").is_file()
    loaded = VQGANModel.from_pretrained(tmp_path).eval()
    assert_same_state(trained_model, loaded)
    assert bool(loaded.quantize.initialized) and int(loaded.quantize.embedding.affine.num_updates) == 2
    assert loaded.config.to_dict() == trained_model.config.to_dict() | {"_name_or_path": loaded.config._name_or_path}
    pixel_values = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        expected, actual = trained_model(pixel_values), loaded(pixel_values)
    assert torch.equal(expected.image_tokens, actual.image_tokens)
    assert torch.equal(expected.reconstruction, actual.reconstruction)


def test_auto_classes_round_trip(tmp_path, trained_model):
    processor = VQGANImageProcessor.from_model_config(trained_model.config, resample=PIL.Image.Resampling.NEAREST)
    trained_model.save_pretrained(tmp_path, image_processor=processor)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), VQGANConfig)
    model = AutoModel.from_pretrained(tmp_path)
    assert type(model) is VQGANModel
    assert_same_state(trained_model, model)
    loaded_processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(loaded_processor) is VQGANImageProcessor
    assert loaded_processor.resample == PIL.Image.Resampling.NEAREST and loaded_processor.downsampling_factor == 2
    assert type(AutoModel.from_config(VQGANConfig.from_yaml(CONFIGS / "vqgan_tiny.yaml"))) is VQGANModel


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["hf_vq"] = None  # any `import hf_vq` now raises ImportError: the checkpoint must bring its own code
    import numpy as np
    import PIL.Image
    import torch
    from transformers import AutoImageProcessor, AutoModel

    folder, out = sys.argv[1], sys.argv[2]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    image = PIL.Image.fromarray(np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3))
    pixel_values = processor(image, return_tensors="pt").pixel_values
    with torch.no_grad():
        output = model(pixel_values)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    assert type(model.quantize).__module__.startswith("transformers_modules"), type(model.quantize).__module__
    torch.save({"pixel_values": pixel_values, "tokens": output.image_tokens, "reconstruction": output.reconstruction,
                "state": model.state_dict()}, out)
    """
)


def test_remote_code_loads_without_hf_vq(tmp_path, trained_model):
    trained_model.save_pretrained(tmp_path / "checkpoint")
    assert (tmp_path / "checkpoint" / "vector_quantizer.py").is_file()
    (tmp_path / "remote.py").write_text(REMOTE_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), str(tmp_path / "checkpoint"), str(tmp_path / "out.pt")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "out.pt")
    processor = VQGANImageProcessor.from_pretrained(tmp_path / "checkpoint")
    image = PIL.Image.fromarray(np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3))
    torch.testing.assert_close(
        remote["pixel_values"], processor(image, return_tensors="pt").pixel_values, rtol=0, atol=0
    )
    with torch.no_grad():
        output = trained_model(remote["pixel_values"])
    assert torch.equal(remote["tokens"], output.image_tokens)
    assert torch.equal(remote["reconstruction"], output.reconstruction)
    for key, value in trained_model.state_dict().items():
        assert torch.equal(remote["state"][key], value), key


def test_from_pretrained_offline_from_a_hub_cache(tmp_path, trained_model):
    """The layout huggingface_hub writes: models--org--name/refs/main holds a commit, files under
    snapshots/<commit>/."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--tiny-vqgan"
    trained_model.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    model = AutoModel.from_pretrained("org/tiny-vqgan", cache_dir=tmp_path / "hub")
    assert_same_state(trained_model, model)
    assert isinstance(
        AutoImageProcessor.from_pretrained("org/tiny-vqgan", cache_dir=tmp_path / "hub"), VQGANImageProcessor
    )
    assert isinstance(VQGANModel.from_pretrained("org/tiny-vqgan", cache_dir=tmp_path / "hub"), VQGANModel)
    # Offline, a repo the cache lacks is transformers' "not in the cached files" error (not some other failure).
    with pytest.raises(OSError, match="couldn't find them in the cached files"):
        AutoModel.from_pretrained("org/absent-vqgan", cache_dir=tmp_path / "hub")


def test_diffusers_pipeline_folder_loads_with_diffusion_pipeline(tmp_path, trained_model):
    from diffusers import DiffusionPipeline

    from hf_vq import VQGANPipeline

    processor = VQGANImageProcessor.from_model_config(trained_model.config)
    VQGANPipeline(vqgan=trained_model, image_processor=processor).save_pretrained(tmp_path / "pipeline")
    index = json.loads((tmp_path / "pipeline" / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_vqgan", "VQGANPipeline"]
    assert index["vqgan"][1] == "VQGANModel" and index["image_processor"][1] == "VQGANImageProcessor"

    pipe = DiffusionPipeline.from_pretrained(tmp_path / "pipeline", trust_remote_code=True)
    assert type(pipe).__name__ == "VQGANPipeline"
    # trust_remote_code=True runs the folder's code (as transformers' Auto classes do), not the installed hf_vq.
    assert type(pipe.vqgan).__name__ == "VQGANModel" and type(pipe.image_processor).__name__ == "VQGANImageProcessor"
    assert type(pipe.vqgan).__module__.startswith("hf_vq_components.")
    assert_same_state(trained_model, pipe.vqgan)

    image = PIL.Image.fromarray(np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3))
    result = pipe(images=[image, image])
    assert len(result.images) == 2 and result.images[0].size == (16, 16) and result.image_tokens.shape == (2, 8, 8)
    with torch.no_grad():
        expected = trained_model.encode(processor(image, return_tensors="pt").pixel_values).image_tokens
    assert torch.equal(result.image_tokens[:1], expected)
    decoded = pipe(image_tokens=result.image_tokens, output_type="pt").images
    assert decoded.shape == (2, 3, 16, 16) and 0.0 <= float(decoded.min()) <= float(decoded.max()) <= 1.0
    with pytest.raises(ValueError, match="exactly one"):
        pipe()
