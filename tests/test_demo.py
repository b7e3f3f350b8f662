"""The main job and the command line."""

import json

import pytest

from hf_vq.cli import build_parser, main


def test_cli_lists_every_subcommand():
    help_text = build_parser().format_help()
    for command in ("demo", "train-tokenizer", "train-classifier", "train-prior", "push"):
        assert command in help_text


@pytest.mark.slow
def test_quick_demo_runs_every_stage_and_writes_its_outputs(tmp_path, capsys):
    main(["demo", "--quick", "--output_dir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "| baseline |" in printed and "| all |" in printed and "test top-1 accuracy" in printed
    comparison = json.loads((tmp_path / "quantizer_comparison.json").read_text())
    assert set(comparison) == {"baseline", "all"}
    assert all(0 < run["usage"] <= 1 and run["mse"] > 0 for run in comparison.values())
    assert (tmp_path / "tokenizer" / "config.json").is_file() and (tmp_path / "tokenizer" / "samples.png").is_file()
    tokenizer_metrics = json.loads((tmp_path / "tokenizer" / "metrics.json").read_text())
    assert {"psnr", "ssim", "codebook_usage", "perplexity"} <= set(tokenizer_metrics)
    classifier_metrics = json.loads((tmp_path / "token_vit" / "metrics.json").read_text())
    assert 0 <= classifier_metrics["accuracy"] <= 1
    # Stage 4: the prior's pipeline folder, its sample grid and the metrics judged by the pixel ViT trained for it.
    assert (tmp_path / "pixel_vit" / "config.json").is_file() and (tmp_path / "prior" / "model_index.json").is_file()
    assert (tmp_path / "prior" / "samples.png").is_file() and "conditional accuracy" in printed
    prior_metrics = json.loads((tmp_path / "prior" / "metrics.json").read_text())
    assert {"conditional_accuracy", "real_accuracy", "classifier_fid", "reconstruction_classifier_fid"} <= set(prior_metrics)


def test_demo_rejects_bad_steps(tmp_path):
    with pytest.raises(SystemExit, match="--autoencoder_steps must be >= 1"):
        main(["demo", "--autoencoder_steps", "0", "--output_dir", str(tmp_path)])


@pytest.mark.parametrize("stage", ["classifier", "prior"])
def test_later_stages_need_the_tokenizer(stage, tmp_path):
    with pytest.raises(SystemExit, match=f"the {stage} stage needs the demo tokenizer"):
        main(["demo", "--stages", stage, "--output_dir", str(tmp_path)])
