"""Behaviour of the code issue 23 added that its own tests left unpinned (found by the mutants of issue 25, see
docs/mutation.md): the token dataset's record of a relative tokenizer path and of its source, `encode` given a YAML
path and its report, fine-tuning sections that repeat the pretrained values, the converters' weight check and
their record of the source, and what the training, hub and data packages export."""

import importlib
import inspect
import json

import pytest
import torch
from diffusers import VQModel

from hf_vq import VQGANConfig, VQGANModel
from hf_vq.cli import main as cli_main
from hf_vq.conversion.weights import HF_VQ_ONLY_BUFFERS, load_converted_weights
from hf_vq.data.token_dataset import TokenDatasetInfo, write_info
from hf_vq.training.encoding import OutputDirInUseError, claim_output_dir
from hf_vq.training.fine_tuning import fine_tuning_options

from training_helpers import one_thread, reset_accelerate, write_labelled_imagefolder

TINY_VQGAN = {"block_out_channels": [8, 16], "norm_num_groups": 4, "latent_channels": 4, "image_size": 8}
TINY_VQGAN |= {"attention_resolutions": [], "codebook_size": 16, "embed_dim": 4}


def _info(**source) -> TokenDatasetInfo:
    source = {"dataset_name": None, "image_column": "image", "splits": {"train": 4}, **source}
    return TokenDatasetInfo("org/tok", 16, [2, 2], "0" * 64, source=source)


# ------------------------------------------------------------------------------------------------ token datasets


def test_a_relative_tokenizer_folder_is_recorded_as_an_absolute_path(tmp_path, monkeypatch):
    """A token dataset names its tokenizer by a path that still works from another working directory."""
    VQGANModel(VQGANConfig(**TINY_VQGAN)).save_pretrained(tmp_path / "tok")
    monkeypatch.chdir(tmp_path)
    model = VQGANModel.from_pretrained("tok")
    assert TokenDatasetInfo.from_tokenizer(model, "tok").tokenizer_name_or_path == str((tmp_path / "tok").resolve())
    assert TokenDatasetInfo.from_tokenizer(model, "org/tok").tokenizer_name_or_path == "org/tok"  # a Hub id


def test_an_output_dir_of_other_columns_with_the_same_split_sizes_is_refused(tmp_path):
    """Resuming into a folder of another source is refused even when every split has as many rows."""
    write_info(tmp_path, _info())
    assert claim_output_dir(tmp_path, _info(), is_main_process=True) == "done"
    with pytest.raises(OutputDirInUseError, match="tokens of other data"):
        claim_output_dir(tmp_path, _info(image_column="img"), is_main_process=True)


def test_encode_reads_a_yaml_path_and_reports_the_dataset(tokenizer_dir, tmp_path, capsys):
    from hf_vq.training.encode_command import encode, report

    images = write_labelled_imagefolder(tmp_path / "images", train_count=1, test_count=1)
    yaml_path = tmp_path / "encode.yaml"
    yaml_path.write_text(
        f"data:\n  train_data_dir: {images}\ntraining:\n  tokenizer_name_or_path: {tokenizer_dir}\n"
        f"  output_dir: {tmp_path / 'tokens'}\n  progress_bar: false\n"
    )
    reset_accelerate()
    with one_thread():
        result = report(encode(yaml_path))  # a pathlib.Path, not only a str
    out = capsys.readouterr().out
    assert result["images"] == 6 and (tmp_path / "tokens" / "token_dataset.json").is_file()
    assert f"token dataset: {(tmp_path / 'tokens').resolve()}" in out
    assert "splits:        train 3, test 3" in out and "encoded 6 images in" in out


# ------------------------------------------------------------------------------------------------ fine-tuning


def test_a_model_section_that_repeats_the_pretrained_values_is_no_contradiction():
    """A YAML section gives lists where the pretrained config may hold tuples: equal values agree."""
    pretrained = VQGANConfig(**{**TINY_VQGAN, "block_out_channels": (8, 16)})
    section = {"block_out_channels": [8, 16], "codebook_size": 16, "beta": 0.3}
    assert fine_tuning_options(pretrained, section) == {"beta": 0.3}


# ------------------------------------------------------------------------------------------------ conversion


def test_converted_weights_that_miss_a_tensor_or_differ_in_shape_are_refused():
    """`load_converted_weights` names the tensor a converter forgot or misshaped; hf_vq's own buffers may lack."""
    model = VQGANModel(VQGANConfig(**TINY_VQGAN))
    state = {key: value + 1 if value.is_floating_point() else value for key, value in model.state_dict().items()}
    complete = {key: value for key, value in state.items() if key not in HF_VQ_ONLY_BUFFERS}
    loaded = load_converted_weights(VQGANModel(VQGANConfig(**TINY_VQGAN)), complete, "source")
    assert torch.equal(loaded.state_dict()["quantize.embedding.weight"], state["quantize.embedding.weight"])
    assert not loaded.training
    missing = {key: value for key, value in complete.items() if key != "decoder.conv_out.bias"}
    with pytest.raises(RuntimeError, match=r"missing: \['decoder.conv_out.bias'\].*converter bug"):
        load_converted_weights(model, missing, "source")
    misshaped = {**complete, "decoder.conv_out.bias": torch.zeros(5)}
    with pytest.raises(RuntimeError, match=r"other shapes: \['decoder.conv_out.bias \(5,\) vs \(3,\)'\]"):
        load_converted_weights(model, misshaped, "source")


def test_convert_records_its_source_and_keeps_an_existing_model(tmp_path, capsys):
    torch.manual_seed(0)
    VQModel(block_out_channels=(32,), norm_num_groups=8, sample_size=16).save_pretrained(tmp_path / "vq")
    output_dir = tmp_path / "out"
    cli_main(["convert", str(tmp_path / "vq"), "--output_dir", str(output_dir), "--revision", "v1"])
    assert json.loads((output_dir / "training_config.json").read_text()) == {
        "pretrained_model_name_or_path": str(tmp_path / "vq"),
        "subfolder": None,
        "revision": "v1",
        "converted_from": "diffusers VQModel",
    }
    weights = (output_dir / "model.safetensors").read_bytes()
    with pytest.raises(SystemExit):
        cli_main(["convert", str(tmp_path / "other"), "--output_dir", str(output_dir)])
    assert "holds a model already; choose an empty --output_dir" in capsys.readouterr().err
    assert (output_dir / "model.safetensors").read_bytes() == weights


# ------------------------------------------------------------------------------------------------ packages


@pytest.mark.parametrize("package", ["hf_vq.training", "hf_vq.hub", "hf_vq.data", "hf_vq.conversion"])
def test_package_exports_are_its_public_names_each_bound_to_its_definition(package):
    """`__all__` lists every public name the package imports (submodules only when it exports them), and each is
    the object of that name (not another one imported under it)."""
    module = importlib.import_module(package)
    public = {name for name, value in vars(module).items() if not name.startswith("_") and not inspect.ismodule(value)}
    assert sorted(name for name in module.__all__ if not inspect.ismodule(getattr(module, name))) == sorted(public)
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.ismodule(value):
            assert value.__name__ == f"{package}.{name}"
        elif inspect.isclass(value) or inspect.isfunction(value):
            assert value.__name__ == name, (name, value)
    if package == "hf_vq.data":
        from hf_vq.data import fashion_mnist

        assert module.FASHION_MNIST_LABELS is fashion_mnist.LABELS
