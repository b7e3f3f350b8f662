"""The comparison study (scripts/compare_quantizers.py): every method trains on the smallest backbone in --quick mode,
results land one JSON per run, --resume skips them, each method builds the quantizer it names, the VQGAN tokenizer
backbone is the demo's with only the quantizer changed, and the report has a PNG per backbone and codebook size."""

import inspect
import json
import math
import statistics
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hf_vq import FiniteScalarQuantizer, VectorQuantizer, VQGANConfig, VQGANImageProcessor
from hf_vq.data import ImageTransform, load_fashion_mnist
from hf_vq.experiments import ARCHITECTURES, images_to_tensor
from hf_vq.experiments import compare
from hf_vq.experiments.compare import build_jobs, main, parse_args, run_name
from hf_vq.experiments.datasets import ClassificationData
from hf_vq.experiments.methods import (
    FSQ_LEVELS,
    METHODS,
    ProjectedQuantizer,
    make_quantizer,
    method_defaults,
    method_options,
)
from hf_vq.experiments.runner import build_model, task_loss
from hf_vq.experiments.study_plan import CORE_METHODS, StudyPart, StudyPlan
from hf_vq.experiments.vqgan_backbone import (
    QUANTIZER_FIELDS,
    VQGANBackbone,
    config_quantizer_fields,
    demo_tokenizer_config,
    vqgan_config,
    vqgan_data,
)
from training_helpers import child_pids

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DOCS = Path(__file__).resolve().parents[1] / "docs"


def assert_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 5000, f"{path} is not a plot ({len(data)} bytes)"


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
    assert result["plots"] == [tmp_path / "compare_fashion_mnist_steps4_autoencoder_K64.png"]
    assert_png(result["plots"][0])
    # --resume: nothing left to run, the report is rebuilt from the files.
    again = main(
        ["--quick", "--arch", "autoencoder", "--output_dir", str(tmp_path), "--resume", "--methods", "baseline,fsq"]
    )
    assert len(again["runs"]) == len(METHODS)


def pool_workers_of(runner_pid: int) -> list[int]:
    """The runner's multiprocessing pool workers: its children running spawn_main (not the resource tracker)."""
    return [pid for pid in child_pids(runner_pid) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; the guard it tests is Linux's prctl")
def test_a_stopped_study_leaves_no_pool_worker_behind(tmp_path):
    """SIGTERM to the runner (what `timeout` and `pkill` send) used to leave its spawn workers training and then
    waiting forever."""
    script = Path(__file__).parents[1] / "scripts" / "compare_quantizers.py"
    command = [sys.executable, str(script), "--quick", "--arch", "autoencoder", "--seeds", "0", "1", "2"]
    command += ["--workers", "2", "--output_dir", str(tmp_path)]
    runner = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
    workers = []
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("*.json")) and time.monotonic() < deadline and runner.poll() is None:
            time.sleep(0.1)  # the first result: both workers are up and training
        workers = pool_workers_of(runner.pid)
        assert runner.poll() is None and len(workers) == 2, "the runner ended (or never started) before the test"
        runner.send_signal(signal.SIGTERM)
        runner.wait(timeout=30)
        deadline = time.monotonic() + 20
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if alive(pid)], "pool workers outlived the runner"
    finally:
        runner.kill()
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_cpu_plan_is_the_documented_study_each_run_once():
    args = parse_args(["--plan", "cpu"])
    jobs = build_jobs(args)
    names = [run_name(job) for job in jobs]
    assert len(names) == len(set(names)) == 211  # the parts name 211 distinct runs and none twice
    assert (args.eval_size, args.curve_size) == (3000, 500)
    blocks = {(job["architecture"], job["nominal_codebook_size"], job["steps"]) for job in jobs}
    assert blocks == {
        ("autoencoder", 512, 400),
        ("autoencoder", 4096, 400),
        ("autoencoder", 16384, 400),
        ("autoencoder", 512, 1000),
        ("vqgan", 512, 400),
        ("vqgan", 512, 1000),
        ("alexnet", 1024, 400),
        ("vit", 1024, 400),
        ("resnet18", 1024, 400),
    }
    for arch, size in (("vqgan", 512), ("alexnet", 1024), ("vit", 1024), ("resnet18", 1024)):
        seeds = {
            (job["variant"], job["seed"])
            for job in jobs
            if (job["architecture"], job["nominal_codebook_size"], job["steps"]) == (arch, size, 400)
        }
        assert {(method, seed) for method in CORE_METHODS for seed in (0, 1, 2)} <= seeds, arch
    # The slowest runs first, so that the workers finish together.
    costs = [compare.RELATIVE_COST[job["architecture"]] * job["steps"] for job in jobs]
    assert costs == sorted(costs, reverse=True)
    assert len(build_jobs(parse_args(["--plan", "full"]))) == 5 * 3 * len(METHODS) * 3


def test_plan_refuses_the_flags_it_sets_and_parts_check_their_names():
    with pytest.raises(SystemExit):
        parse_args(["--plan", "cpu", "--steps", "10"])
    with pytest.raises(SystemExit):
        parse_args(["--methods", "baseline,nope"])
    with pytest.raises(ValueError, match="unknown method"):
        StudyPart(("autoencoder",), (512,), ("baseline", "nope"))
    with pytest.raises(ValueError, match="unknown backbone"):
        StudyPart(("autoencoders",), (512,), ("baseline",))


def test_plan_runs_its_parts_and_writes_a_report_per_budget(tmp_path, monkeypatch, capsys):
    tiny = StudyPlan(
        "two budgets",
        (
            StudyPart(("autoencoder",), (64,), ("baseline", "fsq"), seeds=(0,), steps=2, curve_points=1),
            StudyPart(("autoencoder",), (64,), ("baseline",), seeds=(0, 1), steps=3, curve_points=1),
            StudyPart(("autoencoder",), (64,), ("baseline",), seeds=(0,), steps=2, curve_points=1),
        ),
        eval_size=128,
        curve_size=64,
    )
    monkeypatch.setitem(compare.STUDY_PLANS, "tiny", tiny)
    result = main(["--plan", "tiny", "--quick", "--output_dir", str(tmp_path)])
    assert sorted((run["variant"], run["seed"], run["steps"]) for run in result["runs"]) == [
        ("baseline", 0, 2),
        ("baseline", 0, 3),
        ("fsq", 0, 2),
    ]
    # --quick keeps each part's first seed; the third part repeats a run of the first: it runs once.
    assert "3 runs (2, 3 steps)" in capsys.readouterr().out
    for steps in (2, 3):
        assert (
            "### autoencoder, 64 codes, " + f"{steps} steps"
            in (tmp_path / f"compare_fashion_mnist_steps{steps}.md").read_text()
        )
    assert [plot.name for plot in result["plots"]] == [
        "compare_fashion_mnist_steps2_autoencoder_K64.png",
        "compare_fashion_mnist_steps3_autoencoder_K64.png",
    ]
    again = main(["--plan", "tiny", "--quick", "--output_dir", str(tmp_path), "--resume"])
    assert "0 runs" in capsys.readouterr().out and len(again["runs"]) == 3


def test_methods_build_the_quantizer_they_name():
    defaults = ARCHITECTURES["autoencoder"]
    built = {}
    for name in ("simvq", "rotation", "ema", "alternating_sgd", "l2_lowdim", "fsq", "sync_nu2"):
        adjusted = method_defaults(name, defaults)
        built[name] = make_quantizer(
            adjusted.code_dim or adjusted.embed_dim, adjusted.codebook_size, **method_options(name, adjusted)
        )
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
        method_defaults(
            "fsq", ARCHITECTURES["alexnet"].__class__(**{**ARCHITECTURES["alexnet"].to_dict(), "codebook_size": 1000})
        )


def test_projected_quantizer_keeps_the_model_width():
    quantizer = make_quantizer(8, 32, channel_dim=-1, model_dim=64)
    assert isinstance(quantizer, ProjectedQuantizer) and isinstance(quantizer.quantizer, VectorQuantizer)
    tokens = torch.randn(2, 49, 64, requires_grad=True)
    out = quantizer(tokens)
    assert out.quantized.shape == (2, 49, 64) and out.indices.shape == (2, 49)
    out.quantized.sum().backward()
    assert tokens.grad.abs().sum() > 0


def test_quick_study_trains_the_vqgan_tokenizer_and_plots_it(tmp_path):
    assert "vqgan" in parse_args(["--arch", "all"]).parts[0].architectures
    result = main(["--quick", "--arch", "vqgan", "--methods", "baseline,fsq", "--output_dir", str(tmp_path)])
    runs = {run["variant"]: run for run in result["runs"]}
    assert set(runs) == {"baseline", "fsq"}
    for name, run in runs.items():
        assert run["architecture"] == "vqgan" and run["task"] == "reconstruction" and run["steps"] == 4, name
        assert math.isfinite(run["metrics"]["mse"]) and math.isfinite(run["metrics"]["psnr"]), name
        assert 1.0 <= run["metrics"]["perplexity"] <= 64 + 1e-3 and run["cpu_ms_per_step"] > 0, name
    assert runs["fsq"]["quantizer_options"] == {"quantizer_type": "fsq", "levels": FSQ_LEVELS[64]}
    assert runs["fsq"]["metrics"]["codebook_shift"] == 0.0 and runs["baseline"]["metrics"]["codebook_shift"] > 0
    assert "### vqgan, 64 codes, 4 steps" in result["report"] and "| fsq |" in result["report"]
    plot = tmp_path / "compare_fashion_mnist_steps4_vqgan_K64.png"
    assert result["plots"] == [plot]
    assert_png(plot)
    plot.unlink()
    again = main(["--quick", "--report_only", "--output_dir", str(tmp_path)])
    assert again["plots"] == [plot] and len(again["runs"]) == 2
    assert_png(plot)


def test_vqgan_backbone_is_the_demo_tokenizer_with_only_the_quantizer_changed():
    defaults = ARCHITECTURES["vqgan"]
    demo = VQGANConfig.from_yaml(demo_tokenizer_config())
    configs = {name: vqgan_config(method_defaults(name, defaults), name, num_channels=1) for name in METHODS}
    baseline = configs["baseline"]
    backbone = (
        "image_size",
        "block_out_channels",
        "layers_per_block",
        "attention_resolutions",
        "mid_block_add_attention",
        "norm_num_groups",
        "latent_channels",
        "embed_dim",
        "codebook_size",
        "reconstruction_loss_type",
    )
    assert {f: getattr(baseline, f) for f in backbone} == {f: getattr(demo, f) for f in backbone}
    assert 0.98e6 < sum(p.numel() for p in VQGANBackbone(baseline).parameters()) < 1.0e6  # the demo's 0.99M
    # Plain straight-through: none of the demo config's recipe (affine, sync, alternating, k-means, replacement).
    assert (baseline.affine, baseline.sync_nu, baseline.alternating, baseline.kmeans_init, baseline.replace_freq) == (
        None,
        0.0,
        False,
        False,
        0,
    )
    every = configs["all"]
    assert (
        every.affine,
        every.affine_lr,
        every.sync_nu,
        every.alternating,
        every.replace_freq,
        every.kmeans_init,
    ) == ("learned", 2.0, 0.2, True, 20, False)
    assert (configs["fsq"].quantizer_type, configs["fsq"].fsq_levels, configs["fsq"].embed_dim) == (
        "fsq",
        FSQ_LEVELS[512],
        3,
    )
    assert (configs["l2_lowdim"].distance, configs["l2_lowdim"].embed_dim) == ("cosine", 8)
    assert (configs["ema"].codebook_update, configs["ema"].replace_freq) == ("ema", 20)
    assert configs["simvq"].affine == "linear" and configs["rotation"].gradient_estimator == "rotation"
    assert configs["alternating_sgd"].alternating == "sgd" and configs["sync_nu2"].sync_nu == 2.0
    # A field a method does not set is VectorQuantizer's default, as on the other backbones.
    signature = inspect.signature(VectorQuantizer).parameters
    assert {f: getattr(baseline, f) for f in QUANTIZER_FIELDS if f in signature} == {
        f: signature[f].default for f in QUANTIZER_FIELDS if f in signature
    }
    with pytest.raises(ValueError, match="no VQGANConfig field"):
        config_quantizer_fields({"beta": 0.9, "search_backend": "faiss"}, 8, 512)
    with pytest.raises(ValueError, match=r"model_options \['replace_freq'\] are quantizer settings"):
        vqgan_config(replace(defaults, model_options={"replace_freq": 5}), "baseline", num_channels=1)


def test_vqgan_backbone_trains_on_the_configs_l1_loss():
    defaults = replace(
        ARCHITECTURES["vqgan"],
        codebook_size=16,
        model_options={"block_out_channels": [8, 16, 16], "norm_num_groups": 8},
    )
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    data = ClassificationData(images, torch.zeros(2, dtype=torch.long), images, torch.zeros(2, dtype=torch.long))
    model = build_model("vqgan", defaults, "baseline", data)
    assert (
        isinstance(model, VQGANBackbone)
        and isinstance(model.quantizer, VectorQuantizer)
        and model.quantizer.codebook_size == 16
    )
    out = model(images)
    loss = task_loss("reconstruction", out, images, data.train_labels)
    assert torch.allclose(loss, F.l1_loss(out["reconstruction"], images) + out["vq_loss"])


def test_vqgan_images_are_resized_as_the_tokenizer_training_data():
    raw = load_fashion_mnist("test").images[:6]
    tensors = images_to_tensor(raw)
    data = ClassificationData(tensors, torch.zeros(6, dtype=torch.long), tensors[:3], torch.zeros(3, dtype=torch.long))
    resized = vqgan_data(data, ARCHITECTURES["vqgan"])
    # What hf_vq/training/data.py does for the demo tokenizer: its processor, the model's side, no flips.
    processor = VQGANImageProcessor.from_model_config(VQGANConfig.from_yaml(demo_tokenizer_config()))
    transform = ImageTransform(processor, resolution=32, center_crop=False, random_flip=False)
    expected = torch.stack([transform(image) for image in raw])
    assert resized.train_images.shape == (6, 1, 32, 32) and torch.equal(resized.train_images, expected)
    assert torch.equal(resized.test_images, expected[:3])
    assert vqgan_data(data, ARCHITECTURES["vqgan"]) is resized  # resized once per worker, not once per run


@pytest.mark.parametrize("results_folder, steps", [("results_photos", 150), ("results_photos/steps250", 250)])
def test_published_photo_study_tables_are_the_committed_runs(results_folder, steps):
    # The photo study's tables are pasted into the docs by hand from `--report_only`; this rebuilds each from the
    # committed JSON files, as --report_only does, so that an edited number or a changed run file shows here.
    paths = sorted((DOCS / results_folder).glob(f"photos_*_steps{steps}.json"))
    runs = [json.loads(path.read_text()) for path in paths]
    assert len(runs) == 21 and {run["seed"] for run in runs} == {0, 1, 2}, "the study is 7 methods x 3 seeds"
    report = compare.markdown_report(runs, "", list(CORE_METHODS))
    rows = [line for line in report.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert len(rows) == 7
    for document in ("results.md", "benchmarks.md"):
        text = (DOCS / document).read_text()
        missing = [row for row in rows if row not in text]
        assert not missing, f"docs/{document} does not show these rows of the {steps}-step table: {missing}"


def test_published_five_seed_comparison_of_the_photo_leaders_is_the_committed_runs():
    # docs/results.md's table of the two leaders over seeds 0-4 (per-seed MSEs, mean ± std, the paired difference)
    # and its paired t, from the JSON files.
    folders = [DOCS / "results_photos/steps250", DOCS / "results_photos/steps250_seeds34"]
    runs = [json.loads(path.read_text()) for folder in folders for path in folder.glob("*.json")]
    text = (DOCS / "results.md").read_text()
    mse = {}
    for method, label in (("ema", "EMA with restarts"), ("all", "all (Huh et al.)")):
        mse[method] = {run["seed"]: run["metrics"]["mse"] for run in runs if run["variant"] == method}
        assert sorted(mse[method]) == [0, 1, 2, 3, 4]
        per_seed = " / ".join(f"{mse[method][seed]:.4f}" for seed in range(5))
        row = f"| {label} | {per_seed} | {compare.format_value('mse', list(mse[method].values()))} |"
        assert row in text, f"docs/results.md does not show {row}"
    differences = [mse["ema"][seed] - mse["all"][seed] for seed in range(5)]
    per_seed = " / ".join(f"{difference:+.4f}" for difference in differences)
    row = f"| EMA minus all, same seed | {per_seed} | {compare.format_value('mse', differences)} |"
    assert row in text, f"docs/results.md does not show {row}"
    t = statistics.fmean(differences) / (statistics.stdev(differences) / math.sqrt(len(differences)))
    assert f"paired t = {t:.2f}" in text
