"""Converters: a diffusers VQModel (and a transformers JanusVQVAE) becomes a VQGANModel with the same token ids and
reconstructions; the converted model round-trips through save/load, `to_diffusers()` and the Hub; unsupported
sources are refused with a message naming the feature. transformers' ChameleonVQVAE: test_conversion_chameleon.py."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from diffusers import VQModel

from hf_vq import VQGANModel
from hf_vq.conversion import SourceNotFoundError, UnsupportedSourceError, convert_tokenizer
from hf_vq.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer  # noqa: E402

NUM_IMAGES, SIDE = 64, 16
# VQModel's defaults (one level, one layer, 3 latent channels = code dimension, 256 codes), narrower.
DEFAULT_LIKE = {"block_out_channels": (32,), "norm_num_groups": 8, "sample_size": SIDE}
# The latent-diffusion layout: several levels, attention at the lowest, 2 layers, 3-dimensional codes.
LDM_LIKE = {
    "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
    "up_block_types": ("AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"),
    "block_out_channels": (16, 32, 32),
    "layers_per_block": 2,
    "latent_channels": 3,
    "num_vq_embeddings": 64,
    "vq_embed_dim": 3,
    "norm_num_groups": 8,
    "sample_size": SIDE,
    "scaling_factor": 0.5,
    "force_upcast": True,
}
DIFFUSERS_SOURCES = {"default-like": DEFAULT_LIKE, "ldm-like": LDM_LIKE}
TINY_VQGAN = {"block_out_channels": [8], "norm_num_groups": 4, "latent_channels": 4, "image_size": 8}
TINY_VQGAN |= {"attention_resolutions": [], "codebook_size": 16, "embed_dim": 4}
TOKEN, USER, ORG = "hf_test_alice", "alice", "org"


def random_pixels(seed: int = 1, count: int = NUM_IMAGES) -> torch.Tensor:
    return torch.rand(count, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def diffusers_source(options: dict) -> VQModel:
    """A random VQModel whose codes are spread over its latents (random codes near zero would all collapse onto a
    few ids, and equal ids would then prove little)."""
    torch.manual_seed(0)
    model = VQModel(**options).eval()
    with torch.no_grad():
        latents = model.encode(random_pixels(seed=0, count=8)).latents
        vectors = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
        picked = vectors[torch.randperm(vectors.shape[0])[: model.config.num_vq_embeddings]]
        model.quantize.embedding.weight.copy_(picked + 0.01 * torch.randn_like(picked))
    return model


def diffusers_outputs(model: VQModel, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The source's ids and reconstructions, through its own encode / quantize / decode."""
    with torch.no_grad():
        latents = model.encode(pixels).latents
        _, _, (_, _, ids) = model.quantize(latents)
        reconstruction = model.decode(latents).sample
    return ids.reshape(latents.shape[0], *latents.shape[2:]), reconstruction


def vqgan_outputs(model: VQGANModel, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        ids = model.encode(pixels).image_tokens
        return ids, model.decode(image_tokens=ids).reconstruction


@pytest.fixture(scope="module", params=list(DIFFUSERS_SOURCES), ids=list(DIFFUSERS_SOURCES))
def diffusers_pair(request) -> tuple[VQModel, VQGANModel]:
    source = diffusers_source(DIFFUSERS_SOURCES[request.param])
    return source, VQGANModel.from_diffusers(source)


def test_diffusers_vq_model_converts_to_the_same_ids_and_reconstructions(diffusers_pair):
    source, converted = diffusers_pair
    pixels = random_pixels()
    expected_ids, expected_images = diffusers_outputs(source, pixels)
    ids, images = vqgan_outputs(converted, pixels)
    assert expected_ids.unique().numel() > 8, "the test needs many codes in use"
    assert torch.equal(ids, expected_ids)
    assert (images - expected_images).abs().max() <= 1e-4
    assert converted.config.codebook_size == source.config.num_vq_embeddings
    assert converted.config.token_grid_size == tuple(expected_ids.shape[1:])


def test_converted_model_round_trips_through_save_and_load(diffusers_pair, tmp_path):
    _, converted = diffusers_pair
    converted.save_pretrained(tmp_path)
    loaded = VQGANModel.from_pretrained(tmp_path).eval()
    pixels = random_pixels(seed=2, count=4)
    for before, after in zip(vqgan_outputs(converted, pixels), vqgan_outputs(loaded, pixels)):
        assert torch.equal(before, after)


def test_converted_model_exports_back_to_the_same_vq_model(diffusers_pair):
    source, converted = diffusers_pair
    exported = converted.to_diffusers()
    for name in ("block_out_channels", "down_block_types", "up_block_types"):
        assert tuple(exported.config[name]) == tuple(source.config[name]), name
    for name in ("layers_per_block", "latent_channels", "num_vq_embeddings", "scaling_factor", "force_upcast"):
        assert exported.config[name] == source.config[name], name
    assert exported.quantize.embedding.weight.shape == source.quantize.embedding.weight.shape
    assert exported.config.lookup_from_codebook == source.config.lookup_from_codebook
    pixels = random_pixels(seed=3, count=8)
    expected_ids, expected_images = diffusers_outputs(source, pixels)
    ids, images = diffusers_outputs(exported, pixels)
    assert torch.equal(ids, expected_ids)
    assert (images - expected_images).abs().max() <= 1e-5


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"norm_type": "spatial"}, "norm_type='spatial'"),
        ({"act_fn": "gelu"}, "act_fn='gelu'"),
        (
            {"down_block_types": ("AttnDownEncoderBlock2D",), "up_block_types": ("UpDecoderBlock2D",)},
            "attention placement",
        ),
        ({"out_channels": 1}, "out_channels=1"),
    ],
    ids=["spatial-norm", "gelu", "unmirrored-attention", "channels"],
)
def test_vq_model_features_hf_vq_cannot_represent_are_refused_by_name(options, named):
    source = VQModel(**{**DEFAULT_LIKE, **options})
    with pytest.raises(UnsupportedSourceError, match=named.replace("(", r"\(")):
        VQGANModel.from_diffusers(source)


def test_convert_tokenizer_recognises_a_diffusers_folder_and_its_pipeline(tmp_path):
    source = diffusers_source(LDM_LIKE)
    source.save_pretrained(tmp_path / "pipeline" / "vqvae")
    (tmp_path / "pipeline" / "model_index.json").write_text(
        '{"_class_name": "VQDiffusionPipeline", "vqvae": ["diffusers", "VQModel"]}'
    )
    with pytest.raises(SourceNotFoundError, match="--subfolder vqvae"):
        convert_tokenizer(tmp_path / "pipeline")
    converted = convert_tokenizer(tmp_path / "pipeline", subfolder="vqvae")
    assert converted.source.kind == "diffusers_vq"
    assert converted.image_processor.size == {"height": SIDE, "width": SIDE}
    with pytest.raises(ConfigError, match="image_size=18 is not a positive multiple of 4, the downsampling factor"):
        convert_tokenizer(tmp_path / "pipeline", subfolder="vqvae", image_size=18)
    assert convert_tokenizer(tmp_path / "pipeline", subfolder="vqvae", image_size=32).model.config.image_size == 32
    pixels = random_pixels(count=8)
    assert torch.equal(vqgan_outputs(converted.model, pixels)[0], diffusers_outputs(source, pixels)[0])


def test_convert_tokenizer_refuses_other_models_naming_the_supported_kinds(tmp_path):
    from transformers import ViTConfig

    ViTConfig().save_pretrained(tmp_path)
    with pytest.raises(UnsupportedSourceError, match="'vit'.*diffusers VQModel.*JanusVQVAE"):
        convert_tokenizer(tmp_path)
    with pytest.raises(SourceNotFoundError, match="has no config.json"):
        convert_tokenizer(tmp_path, subfolder="vqvae")
    with pytest.raises(SourceNotFoundError, match="is no folder here, and cannot be fetched from the Hub"):
        convert_tokenizer("outputs/no-such-folder")  # offline, as these tests run
    hf_vq_tokenizer = VQGANModel(VQGANModel.config_class(**TINY_VQGAN))
    hf_vq_tokenizer.save_pretrained(tmp_path / "hf_vq")
    with pytest.raises(UnsupportedSourceError, match="an hf_vq tokenizer already: load it with VQGANModel"):
        convert_tokenizer(tmp_path / "hf_vq")


# ------------------------------------------------------------------------------------------- the Hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = HubServer(tmp_path_factory.mktemp("hub"), tokens={TOKEN: USER}, orgs={USER: [ORG]}).start()
    yield server
    server.stop()


def hub_env(hub: HubServer, home: Path) -> dict[str, str]:
    """A user of the loopback Hub, in a fresh process (huggingface_hub reads these when imported)."""
    return {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(home),
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_TOKEN": TOKEN,
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }


def upload(hub: HubServer, folder: Path, repo_id: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Upload `folder` as one commit of `repo_id`; returns the commit id."""
    from huggingface_hub import HfApi, constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the tests run offline; this Hub is on loopback
    api = HfApi(endpoint=hub.url, token=TOKEN)
    api.create_repo(repo_id, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder)).oid


NO_HF_VQ = """
import sys

class NoHfVq:  # the converted model must load from its own code, as where hf_vq is not installed
    def find_spec(self, name, path=None, target=None):
        if name == "hf_vq" or name.startswith("hf_vq."):
            raise ImportError("hf_vq is blocked in this test")

sys.meta_path.insert(0, NoHfVq())
"""


def test_converted_model_loads_from_the_hub_without_hf_vq(hub, tmp_path, monkeypatch):
    source = diffusers_source(LDM_LIKE)
    convert_dir = tmp_path / "converted"
    VQGANModel.from_diffusers(source).save_pretrained(convert_dir)
    upload(hub, convert_dir, f"{ORG}/converted-vq", monkeypatch)
    pixels = random_pixels(count=8)
    torch.save(pixels, tmp_path / "pixels.pt")
    script = NO_HF_VQ + textwrap.dedent(f"""
        import torch
        from transformers import AutoImageProcessor, AutoModel
        model = AutoModel.from_pretrained("{ORG}/converted-vq", trust_remote_code=True).eval()
        AutoImageProcessor.from_pretrained("{ORG}/converted-vq", trust_remote_code=True)
        pixels = torch.load("pixels.pt")
        with torch.no_grad():
            ids = model.encode(pixels).image_tokens
            torch.save((type(model).__module__, ids, model.decode(image_tokens=ids).reconstruction), "out.pt")
    """)
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=hub_env(hub, tmp_path / "home"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    module, ids, images = torch.load(tmp_path / "out.pt")
    expected_ids, expected_images = diffusers_outputs(source, pixels)
    assert module.startswith("transformers_modules")
    assert torch.equal(ids, expected_ids)
    assert (images - expected_images).abs().max() <= 1e-4


# ------------------------------------------------------------------------------------------- hf-vq convert


def act_as_hub_user(monkeypatch: pytest.MonkeyPatch, hub: HubServer, home: Path) -> None:
    """This process as a user of the loopback Hub (what HF_ENDPOINT and HF_HOME before the import would do)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "cache"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)


def test_cli_converts_a_pipeline_on_the_hub_with_a_card_naming_its_source(hub, tmp_path, monkeypatch):
    source = diffusers_source(LDM_LIKE)
    source.save_pretrained(tmp_path / "pipeline" / "vqvae")
    commit = upload(hub, tmp_path / "pipeline", f"{ORG}/vq-pipeline", monkeypatch)
    (tmp_path / "pipeline" / "vqvae" / "config.json").write_text('{"_class_name": "ViTModel"}')
    upload(hub, tmp_path / "pipeline", f"{ORG}/vq-pipeline", monkeypatch)  # main no longer holds a VQ model
    output_dir = tmp_path / "converted"
    result = subprocess.run(
        [sys.executable, "-m", "hf_vq.cli", "convert", f"{ORG}/vq-pipeline", "--subfolder", "vqvae"]
        + ["--revision", commit, "--output_dir", str(output_dir)],
        env=hub_env(hub, tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Converted diffusers VQModel org/vq-pipeline (subfolder 'vqvae', revision '{commit}')" in result.stdout
    from huggingface_hub import ModelCard

    card = ModelCard.load(output_dir / "README.md")
    assert card.data.base_model == f"{ORG}/vq-pipeline"
    assert "converted to `hf_vq` with `hf-vq convert` from a diffusers VQModel" in card.text
    pixels = random_pixels(count=8)
    model = VQGANModel.from_pretrained(output_dir).eval()
    assert torch.equal(vqgan_outputs(model, pixels)[0], diffusers_outputs(source, pixels)[0])
    assert (output_dir / "preprocessor_config.json").is_file()
    rerun = subprocess.run(
        result.args, env=hub_env(hub, tmp_path / "home"), capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 1 and "holds a model already; choose an empty --output_dir" in rerun.stderr


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    from hf_vq.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err


def test_cli_refuses_a_folder_that_holds_no_supported_tokenizer(tmp_path, capsys):
    from transformers import ViTConfig

    ViTConfig().save_pretrained(tmp_path / "vit")
    code, err = run_cli(["convert", str(tmp_path / "vit"), "--output_dir", str(tmp_path / "out")], capsys)
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("hf-vq convert: error: ") and "holds no tokenizer hf-vq can convert" in err
    assert "diffusers VQModel" in err and "JanusVQVAE" in err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_hub_id_that_does_not_exist(hub, tmp_path, capsys, monkeypatch):
    act_as_hub_user(monkeypatch, hub, tmp_path)
    code, err = run_cli(["convert", f"{ORG}/no-such-model", "--output_dir", str(tmp_path / "out")], capsys)
    assert code == 1 and err.count("\n") == 1
    assert "hf-vq convert: error: no model 'org/no-such-model' on the Hub" in err


# ------------------------------------------------------------------------------------------- transformers JanusVQVAE

JANUS_VQ = {
    "base_channels": 32,
    "channel_multiplier": [1, 1, 2],
    "num_res_blocks": 2,
    "latent_channels": 32,
    "embed_dim": 8,
    "num_embeddings": 64,
    "num_patches": SIDE // 4,
}


def janus_source(unit_codes: bool = True):
    """A random JanusVQVAE whose codes are spread over its (normalised) latents; of unit norm, as LlamaGen
    initialises them, or scaled by random norms."""
    from transformers import JanusVQVAE, JanusVQVAEConfig

    torch.manual_seed(0)
    model = JanusVQVAE(JanusVQVAEConfig(**JANUS_VQ)).eval()
    with torch.no_grad():
        latents = model.quant_conv(model.encoder(random_pixels(seed=0, count=8)))
        vectors = latents.permute(0, 2, 3, 1).reshape(-1, JANUS_VQ["embed_dim"])
        codes = vectors[torch.randperm(vectors.shape[0])[: JANUS_VQ["num_embeddings"]]]
        codes = torch.nn.functional.normalize(codes + 0.01 * torch.randn_like(codes), dim=-1)
        if not unit_codes:
            codes = codes * torch.empty(codes.shape[0], 1).uniform_(0.2, 3.0)
        model.quantize.embedding.weight.copy_(codes)
    return model


def janus_outputs(model, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' JanusVQVAE.encode ids and the reconstruction its forward gives (decode of those ids)."""
    with torch.no_grad():
        ids = model.encode(pixels).image_tokens.reshape(pixels.shape[0], -1)
        return ids.reshape(pixels.shape[0], *[JANUS_VQ["num_patches"]] * 2), model.decode(ids)


def llamagen_ids(model, pixels: torch.Tensor) -> torch.Tensor:
    """LlamaGen's lookup, written out: latents and codes l2-normalised, then the nearest code."""
    normalize = torch.nn.functional.normalize
    with torch.no_grad():
        latents = model.quant_conv(model.encoder(pixels)).permute(0, 2, 3, 1)
        distances = torch.cdist(normalize(latents, dim=-1).flatten(0, 2), normalize(model.quantize.embedding.weight))
    return distances.argmin(dim=1).reshape(latents.shape[:3])


def test_janus_vq_converts_to_the_same_ids_and_reconstructions():
    source = janus_source()
    converted = VQGANModel.from_transformers(source)
    pixels = random_pixels()
    expected_ids, expected_images = janus_outputs(source, pixels)
    ids, images = vqgan_outputs(converted, pixels)
    assert expected_ids.unique().numel() > 16, "the test needs many codes in use"
    assert converted.config.distance == "cosine" and converted.config.token_grid_size == (4, 4)
    assert torch.equal(ids, expected_ids)
    assert (images - expected_images).abs().max() <= 1e-4
    exported_ids, exported_images = diffusers_outputs(converted.to_diffusers(), pixels)  # unit codes: euclidean = cos
    assert torch.equal(exported_ids, expected_ids) and (exported_images - expected_images).abs().max() <= 1e-4


def test_janus_codes_of_other_norms_follow_llamagens_lookup_and_janus_decode(caplog):
    source = janus_source(unit_codes=False)
    with caplog.at_level("WARNING", logger="hf_vq.conversion.janus_vq"):
        converted = VQGANModel.from_transformers(source)
    assert "not of unit norm" in caplog.text and "JanusVQVAE.encode searches the raw codes" in caplog.text
    codes = converted.quantize.embedding.weight
    torch.testing.assert_close(codes.norm(dim=-1), torch.ones(len(codes)))  # stored normalised, as searched
    pixels = random_pixels()
    ids, images = vqgan_outputs(converted, pixels)
    assert torch.equal(ids, llamagen_ids(source, pixels))
    with torch.no_grad():
        expected_images = source.decode(ids.reshape(ids.shape[0], -1))
    assert (images - expected_images).abs().max() <= 1e-4


def full_janus_model(vq_vae):
    """A tiny JanusForConditionalGeneration (language model, understanding encoder, generation head) around
    `vq_vae`."""
    from transformers import JanusConfig, JanusForConditionalGeneration

    text = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1}
    text |= {"num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 100}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    vision |= {"image_size": 32, "patch_size": 16}
    vq_config = {**JANUS_VQ, "projection_dim": 16, "image_token_embed_dim": 16}
    full = JanusForConditionalGeneration(JanusConfig(vq_config=vq_config, text_config=text, vision_config=vision))
    full.model.vqmodel.load_state_dict(vq_vae.state_dict())
    return full


def test_a_full_janus_model_folder_converts_its_vq_vae(tmp_path):
    vq_vae = janus_source()
    full_janus_model(vq_vae).save_pretrained(tmp_path / "janus")
    converted = convert_tokenizer(tmp_path / "janus")
    assert converted.source.kind == "janus_vq" and converted.source_name.startswith("transformers JanusVQVAE")
    pixels = random_pixels(count=8)
    expected = janus_outputs(vq_vae, pixels)
    for actual, wanted in zip(vqgan_outputs(converted.model, pixels), expected):
        assert (actual.float() - wanted.float()).abs().max() <= 1e-4
    converted.save_pretrained(tmp_path / "converted")
    loaded = VQGANModel.from_pretrained(tmp_path / "converted").eval()
    assert torch.equal(vqgan_outputs(loaded, pixels)[0], expected[0])


@pytest.mark.parametrize(
    ("options", "named"),
    [({"double_latent": True}, "double_latent=True"), ({"channel_multiplier": [2, 2]}, r"channel_multiplier\[0\]=2")],
)
def test_janus_features_hf_vq_cannot_represent_are_refused_by_name(options, named):
    from transformers import JanusVQVAE, JanusVQVAEConfig

    with pytest.raises(UnsupportedSourceError, match=named):
        VQGANModel.from_transformers(JanusVQVAE(JanusVQVAEConfig(**{**JANUS_VQ, **options})))


def test_cli_converts_the_vq_vae_of_a_sharded_janus_model_on_the_hub_reading_only_its_shards(
    hub, tmp_path, monkeypatch
):
    vq_vae = janus_source()
    full_janus_model(vq_vae).save_pretrained(tmp_path / "janus", max_shard_size="100KB")
    shards = sorted(path.name for path in (tmp_path / "janus").glob("model-*.safetensors"))
    upload(hub, tmp_path / "janus", f"{ORG}/tiny-janus", monkeypatch)
    before = len(hub.requests)
    result = subprocess.run(
        [sys.executable, "-m", "hf_vq.cli", "convert", f"{ORG}/tiny-janus", "--output_dir", str(tmp_path / "out")],
        env=hub_env(hub, tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    fetched = {path.rsplit("/", 1)[-1] for method, path in hub.requests[before:] if method == "GET"}
    assert len(shards) > 2 and 0 < len(fetched & set(shards)) < len(shards)  # the VQ-VAE's shards, not the others
    pixels = random_pixels(count=8)
    ids, images = vqgan_outputs(VQGANModel.from_pretrained(tmp_path / "out").eval(), pixels)
    expected_ids, expected_images = janus_outputs(vq_vae, pixels)
    assert torch.equal(ids, expected_ids) and (images - expected_images).abs().max() <= 1e-4
