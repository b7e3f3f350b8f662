"""The main job and the command line."""

import json

import pytest

from hf_vq.cli import build_parser, main


def test_cli_lists_the_demo():
    assert "demo" in build_parser().format_help()


@pytest.mark.slow
def test_demo_trains_both_variants_and_writes_metrics(tmp_path, capsys):
    main(["demo", "--steps", "5", "--codebook_size", "16", "--output_dir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "| baseline |" in printed and "| all |" in printed
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"baseline", "all"}
    assert all(0 < run["usage"] <= 1 and run["mse"] > 0 for run in metrics.values())


def test_demo_rejects_bad_steps(tmp_path):
    with pytest.raises(SystemExit, match="--steps must be >= 1"):
        main(["demo", "--steps", "0", "--output_dir", str(tmp_path)])
