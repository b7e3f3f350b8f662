"""The rotation trick (Fifty et al., 2024, "Restructuring Vector Quantization with the Rotation Trick").

Instead of copying the gradient from the code q to the encoder output e (straight-through), the forward pass
writes q as a fixed rotation and rescaling of e,

    q = sg(lambda * R) e,     lambda = ||q|| / ||e||,
    R = I - 2 r r^T + 2 q^ e^T,   e^ = e / ||e||,  q^ = q / ||q||,  r = (e^ + q^) / ||e^ + q^||,

(R is the rotation in the plane of e and q that maps e^ onto q^, built from two Householder reflections), and
treats lambda * R as a constant in the backward pass. The encoder then receives lambda * R^T times the gradient at
q: its direction is rotated by the angle between e and q, and its size scaled by their norm ratio, so vectors in
the same Voronoi cell get different gradients depending on where they sit. R e is computed without forming R.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-8


def rotation_trick(vectors: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Output with the value of `codes` (N, D) whose gradient reaches `vectors` (N, D) through sg(lambda R).

    The codes get no gradient from this path (as in the paper); the codebook is trained by the codebook loss.
    """
    e = vectors
    e_norm = e.detach().norm(dim=-1, keepdim=True).clamp_min(EPS)
    q_norm = codes.detach().norm(dim=-1, keepdim=True)
    e_hat = e.detach() / e_norm
    q_hat = codes.detach() / q_norm.clamp_min(EPS)
    r = F.normalize(e_hat + q_hat, dim=-1, eps=EPS)
    # R e = e - 2 r (r . e) + 2 q^ (e^ . e), with r, q^, e^ constants; then scale by lambda.
    rotated = e - 2.0 * r * (r * e).sum(dim=-1, keepdim=True) + 2.0 * q_hat * (e_hat * e).sum(dim=-1, keepdim=True)
    out = (q_norm / e_norm) * rotated
    # Rounding makes lambda R e differ from q in the last bits; the value is set to q exactly, the gradient kept.
    return out + (codes.detach() - out).detach()
