#!/usr/bin/env python
"""Tokenize an image dataset into a token dataset: the same code as `hf-vq encode`.

    python scripts/encode.py --tokenizer_name_or_path outputs/vqgan --dataset_name fashion_mnist \
        --output_dir outputs/tokens
    torchrun --nproc_per_node 2 scripts/encode.py --tokenizer_name_or_path ... --output_dir ...
    accelerate launch --num_processes 2 scripts/encode.py ...
"""

import sys

from hf_vq.training.encode_command import main

if __name__ == "__main__":
    sys.exit(main())
