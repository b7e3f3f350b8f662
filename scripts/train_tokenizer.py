#!/usr/bin/env python
"""Train a VQGAN image tokenizer: the same code as `hf-vq train-tokenizer`.

python scripts/train_tokenizer.py --config configs/vqgan_fashion_mnist.yaml --max_train_steps 500
torchrun --nproc_per_node 2 scripts/train_tokenizer.py --config configs/vqgan_tiny.yaml --train_data_dir imgs
accelerate launch --multi_gpu scripts/train_tokenizer.py --config configs/vqgan_imagenet256.yaml
"""

import sys

from hf_vq.training.tokenizer_command import main

if __name__ == "__main__":
    sys.exit(main())
