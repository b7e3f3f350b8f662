#!/usr/bin/env python
"""Judge a saved prior pipeline again without training (other guidance, temperature or steps), with train-prior's
flags:

    python scripts/evaluate_prior.py --config configs/maskgit_fashion_mnist.yaml \
        --tokenizer_name_or_path outputs/vqgan --pretrained_model_name_or_path outputs/maskgit \
        --eval_classifier_name_or_path outputs/pixel_vit --guidance_scale 1.5 --output_dir outputs/maskgit_eval_g1.5

writes `<output_dir>/metrics.json` and prints the metrics.
"""

import sys

from hf_vq.errors import run_reporting_user_errors
from hf_vq.training.prior_command import format_generation_metrics, parse_prior_args
from hf_vq.training.prior_evaluation import evaluate_saved_pipeline


def main(argv=None) -> int:
    def run():
        args = parse_prior_args(argv)
        if not args.pretrained_model_name_or_path:
            raise SystemExit("evaluate_prior.py: pass --pretrained_model_name_or_path (the saved pipeline folder)")
        metrics = evaluate_saved_pipeline(args)
        print(format_generation_metrics(metrics))
        return metrics

    return run_reporting_user_errors("evaluate_prior", run)


if __name__ == "__main__":
    sys.exit(main())
