"""The comparison study (scripts/compare_quantizers.py): every method trains on the smallest backbone in --quick mode,
results land one JSON per run, --resume skips them, and each method builds the quantizer it names."""

import json
import math

import pytest
import torch

from hf_vq import FiniteScalarQuantizer, VectorQuantizer
from hf_vq.experiments import ARCHITECTURES
from hf_vq.experiments.compare import main
from hf_vq.experiments.methods import FSQ_LEVELS, METHODS, ProjectedQuantizer, make_quantizer, method_defaults, method_options


def test_quick_study_runs_every_method_and_resumes(tmp_path):
    result = main(["--quick", "--arch", "autoencoder", "--output_dir", str(tmp_path)])
    runs = {run["variant"]: run for run in result["runs"]}
    assert set(runs) == set(METHODS)
    for name, run in runs.items():
        assert run["steps"] == 4 and math.isfinite(run["metrics"]["mse"]), name
        assert 1.0 <= run["metrics"]["perplexity"] <= run["defaults"]["codebook_size"] + 1e-3, name
        assert run["cpu_ms_per_step"] > 0, name
    assert runs["fsq"]["defaults"]["codebook_size"] == math.prod(FSQ_LEVELS[64])
    assert runs["fsq"]["metrics"]["codebook_shift"] == 0.0  # no codebook to train
    assert runs["baseline"]["metrics"]["codebook_shift"] > 0
    files = sorted(tmp_path.glob("fashion_mnist_autoencoder_K64_*_seed0_steps4.json"))
    assert len(files) == len(METHODS)
    assert json.loads(files[0].read_text())["nominal_codebook_size"] == 64
    report = (tmp_path / "compare_fashion_mnist_steps4.md").read_text()
    assert all(f"| {name} |" in report for name in METHODS)
    # --resume: nothing left to run, the report is rebuilt from the files.
    again = main(["--quick", "--arch", "autoencoder", "--output_dir", str(tmp_path), "--resume", "--methods", "baseline,fsq"])
    assert len(again["runs"]) == len(METHODS)


def test_methods_build_the_quantizer_they_name():
    defaults = ARCHITECTURES["autoencoder"]
    built = {}
    for name in ("simvq", "rotation", "ema", "alternating_sgd", "l2_lowdim", "fsq", "sync_nu2"):
        adjusted = method_defaults(name, defaults)
        built[name] = make_quantizer(adjusted.code_dim or adjusted.embed_dim, adjusted.codebook_size, **method_options(name, adjusted))
    assert built["simvq"].embedding.affine is not None and not built["simvq"].embedding.weight.requires_grad
    assert built["rotation"].gradient_estimator == "rotation"
    assert built["ema"].codebook_update == "ema" and built["ema"].replace_freq == defaults.replace_freq
    assert built["alternating_sgd"].alternating_mode == "sgd"
    assert built["l2_lowdim"].distance == "cosine" and built["l2_lowdim"].embed_dim == 8
    assert isinstance(built["fsq"], FiniteScalarQuantizer) and built["fsq"].levels == FSQ_LEVELS[512]
    assert built["sync_nu2"].sync_nu == 2.0
    with pytest.raises(ValueError, match="unknown method"):
        method_options("vqgan", defaults)
    with pytest.raises(ValueError, match="no FSQ levels"):
        method_defaults("fsq", ARCHITECTURES["alexnet"].__class__(**{**ARCHITECTURES["alexnet"].to_dict(), "codebook_size": 1000}))


def test_projected_quantizer_keeps_the_model_width():
    quantizer = make_quantizer(8, 32, channel_dim=-1, model_dim=64)
    assert isinstance(quantizer, ProjectedQuantizer) and isinstance(quantizer.quantizer, VectorQuantizer)
    tokens = torch.randn(2, 49, 64, requires_grad=True)
    out = quantizer(tokens)
    assert out.quantized.shape == (2, 49, 64) and out.indices.shape == (2, 49)
    out.quantized.sum().backward()
    assert tokens.grad.abs().sum() > 0
