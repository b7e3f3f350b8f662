"""Run under `torchrun --nproc_per_node 2`: a few training steps of a tiny encoder + quantizer with
every codebook mechanism on, each rank seeing different data, then save this rank's state.

DDP runs with broadcast_buffers=False so that equal buffers across ranks come from the quantizer's
own collectives, not from DDP copying rank 0's buffers at every forward.
"""

import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from hf_vq import FiniteScalarQuantizer, GroupedVectorQuantizer, ResidualVectorQuantizer, VectorQuantizer

OPTIONS = dict(affine="running", sync_nu=0.5, alternating=True, kmeans_init=True, replace_freq=1)
# The successor methods: SimVQ with the authors' SGD alternating step and the rotation trick; EMA with restarts.
SIMVQ_SGD_ROTATION = dict(
    affine="linear",
    alternating="sgd",
    alternating_lr=20.0,
    gradient_estimator="rotation",
    sync_nu=0.5,
    kmeans_init=True,
    replace_freq=1,
)
EMA = dict(codebook_update="ema", ema_decay=0.9, kmeans_init=True, replace_freq=1)
QUANTIZERS = {
    "vector": lambda: VectorQuantizer(8, 32, **OPTIONS),
    "grouped": lambda: GroupedVectorQuantizer(8, 16, num_groups=2, **OPTIONS),
    "residual": lambda: ResidualVectorQuantizer(8, 16, num_quantizers=2, **OPTIONS),
    "vector_simvq_sgd_rotation": lambda: VectorQuantizer(8, 32, **SIMVQ_SGD_ROTATION),
    "residual_simvq_sgd_rotation": lambda: ResidualVectorQuantizer(8, 16, num_quantizers=2, **SIMVQ_SGD_ROTATION),
    "vector_ema": lambda: VectorQuantizer(8, 32, **EMA),
    "grouped_ema": lambda: GroupedVectorQuantizer(8, 16, num_groups=2, **EMA),
    "grouped_sgd_learned": lambda: GroupedVectorQuantizer(
        8, 16, num_groups=2, affine="learned", alternating="sgd", kmeans_init=True, replace_freq=1
    ),
    "fsq": lambda: FiniteScalarQuantizer([3, 3, 3, 3, 2, 2, 2, 2]),
}


class TinyModel(nn.Module):
    def __init__(self, quantizer: nn.Module):
        super().__init__()
        self.encoder = nn.Conv2d(3, 8, 3, padding=1)
        self.quantizer = quantizer
        self.decoder = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, images):
        out = self.quantizer(self.encoder(images))
        return nn.functional.mse_loss(self.decoder(out.quantized), images) + out.loss


def main(kind: str, output_dir: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)  # identical initial weights on every rank
    model = nn.parallel.DistributedDataParallel(TinyModel(QUANTIZERS[kind]()), broadcast_buffers=False)
    torch.save(model.module.quantizer.state_dict(), os.path.join(output_dir, f"initial_rank{rank}.pt"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.Generator().manual_seed(100 + rank)  # different data on every rank
    for _ in range(4):
        images = torch.randn(4, 3, 6, 6, generator=data) * (1 + rank)
        loss = model(images)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # Parameters and buffers, plus the encoder: a quantizer whose gradient or state diverged would also show there.
    state = {
        **model.module.quantizer.state_dict(),
        **{f"encoder.{k}": v for k, v in model.module.encoder.state_dict().items()},
    }
    torch.save(state, os.path.join(output_dir, f"rank{rank}.pt"))
    # Both ranks reach this point before either tears gloo down; tearing down while the other rank
    # still has the connection open aborts the process ("terminate called without an active exception").
    dist.barrier()
    del model
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
