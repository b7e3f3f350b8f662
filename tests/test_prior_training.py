"""`hf-vq train-prior` on tiny data: a pipeline folder that loads and generates, the token cache reused, exact
resume, an unconditional prior, and inputs that cannot work."""

import importlib.util
import json
from pathlib import Path

import PIL.Image
import pytest
import torch
from safetensors.torch import load_file
from transformers import ViTConfig, ViTForImageClassification

from hf_vq import VQGANConfig, VQGANModel
from hf_vq.cli import main as cli_main
from hf_vq.training.args import ConfigError
from hf_vq.training.prior_command import resolve_prior_args, train_prior
from hf_vq.training.priors import PRIOR_SPECS
from hf_vq.training.priors.maskgit import MaskGITPrior
from hf_vq.training.token_data import ImageEncoder, MissingLabelsError

from training_helpers import CLASSES, REPO, one_thread, reset_accelerate, write_images

TINY_PRIOR = str(REPO / "configs" / "maskgit_tiny.yaml")


@pytest.fixture(scope="module")
def image_dir(labelled_image_dir):
    return labelled_image_dir


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory):
    """A pixel classifier of the tokenizer's images (untrained: the plumbing is under test, not its accuracy)."""
    folder = tmp_path_factory.mktemp("judge")
    config = ViTConfig(
        image_size=16,
        patch_size=2,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=len(CLASSES),
    )
    ViTForImageClassification(config).save_pretrained(folder)
    return folder


def _flags(tokenizer_dir, image_dir, tmp_path, name="prior", **overrides):
    return {
        "config": TINY_PRIOR,
        "tokenizer_name_or_path": str(tokenizer_dir),
        "train_data_dir": str(image_dir),
        "output_dir": str(tmp_path / name),
        "cache_dir": str(tmp_path / "cache"),
        **overrides,
    }


def _train(flags):
    """In this process, on one thread (tiny models on a shared machine: a second thread only waits)."""
    reset_accelerate()
    with one_thread():
        return train_prior(flags)


def test_tiny_run_ends_in_a_pipeline_that_loads_and_generates_and_reuses_the_token_cache(
    tokenizer_dir, image_dir, judge_dir, tmp_path, monkeypatch
):
    from diffusers import DiffusionPipeline

    # 4 judged samples: the 9 test images hold 4 references and 4 others whose reconstructions give the floor.
    result = _train(
        _flags(tokenizer_dir, image_dir, tmp_path, eval_classifier_name_or_path=str(judge_dir), num_eval_images=4)
    )
    output_dir = tmp_path / "prior"
    index = json.loads((output_dir / "model_index.json").read_text())
    assert {"vqgan", "transformer", "scheduler"} <= set(index)
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics == result["metrics"] and metrics["global_step"] == 4 and metrics["num_classes"] == 3
    assert metrics["eval_images"] == 4 and metrics["reconstructions_disjoint"] is True
    for name in (
        "conditional_accuracy",
        "real_accuracy",
        "classifier_fid",
        "reconstruction_classifier_fid",
        "generated_perplexity",
        "real_perplexity",
        "generated_usage",
        "val_loss",
    ):
        assert metrics[name] is not None and metrics[name] >= 0, name
    assert 0 <= metrics["conditional_accuracy"] <= 1 and 0 < metrics["generated_usage"] <= 1
    # Compute spent as CPU seconds of the process, beside the wall-clock seconds that other work inflates.
    assert metrics["train_cpu_seconds"] > 0 and metrics["sampling_cpu_seconds_per_image"] > 0
    assert (output_dir / "training_config.json").is_file()
    # One row per class, num_sample_images (2) per row, 16x16 tiles with 2-pixel gaps.
    assert PIL.Image.open(output_dir / "samples.png").size == (2 * 16 + 3 * 2, 3 * 16 + 4 * 2)

    pipe = DiffusionPipeline.from_pretrained(output_dir, trust_remote_code=True)
    config = pipe.transformer.config
    assert (config.codebook_size, config.grid_height, config.num_classes) == (32, 8, 3)
    out = pipe(
        class_labels=[0, 2],
        num_inference_steps=4,
        guidance_scale=2.0,
        generator=torch.Generator().manual_seed(0),
        output_type="pil",
    )
    assert len(out.images) == 2 and out.images[0].size == (16, 16) and out.image_tokens.shape == (2, 8, 8)

    # A second run must not tokenize anything (nor preprocess the real images again).
    cache_files = sorted((tmp_path / "cache").rglob("*.arrow"))
    monkeypatch.setattr(ImageEncoder, "__call__", lambda self, batch: pytest.fail("encoded again despite the cache"))
    again = _train(
        _flags(
            tokenizer_dir,
            image_dir,
            tmp_path,
            name="again",
            eval_classifier_name_or_path=str(judge_dir),
            num_eval_images=4,
        )
    )
    assert again["metrics"]["val_loss"] == metrics["val_loss"]  # same seed, same tokens, same prior
    assert sorted((tmp_path / "cache").rglob("*.arrow")) == cache_files


@pytest.mark.parametrize("prior_config", ["maskgit_tiny.yaml", "autoregressive_tiny.yaml"])
def test_resumed_run_matches_an_uninterrupted_one(prior_config, tokenizer_dir, image_dir, tmp_path):
    # EMA, label dropout and a resume in the middle of an epoch (24 images, batches of 8: 3 per epoch; resume at 2),
    # for every kind of prior.
    flags = dict(
        config=str(REPO / "configs" / prior_config),
        use_ema=True,
        label_dropout=0.5,
        lr_scheduler="constant",
        num_eval_images=0,
        num_sample_images=0,
        max_train_steps=4,
    )
    _train(_flags(tokenizer_dir, image_dir, tmp_path, name="whole", **flags))
    _train(_flags(tokenizer_dir, image_dir, tmp_path, name="resumed", **{**flags, "max_train_steps": 2}))
    result = _train(
        _flags(tokenizer_dir, image_dir, tmp_path, name="resumed", resume_from_checkpoint="latest", **flags)
    )
    assert result["global_step"] == 4
    whole = load_file(tmp_path / "whole" / "transformer" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "transformer" / "model.safetensors")
    assert whole.keys() == resumed.keys()
    for name in whole:
        torch.testing.assert_close(resumed[name], whole[name], rtol=0, atol=0, msg=name)


def test_resuming_with_another_tokenizer_is_refused(tokenizer_dir, image_dir, tmp_path):
    _train(_flags(tokenizer_dir, image_dir, tmp_path, max_train_steps=2, num_eval_images=0, num_sample_images=0))
    other = tmp_path / "other_tokenizer"
    torch.manual_seed(1)
    VQGANModel(VQGANConfig.from_pretrained(tokenizer_dir)).save_pretrained(other)  # same shapes, other codes
    with pytest.raises(ValueError, match="another tokenizer"):
        _train(_flags(other, image_dir, tmp_path, resume_from_checkpoint="latest"))


def test_pretrained_prior_of_another_tokenizer_is_refused(tokenizer_dir, image_dir, tmp_path):
    from hf_vq.models.maskgit import MaskGITConfig, MaskGITModel

    prior = MaskGITModel(
        MaskGITConfig(
            codebook_size=16,
            grid_height=8,
            grid_width=8,
            num_classes=3,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
    )
    prior.save_pretrained(tmp_path / "small_prior")
    with pytest.raises(ValueError, match="codebook_size=32 but this prior"):
        _train(_flags(tokenizer_dir, image_dir, tmp_path, pretrained_model_name_or_path=str(tmp_path / "small_prior")))


def test_unlabeled_data_needs_an_unconditional_prior(tokenizer_dir, tmp_path):
    write_images(tmp_path / "flat" / "train", 12, size=18)  # no class subfolders: no labels
    flags = _flags(tokenizer_dir, tmp_path / "flat", tmp_path, num_eval_images=4)
    with pytest.raises(MissingLabelsError, match="num_classes: 0"):
        _train(flags)
    config = tmp_path / "unconditional.yaml"
    config.write_text(
        (REPO / "configs" / "maskgit_tiny.yaml").read_text().replace("model:\n", "model:\n  num_classes: 0\n")
    )
    result = _train({**flags, "config": str(config), "guidance_scale": 1.0})
    assert result["metrics"]["num_classes"] == 0 and "conditional_accuracy" not in result["metrics"]
    assert result["metrics"]["generated_perplexity"] > 0
    with pytest.raises(ConfigError, match="guidance_scale 2.0 needs a class-conditional prior"):
        resolve_prior_args({**flags, "config": str(config), "guidance_scale": 2.0})


@pytest.mark.parametrize(
    "override, message",
    [
        ({"tokenizer_name_or_path": None}, "no tokenizer"),
        ({"label_dropout": 1.0}, r"--label_dropout must lie in \[0, 1\)"),
        ({"num_inference_steps": 0}, "--num_inference_steps must be >= 1"),
        ({"random_flip": True}, "unknown flag --random_flip"),  # tokens are cached once: no augmentation flags
        ({"inception_weights": "/nonexistent/inception.pth"}, "is not a file"),
        ({"prior_type": "diffusion"}, r"prior_type 'diffusion' is not a known prior; valid: maskgit, autoregressive"),
        ({"prior_type": "maskgi"}, r"did you mean 'maskgit'\?\); valid: maskgit, autoregressive"),
    ],
)
def test_flags_that_cannot_work_are_refused(override, message, tokenizer_dir, image_dir, tmp_path):
    with pytest.raises(ConfigError, match=message):
        resolve_prior_args(_flags(tokenizer_dir, image_dir, tmp_path, **override))


def test_cli_has_the_command_and_a_flag_beats_the_file(tokenizer_dir, image_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_main(
            [
                "train-prior",
                "--config",
                TINY_PRIOR,
                "--tokenizer_name_or_path",
                str(tokenizer_dir),
                "--train_data_dir",
                str(image_dir),
                "--label_dropout",
                "2",
            ]
        )
    assert "train-prior: error: --label_dropout must lie in [0, 1)" in capsys.readouterr().err
    args = resolve_prior_args(_flags(tokenizer_dir, image_dir, tmp_path, max_train_steps=7))
    assert (args.max_train_steps, args.model_config["hidden_size"], args.label_dropout) == (7, 32, 0.1)


def test_a_saved_pipeline_is_judged_again_without_training(tokenizer_dir, image_dir, judge_dir, tmp_path):
    from hf_vq.training.prior_evaluation import evaluate_saved_pipeline

    _train(_flags(tokenizer_dir, image_dir, tmp_path, max_train_steps=2, num_eval_images=0, num_sample_images=0))
    args = resolve_prior_args(
        _flags(
            tokenizer_dir,
            image_dir,
            tmp_path,
            name="judged",
            num_eval_images=4,
            pretrained_model_name_or_path=str(tmp_path / "prior"),
            guidance_scale=1.0,
            eval_classifier_name_or_path=str(judge_dir),
        )
    )
    metrics = evaluate_saved_pipeline(args)
    assert json.loads((tmp_path / "judged" / "metrics.json").read_text()) == metrics
    # The sample grid at the judged settings: one row per class, num_sample_images (2) per row, 16x16 tiles.
    assert PIL.Image.open(tmp_path / "judged" / "samples.png").size == (2 * 16 + 3 * 2, 3 * 16 + 4 * 2)
    assert (
        metrics["guidance_scale"] == 1.0 and metrics["eval_images"] == 4 and 0 <= metrics["conditional_accuracy"] <= 1
    )


def _evaluate_prior_script():
    spec = importlib.util.spec_from_file_location("evaluate_prior", REPO / "scripts" / "evaluate_prior.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_sweep_judges_every_setting_from_one_load(
    tokenizer_dir, image_dir, judge_dir, tmp_path, monkeypatch, capsys
):
    from diffusers import DiffusionPipeline

    _train(_flags(tokenizer_dir, image_dir, tmp_path, max_train_steps=2, num_eval_images=0, num_sample_images=0))
    loads = []
    load = DiffusionPipeline.from_pretrained.__func__
    monkeypatch.setattr(
        DiffusionPipeline, "from_pretrained", classmethod(lambda *a, **k: loads.append(1) or load(*a, **k))
    )
    flags = _flags(tokenizer_dir, image_dir, tmp_path, name="sweep", num_eval_images=4)
    argv = [f"--{name}={value}" for name, value in flags.items()]
    argv += ["--pretrained_model_name_or_path", str(tmp_path / "prior"), "--eval_classifier_name_or_path"]
    argv += [str(judge_dir), "--sweep_guidance_scale", "1", "2", "--sweep_temperature", "1", "4.5"]
    with one_thread():
        assert _evaluate_prior_script().main(argv) == 0
    rows = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [(row["guidance_scale"], row["temperature"]) for row in rows] == [(1, 1), (1, 4.5), (2, 1), (2, 4.5)]
    assert len(loads) == 1 and all(row["eval_images"] == 4 for row in rows)
    # Same seed, same settings: the same samples; another temperature: other samples.
    assert rows[0]["classifier_fid"] != rows[1]["classifier_fid"]
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert table[0].startswith("| guidance_scale | temperature | accuracy ratio | FID ratio | diversity ratio |")
    assert len(table) == 2 + 4 and table[4].startswith("| 2.0 | 1.0 | ")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sweep_temperature", "1", "-1"], "--temperature must be >= 0, got -1.0"),
        (["--sweep_top_k", "5"], "--top_k and --top_p sample the autoregressive prior"),
        (["--sweep_temperature"], "expected at least one argument"),
    ],
)
def test_bad_sweeps_are_refused_before_anything_loads(argv, message, tokenizer_dir, image_dir, tmp_path, capsys):
    flags = _flags(tokenizer_dir, image_dir, tmp_path, pretrained_model_name_or_path=str(tmp_path / "absent"))
    with pytest.raises(SystemExit):
        _evaluate_prior_script().main([f"--{name}={value}" for name, value in flags.items()] + argv)
    assert message in capsys.readouterr().err


def test_a_sweep_refuses_settings_that_differ_in_more_than_sampling(tokenizer_dir, image_dir, tmp_path):
    from hf_vq.training.prior_evaluation import sweep_configs, sweep_saved_pipeline

    with pytest.raises(ConfigError, match="cannot sweep learning_rate: the sweepable flags are guidance_scale"):
        sweep_configs(_flags(tokenizer_dir, image_dir, tmp_path), {"learning_rate": [1e-3]})
    configs = [resolve_prior_args(_flags(tokenizer_dir, image_dir, tmp_path, seed=seed)) for seed in (0, 1)]
    with pytest.raises(ConfigError, match=r"differ only in sampling flags, not in \['seed'\]"):
        sweep_saved_pipeline(configs)


class CountingPrior(MaskGITPrior):
    """A second prior spec, as a new spec file would add one: MaskGIT's parts, counting what the machinery asks."""

    name = "counting"
    calls: dict[str, int] = {}

    def _count(self, what: str) -> None:
        CountingPrior.calls[what] = CountingPrior.calls.get(what, 0) + 1

    def build_model(self, *args, **kwargs):
        self._count("build_model")
        return super().build_model(*args, **kwargs)

    def training_loss(self, model_config, label_dropout):
        self._count("training_loss")
        return super().training_loss(model_config, label_dropout)

    def build_pipeline(self, tokenizer, prior):
        self._count("build_pipeline")
        return super().build_pipeline(tokenizer, prior)


def test_prior_type_picks_the_spec_the_whole_run_goes_through(tokenizer_dir, image_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(PRIOR_SPECS, "counting", f"{__name__}:CountingPrior")
    CountingPrior.calls.clear()
    result = _train(
        _flags(
            tokenizer_dir,
            image_dir,
            tmp_path,
            prior_type="counting",
            max_train_steps=2,
            validation_steps=1,
            num_eval_images=0,
            num_sample_images=1,
        )
    )
    # The model, the step's loss (training, then each validation), the pipeline of the validation's sample grid and
    # the saved one: all from the spec chosen.
    assert CountingPrior.calls == {"build_model": 1, "training_loss": 3, "build_pipeline": 2}
    assert json.loads((Path(result["output_dir"]) / "training_config.json").read_text())["prior_type"] == "counting"
    assert {"val_loss", "val_masked_accuracy"} <= set(result["metrics"])
