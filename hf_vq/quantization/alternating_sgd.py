"""The authors' form of alternating optimisation (Huh et al. 2023, vqtorch's `inplace_optimizer`).

Inside the forward pass, after the nearest-code search and before the codes are looked up, the code vectors theta
take one plain SGD step on the codebook loss with the assignments fixed:

    L_cb(theta) = mean over the N x D entries of (c_{k(i)}(theta) - sg(z_i))^2
    theta <- theta - lr * dL_cb / dtheta

theta is the raw codebook (as vqtorch's inplace optimizer, which holds `codebook.parameters()` only), the gradient
flowing through the affine transform when there is one; the affine scale and shift are left to the main optimizer (a
step of lr 50 on these shared parameters diverged in the first study run). For SimVQ, whose raw codes are frozen,
theta is its matrix W. For a raw codebook this is c_k <- c_k - lr * 2 / (N D) * sum_{i: k(i) = k} (c_k - z_i): the
step size grows with the cluster's share of the batch, unlike the mean step of alternating.py, which moves every
selected code the same fraction of the way to its cluster mean. vqtorch uses SGD(lr=50, momentum=0.9); this step has
no momentum, so that it needs no optimizer state. With several processes the gradient is that of the loss over all
processes' vectors (local gradients of the summed loss are all-reduced and divided by the global element count), so
every rank takes the same step.
"""

from __future__ import annotations

import torch
from torch import nn

from .distributed import all_reduce_sum


def sgd_codebook_step(
    codebook: nn.Module, vectors: torch.Tensor, indices: torch.Tensor, lr: float, normalize: bool = False
) -> None:
    """One SGD step of `codebook`'s trainable parameters on the codebook loss of `vectors` (N, D) and `indices`."""
    parameters = (
        [codebook.weight]
        if codebook.weight.requires_grad
        else [p for p in codebook.affine.parameters() if p.requires_grad]
    )
    if not parameters:
        return
    with torch.enable_grad():
        codes = codebook.effective().float()
        if normalize:
            codes = torch.nn.functional.normalize(codes, dim=-1)
        squared_error = (codes[indices] - vectors.detach().float()).square().sum()
        gradients = torch.autograd.grad(squared_error, parameters, allow_unused=True)
    num_elements = all_reduce_sum(torch.tensor(float(vectors.numel()), device=vectors.device))
    with torch.no_grad():
        for parameter, gradient in zip(parameters, gradients):
            if gradient is not None:
                parameter.sub_(all_reduce_sum(gradient) / num_elements, alpha=lr)
