#!/usr/bin/env python
"""Judge a saved prior pipeline again without training (other guidance, temperature or steps), with train-prior's
flags:

    python scripts/evaluate_prior.py --config configs/maskgit_fashion_mnist.yaml \
        --tokenizer_name_or_path outputs/vqgan --pretrained_model_name_or_path outputs/maskgit \
        --eval_classifier_name_or_path outputs/pixel_vit --guidance_scale 1.5 --output_dir outputs/maskgit_eval_g1.5

writes `<output_dir>/metrics.json` and `samples.png` (one row per class) and prints the metrics. With
`--sweep_<flag> VALUES...` (guidance_scale, temperature, top_k, top_p, num_inference_steps) it judges every
combination of the values instead, loading the pipeline and data once, prints one table (accuracy, FID and diversity
ratios, seconds per image) and writes every setting's metrics to `<output_dir>/sweep.json`:

    python scripts/evaluate_prior.py --config configs/autoregressive_fashion_mnist.yaml ... \
        --sweep_guidance_scale 1 1.5 2 --sweep_temperature 0.9 1.0 1.1 --output_dir outputs/ar_sweep
"""

import argparse
import sys
from pathlib import Path

from hf_vq.errors import run_reporting_user_errors
from hf_vq.training.args import PRIOR_COMMAND, build_parser
from hf_vq.training.prior_command import format_generation_metrics, resolve_prior_args
from hf_vq.training.prior_evaluation import (
    SWEEPABLE_FLAGS,
    evaluate_saved_pipeline,
    format_sweep_table,
    sweep_configs,
    sweep_saved_pipeline,
)

SWEEP_FILE = "sweep.json"


def sweep_parser() -> argparse.ArgumentParser:
    """train-prior's flags plus one `--sweep_<flag>` list per sampling flag."""
    parser = build_parser(PRIOR_COMMAND)
    parser.prog = "evaluate_prior.py"
    group = parser.add_argument_group("sweep (judge every combination of these values)")
    for name in SWEEPABLE_FLAGS:
        kind = float if name in ("guidance_scale", "temperature", "top_p") else int
        group.add_argument(f"--sweep_{name}", nargs="+", type=kind, default=None, metavar=name.upper())
    return parser


def main(argv=None) -> int:
    def run():
        given = vars(sweep_parser().parse_args(argv))
        settings = {name: given.pop(f"sweep_{name}") for name in SWEEPABLE_FLAGS}
        settings = {name: values for name, values in settings.items() if values is not None}
        if not given.get("pretrained_model_name_or_path"):
            raise SystemExit("evaluate_prior.py: pass --pretrained_model_name_or_path (the saved pipeline folder)")
        if not settings:
            metrics = evaluate_saved_pipeline(resolve_prior_args(given))
            print(format_generation_metrics(metrics))
            return metrics
        configs = sweep_configs(given, settings)
        rows = sweep_saved_pipeline(configs, Path(configs[0].output_dir) / SWEEP_FILE)
        print(format_sweep_table(rows))
        return rows

    return run_reporting_user_errors("evaluate_prior", run)


if __name__ == "__main__":
    sys.exit(main())
