"""Run under `torchrun --nproc_per_node 2`: k-means initialisation of a quantizer from two ranks' different data,
at a codebook smaller than the pooled sample (k-means++ seeding runs) and one larger (codes are filled in); each
rank saves its codebook."""

import os
import sys

import torch
import torch.distributed as dist

from hf_vq import VectorQuantizer


def main(output_dir: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    data = torch.Generator().manual_seed(100 + rank)  # different data on every rank
    vectors = torch.randn(300, 4, generator=data) + 3 * rank
    codebooks = {}
    for codebook_size in (64, 1024):  # pooled sample: 2 x 300 vectors
        torch.manual_seed(rank)  # different global RNG on every rank: sync must not rely on equal draws
        quantizer = VectorQuantizer(4, codebook_size, kmeans_init=True, channel_dim=-1).train()
        quantizer(vectors)
        codebooks[codebook_size] = quantizer.codebook
    torch.save(codebooks, os.path.join(output_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
