#!/usr/bin/env python
"""Compare vector-quantization methods on one backbone, one budget and one set of seeds: plain STE, Huh et al. (each
method alone and all four), SimVQ, the rotation trick, EMA with restarts, LlamaGen's l2-normalised low-dimensional
codes, FSQ and combinations, at several codebook sizes, with a sweep of the synchronized update's nu.

A named plan (`--plan cpu`, `--plan full`: hf_vq/experiments/study_plan.py) runs several such grids in one command.
Backbones: the paper reproduction's (alexnet, resnet18, vit, autoencoder) and `vqgan`, the `make demo` tokenizer.
Writes one JSON per run, results/compare/compare_<dataset>_steps<N>.md (the tables) and beside it one PNG per
(backbone, codebook size), compare_<dataset>_steps<N>_<backbone>_K<size>.png. See docs/results.md.

Examples:
    python scripts/compare_quantizers.py --quick --output_dir /tmp/vq_compare           # smoke run, seconds
    python scripts/compare_quantizers.py --arch autoencoder --codebook_sizes 512 4096 --steps 400 --workers 2
    python scripts/compare_quantizers.py --arch vqgan --codebook_sizes 512 --steps 1000 --workers 2 \\
        --output_dir results/compare
    python scripts/compare_quantizers.py --plan cpu --workers 2 --resume          # every table of docs/results.md
    python scripts/compare_quantizers.py --plan full --workers 16 --output_dir results/compare_full   # the whole grid
"""

import sys
from pathlib import Path

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hf_vq.experiments.compare import main  # noqa: E402

if __name__ == "__main__":
    main()
