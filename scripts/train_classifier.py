#!/usr/bin/env python
"""Train a ViT classifier on a tokenizer's token grids: the same code as `hf-vq train-classifier`.

    python scripts/train_classifier.py --config configs/token_vit_fashion_mnist.yaml \
        --tokenizer_name_or_path outputs/vqgan
    python scripts/train_classifier.py --config configs/token_vit_fashion_mnist.yaml \
        --tokenizer_name_or_path outputs/vqgan --model_type pixel_vit --output_dir outputs/pixel_vit
    accelerate launch scripts/train_classifier.py --config configs/token_vit_fashion_mnist.yaml --mixed_precision bf16
"""

import sys

from hf_vq.training.classifier_command import main

if __name__ == "__main__":
    sys.exit(main())
