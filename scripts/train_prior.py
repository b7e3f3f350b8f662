#!/usr/bin/env python
"""Train a MaskGIT token prior on a tokenizer's token grids: the same code as `hf-vq train-prior`.

    python scripts/train_prior.py --config configs/maskgit_fashion_mnist.yaml --tokenizer_name_or_path outputs/vqgan \
        --eval_classifier_name_or_path outputs/pixel_vit
    accelerate launch scripts/train_prior.py --config configs/maskgit_fashion_mnist.yaml \
        --tokenizer_name_or_path outputs/vqgan --mixed_precision bf16
    torchrun --nproc_per_node 2 scripts/train_prior.py --config configs/maskgit_tiny.yaml ...
"""

import sys

from hf_vq.training.prior_command import main

if __name__ == "__main__":
    sys.exit(main())
