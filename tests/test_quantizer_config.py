"""One QuantizerConfig for every quantizer, the VQGAN model built from it, old folders loading unchanged, and the
eval-mode tokenizer traceable by torch.export / torch.compile (issues 21 and 27)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from safetensors.torch import load_file, save_file

import hf_vq
from hf_vq import VQGANConfig, VQGANModel
from hf_vq.experiments.methods import make_quantizer
from hf_vq.models.vqgan.modeling_vqgan import reconstruction_loss
from hf_vq.quantization import (
    QUANTIZERS,
    FiniteScalarQuantizer,
    GroupedVectorQuantizer,
    NonFiniteInputError,
    QuantizerConfig,
    ResidualVectorQuantizer,
    VectorQuantizer,
    build_quantizer,
    check_finite,
    register_quantizer,
)
from hf_vq.training import losses

# Folders saved by the code before QuantizerConfig (tests/test_legacy_folders.py checks their outputs).
LEGACY = Path(__file__).parent / "legacy" / "2026-12-03"
TINY = dict(
    block_out_channels=[8, 16],
    layers_per_block=1,
    norm_num_groups=4,
    latent_channels=8,
    image_size=16,
    attention_resolutions=[8],
    embed_dim=4,
    codebook_size=16,
)


# --------------------------------------------------------------------------------------------- QuantizerConfig


@pytest.mark.parametrize(
    "options, expected",
    [
        (dict(embed_dim=4, codebook_size=8), VectorQuantizer),
        (dict(quantizer_type="grouped", embed_dim=4, codebook_size=8, num_groups=2), GroupedVectorQuantizer),
        (dict(quantizer_type="residual", embed_dim=4, codebook_size=8, num_quantizers=3), ResidualVectorQuantizer),
        (dict(quantizer_type="fsq", fsq_levels=[5, 4, 3]), FiniteScalarQuantizer),
    ],
)
def test_build_quantizer_builds_every_registered_type_from_its_config(options, expected):
    config = QuantizerConfig(**options, channel_dim=-1, affine="learned" if "fsq_levels" not in options else None)
    quantizer = build_quantizer(config)
    assert type(quantizer) is expected and quantizer.quantizer_config == config
    out = quantizer(torch.randn(6, config.embed_dim))
    assert out.indices.shape == (6, *([config.tokens_per_position] if config.tokens_per_position > 1 else []))
    assert set(QUANTIZERS) == {"vector", "grouped", "residual", "fsq"}


def test_fsq_sizes_follow_from_its_levels_and_the_class_argument_name_is_an_alias():
    config = QuantizerConfig.from_dict({"quantizer_type": "fsq", "levels": [8, 5, 5, 5]})
    assert (config.fsq_levels, config.embed_dim, config.codebook_size) == ([8, 5, 5, 5], 4, 1000)


def test_unknown_quantizer_option_names_the_nearest_valid_one():
    with pytest.raises(ValueError, match="unknown quantizer option 'codebok_size': did you mean 'codebook_size'"):
        QuantizerConfig.from_dict({"embed_dim": 4, "codebok_size": 8})
    with pytest.raises(ValueError, match="'alternatng'.*did you mean 'alternating'"):
        make_quantizer(4, 8, alternatng=True)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(codebook_size=8), "embed_dim is required"),
        (dict(embed_dim=4, codebook_size=8, affine_momentum=0.0), "affine_momentum must lie in"),
        (dict(embed_dim=4, codebook_size=8, kmeans_iterations=-1), "kmeans_iterations must be >= 0"),
        (dict(embed_dim=4, codebook_size=8, num_quantizers=2), "only applies to quantizer_type='residual'"),
        (dict(embed_dim=4, codebook_size=8, search_backend="annoy"), "unknown search_backend"),
        (dict(quantizer_type="product", embed_dim=4, codebook_size=8), "unknown quantizer_type 'product'"),
    ],
)
def test_config_errors_name_the_option_to_change(options, message):
    with pytest.raises(ValueError, match=message):
        QuantizerConfig(**options)


def test_the_quantizer_classes_validate_through_the_config():
    # Checks that VQGANConfig had and the bare quantizer lacked now hold for both.
    with pytest.raises(ValueError, match="affine_momentum must lie in"):
        VectorQuantizer(embed_dim=4, codebook_size=8, affine="running", affine_momentum=1.5)
    with pytest.raises(ValueError, match="num_groups=3 must be a positive divisor of embed_dim=4"):
        GroupedVectorQuantizer(embed_dim=4, codebook_size=8, num_groups=3)


def test_a_new_quantizer_type_must_be_declared_in_the_config():
    with pytest.raises(ValueError, match="QUANTIZER_MODULES"):
        register_quantizer("lookup_free")


def test_vqgan_config_quantizer_fields_are_the_quantizer_configs_with_its_defaults():
    fields = QuantizerConfig.architecture_fields()
    assert set(fields) <= set(VQGANConfig.__dataclass_fields__)
    assert not {"channel_dim", "search_backend", "max_block_elements"} & set(VQGANConfig.__dataclass_fields__)
    quantizer_defaults = {name: QuantizerConfig.__dataclass_fields__[name].default for name in fields}
    model_defaults = {name: VQGANConfig.__dataclass_fields__[name].default for name in fields}
    # embed_dim and codebook_size are required by a bare quantizer; the model config gives them defaults.
    assert {k: v for k, v in model_defaults.items() if k not in ("embed_dim", "codebook_size")} == {
        k: v for k, v in quantizer_defaults.items() if k not in ("embed_dim", "codebook_size")
    }
    config = VQGANConfig(**TINY, quantizer_type="grouped", num_groups=2, beta=1)
    assert config.quantizer_config == QuantizerConfig(
        quantizer_type="grouped", embed_dim=4, codebook_size=16, num_groups=2, beta=1.0
    )
    assert config.tokens_per_position == 2 and isinstance(VQGANModel(config).quantize, GroupedVectorQuantizer)


def test_vqgan_config_json_with_a_misspelled_quantizer_field_names_the_field(tmp_path):
    VQGANConfig(**TINY).save_pretrained(tmp_path)
    document = json.loads((tmp_path / "config.json").read_text())
    document["replace_frq"] = 100
    (tmp_path / "config.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match="'replace_frq': did you mean 'replace_freq'"):
        VQGANConfig.from_pretrained(tmp_path)
    del document["replace_frq"]
    document["search_backend"] = "faiss"
    (tmp_path / "config.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match="run-time option.*model.quantize.search_backend"):
        VQGANConfig.from_pretrained(tmp_path)
    with pytest.raises(StrictDataclassClassValidationError, match="affine_momentum"):
        VQGANConfig(**TINY, affine="running", affine_momentum=0.0)


# ------------------------------------------------------------------------- folders saved by the code before


def test_quantizer_tensors_missing_from_a_checkpoint_are_initialised_by_the_quantizer(tmp_path):
    for name, dropped_suffixes in {
        "vector_running_cosine": ("running_mean", "running_var", "num_updates", "steps_since_used", "initialized"),
        "vector_ema_rotation": ("cluster_size", "cluster_sum"),
        "simvq": ("affine.weight",),
    }.items():
        folder = tmp_path / name
        shutil.copytree(LEGACY / name, folder)
        state = load_file(str(folder / "model.safetensors"))
        kept = {k: v for k, v in state.items() if not (k.startswith("quantize.") and k.endswith(dropped_suffixes))}
        assert len(kept) < len(state)
        save_file(kept, str(folder / "model.safetensors"), metadata={"format": "pt"})
        quantize = VQGANModel.from_pretrained(folder).quantize
        loaded = dict(quantize.state_dict())
        for key, value in kept.items():  # what the checkpoint held is kept as it was
            if key.startswith("quantize."):
                assert torch.equal(loaded[key.removeprefix("quantize.")], value), key
        embedding = quantize.embedding
        if name == "vector_running_cosine":
            assert torch.equal(embedding.affine.running_mean, torch.zeros(4))
            assert torch.equal(embedding.affine.running_var, torch.ones(4))
            assert int(embedding.affine.num_updates) == 0 and bool(quantize.initialized)
            assert torch.equal(quantize.steps_since_used, torch.zeros(32, dtype=torch.long))
        elif (
            name == "vector_ema_rotation"
        ):  # clusters of size 1 whose sums the next update takes from the loaded codes
            assert torch.equal(embedding.ema.cluster_size, torch.ones(32)) and embedding.ema.cluster_sum.isnan().all()
            reference = VQGANModel.from_pretrained(LEGACY / name).quantize
            reference.embedding.ema.reset_statistics(reference.embedding.weight.detach())
            vectors = torch.nn.functional.normalize(torch.randn(64, 4), dim=-1)
            for stats in (quantize, reference):
                torch.manual_seed(0)  # the same draws for both (dead-code replacement is random)
                stats.train()(vectors[..., None, None])
            assert torch.equal(embedding.weight, reference.embedding.weight)
            assert torch.equal(embedding.ema.cluster_sum, reference.embedding.ema.cluster_sum)
        else:
            assert torch.equal(embedding.affine.weight, torch.eye(4))


# ------------------------------------------------------------------------------ tracing, losses, conventions


def _tiny_model(**overrides) -> VQGANModel:
    torch.manual_seed(0)
    return VQGANModel(VQGANConfig(**{**TINY, "affine": "learned", **overrides})).eval()


class _Encode(torch.nn.Module):
    def __init__(self, model: VQGANModel):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode(pixel_values).image_tokens


class _Decode(_Encode):
    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        return self.model.decode(image_tokens=image_tokens).reconstruction


def test_torch_export_of_encode_and_decode_gives_the_eager_outputs():
    model = _tiny_model()
    pixel_values = torch.rand(2, 3, 16, 16) * 2 - 1
    tokens = model.encode(pixel_values).image_tokens
    exported_encode = torch.export.export(_Encode(model), (pixel_values,)).module()
    exported_decode = torch.export.export(_Decode(model), (tokens,)).module()
    assert torch.equal(exported_encode(pixel_values), tokens)
    torch.testing.assert_close(exported_decode(tokens), model.decode(image_tokens=tokens).reconstruction)
    with pytest.raises(RuntimeError):  # the index range check is a runtime assert of the exported graph
        exported_decode(torch.full_like(tokens, 16))


def test_decoding_token_ids_compiles_without_a_graph_break_and_still_checks_their_range():
    model = _tiny_model()
    tokens = model.encode(torch.rand(2, 3, 16, 16) * 2 - 1).image_tokens
    explanation = torch._dynamo.explain(_Decode(model))(tokens)
    assert explanation.graph_break_count == 0, [str(reason.reason)[:300] for reason in explanation.break_reasons]
    compiled = torch.compile(_Decode(model), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(tokens), model.decode(image_tokens=tokens).reconstruction)
    with pytest.raises(RuntimeError, match="code indices must lie in"):
        compiled(torch.full_like(tokens, 16))


FSQ = dict(quantizer_type="fsq", fsq_levels=[4, 2, 2], embed_dim=3, codebook_size=16, affine=None)


@pytest.mark.parametrize("quantizer", [dict(), FSQ])
def test_eval_forward_compiles_without_a_graph_break(quantizer):
    model = _tiny_model(**quantizer)
    explanation = torch._dynamo.explain(model)(torch.rand(2, 3, 16, 16) * 2 - 1)
    assert explanation.graph_break_count == 0, [str(reason.reason)[:300] for reason in explanation.break_reasons]


def test_non_finite_inputs_raise_in_training_and_on_request_not_in_eval():
    quantizer = VectorQuantizer(embed_dim=4, codebook_size=8)
    bad = torch.tensor([[0.0, float("nan"), 1.0, 2.0]])
    with pytest.raises(NonFiniteInputError, match="1 NaN or Inf"):
        quantizer.train()(bad)
    assert torch.isnan(quantizer.eval()(bad).loss)  # no host sync at inference: NaN in, NaN out
    with pytest.raises(NonFiniteInputError, match="pixels input contains 1 NaN"):
        check_finite(bad, "pixels")


def test_one_reconstruction_loss_for_model_and_training():
    zeros, twos = torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0)
    assert losses.reconstruction_loss is reconstruction_loss
    assert float(reconstruction_loss(zeros, twos, "mse")) == float(reconstruction_loss(zeros, twos, "l2")) == 4.0
    assert float(reconstruction_loss(zeros, twos)) == 2.0
    with pytest.raises(ValueError, match="'l1', 'mse', 'l2'"):
        reconstruction_loss(zeros, twos, "huber")
    pixel_values = torch.rand(1, 3, 16, 16) * 2 - 1
    mse, l2 = (_tiny_model(reconstruction_loss_type=kind)(pixel_values) for kind in ("mse", "l2"))
    assert torch.equal(mse.reconstruction_loss, l2.reconstruction_loss)


def test_output_hidden_states_fills_hidden_states_after_the_other_fields():
    model = _tiny_model()
    out = model(torch.rand(1, 3, 16, 16) * 2 - 1, output_hidden_states=True)
    assert out.hidden_states == out.encoder_hidden_states + out.decoder_hidden_states
    assert len(out.hidden_states) == 2 * len(TINY["block_out_channels"]) + 4
    assert list(out.keys())[-1] == "hidden_states" and model(torch.zeros(1, 3, 16, 16)).hidden_states is None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_quantizer_stays_float32_under_a_half_precision_dtype(tmp_path, dtype):
    config = VQGANConfig(**TINY, affine="learned")
    built = VQGANModel._from_config(config, dtype=dtype)
    _tiny_model().save_pretrained(tmp_path)
    loaded = VQGANModel.from_pretrained(tmp_path, dtype=dtype)
    for model in (built, loaded):
        assert model.quant_conv.weight.dtype == dtype
        assert {p.dtype for p in model.quantize.parameters()} == {torch.float32}
        assert model.quantize.embedding.affine.scale.dtype == torch.float32
        assert model(torch.rand(1, 3, 16, 16, dtype=dtype)).reconstruction.dtype == dtype


def test_the_study_backbone_does_not_import_the_demo_command():
    import ast

    import hf_vq.experiments.vqgan_backbone as backbone

    tree = ast.parse(Path(backbone.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "demo" not in imported and backbone.demo_tokenizer_config().name == "vqgan_fashion_mnist_cpu.yaml"


# ------------------------------------------------------------------------------------- adding a quantizer method

TOY_QUANTIZER_FILE = '''"""A quantizer method added as the README says: one file plus one line in QUANTIZER_MODULES."""

from .registry import register_quantizer
from .vector_quantizer import VectorQuantizer, vector_options


@register_quantizer("toy")
class ToyQuantizer(VectorQuantizer):
    @classmethod
    def from_config(cls, config):
        return cls(**vector_options(config))
'''

SAVE_TOY_SCRIPT = """
import json, sys
import torch
import hf_vq
assert hf_vq.__file__.startswith(sys.argv[1]), hf_vq.__file__  # the copy with the new method, not the repository
from hf_vq import VQGANConfig, VQGANModel
torch.manual_seed(0)
model = VQGANModel(VQGANConfig(**json.loads(sys.argv[2]), quantizer_type="toy")).eval()
assert type(model.quantize).__name__ == "ToyQuantizer", type(model.quantize)
model.save_pretrained(sys.argv[3])
pixel_values = torch.rand(2, 3, 16, 16) * 2 - 1
with torch.no_grad():
    torch.save({"pixel_values": pixel_values, "tokens": model(pixel_values).image_tokens}, sys.argv[4])
"""

LOAD_TOY_SCRIPT = """
import sys
sys.modules["hf_vq"] = None  # the checkpoint must bring the new method's code
import torch
from transformers import AutoModel
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
assert type(model.quantize).__name__ == "ToyQuantizer", type(model.quantize)
assert type(model.quantize).__module__.startswith("transformers_modules"), type(model.quantize).__module__
saved = torch.load(sys.argv[2])
with torch.no_grad():
    assert torch.equal(model(saved["pixel_values"]).image_tokens, saved["tokens"])
"""


def _run_python(script: Path, *args: str, pythonpath: str, modules: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(modules), "PYTHONPATH": pythonpath}
    result = subprocess.run(
        [sys.executable, str(script), *args], cwd=script.parent, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_a_new_quantizer_method_is_one_file_and_one_registration(tmp_path):
    """The README's recipe, followed in a copy of the package: one new file in hf_vq/quantization/ and one line in
    QUANTIZER_MODULES; the VQGAN builds it, saves it, and the saved folder runs it where hf_vq is not installed."""
    package = tmp_path / "copy" / "hf_vq"
    shutil.copytree(Path(hf_vq.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "quantization" / "toy.py").write_text(TOY_QUANTIZER_FILE)
    config_file = package / "quantization" / "config.py"
    registration = '"fsq": "fsq"}'
    assert config_file.read_text().count(registration) == 1
    config_file.write_text(config_file.read_text().replace(registration, '"fsq": "fsq", "toy": "toy"}'))
    (tmp_path / "save.py").write_text(SAVE_TOY_SCRIPT)
    (tmp_path / "load.py").write_text(LOAD_TOY_SCRIPT)
    checkpoint, outputs = tmp_path / "checkpoint", tmp_path / "outputs.pt"
    copy_root = str(package.parent)
    _run_python(
        tmp_path / "save.py",
        copy_root,
        json.dumps(TINY),
        str(checkpoint),
        str(outputs),
        pythonpath=copy_root,
        modules=tmp_path / "modules",
    )
    assert (checkpoint / "toy.py").is_file()
    _run_python(tmp_path / "load.py", str(checkpoint), str(outputs), pythonpath="", modules=tmp_path / "modules")
