#!/usr/bin/env python
"""Reproduce the ablation of Huh et al. (ICML 2023): baseline STE, +affine, +sync, +alternating, +replace
and all four, on VQ-bottleneck classifiers (AlexNet, ResNet-18, ViT) and the demo's VQ autoencoder.

Writes results/*.json (one per run, plus a summary), results/results_<dataset>.md (the tables) and
results/results_<dataset>.png (metric over steps per variant). See docs/results.md.

Examples:
    python scripts/reproduce_paper.py --task all --quick                      # smoke run, < 1 minute
    python scripts/reproduce_paper.py --task all --dataset fashion_mnist --steps 1000 --seeds 0 1 2 --workers 2
    python scripts/reproduce_paper.py --task classification --arch resnet18 --dataset cifar10 \
        --data_dir /data/cifar-10-batches-py --device cuda
"""

import sys
from pathlib import Path

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hf_vq.experiments.reproduce import main  # noqa: E402

if __name__ == "__main__":
    main()
