"""The main job and the command line."""

import json

import pytest

from hf_vq.cli import build_parser, main


def test_cli_lists_every_subcommand():
    help_text = build_parser().format_help()
    for command in ("demo", "train-tokenizer", "train-classifier", "push"):
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


def test_demo_rejects_bad_steps(tmp_path):
    with pytest.raises(SystemExit, match="--autoencoder_steps must be >= 1"):
        main(["demo", "--autoencoder_steps", "0", "--output_dir", str(tmp_path)])


def test_classifier_stage_needs_the_tokenizer(tmp_path):
    with pytest.raises(SystemExit, match="run the tokenizer stage first"):
        main(["demo", "--stages", "classifier", "--output_dir", str(tmp_path)])
