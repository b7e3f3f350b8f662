"""Losses of VQGAN training beyond what `VQGANModel.forward` returns: pixel reconstruction, hinge GAN losses,
taming's adaptive generator weight, and LeCam regularisation of the discriminator.

The perceptual (LPIPS) network lives in `lpips.py`; the discriminator in `discriminator.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# One pixel loss for the model and the training loops: the model layer's (it also takes the config's "mse" for "l2").
from ..models.vqgan.modeling_vqgan import reconstruction_loss  # noqa: F401 (re-exported for the training loops)

# The names the training flag accepts.
RECONSTRUCTION_LOSSES = ("l1", "l2")


def hinge_discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator on raw logits (no sigmoid: diffusers' script applies one, which is wrong
    for a hinge loss): 0.5 * (mean(relu(1 - D(x))) + mean(relu(1 + D(G(z)))))."""
    return 0.5 * (F.relu(1.0 - logits_real.float()).mean() + F.relu(1.0 + logits_fake.float()).mean())


def hinge_generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator side of the hinge GAN: -mean(D(G(z)))."""
    return -logits_fake.float().mean()


def adaptive_generator_weight(
    nll_loss: torch.Tensor,
    generator_loss: torch.Tensor,
    last_layer: torch.Tensor,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> torch.Tensor:
    """taming-transformers' adaptive weight of the adversarial loss: ||grad nll|| / (||grad g|| + eps) at the
    decoder's last layer, clamped to [0, max_weight] and detached.

    It balances the two gradients where they meet the image, so the GAN neither drowns the reconstruction
    signal nor vanishes. Both losses must still have their graphs (the caller backpropagates them afterwards).
    """
    nll_grads = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    generator_grads = torch.autograd.grad(generator_loss, last_layer, retain_graph=True)[0]
    weight = torch.norm(nll_grads.float()) / (torch.norm(generator_grads.float()) + eps)
    return torch.clamp(weight, 0.0, max_weight).detach()


class LeCamEMA:
    """Exponential moving averages of the discriminator's mean logits on real and fake images, the anchors of the
    LeCam regulariser (Tseng et al., CVPR 2021). Has `state_dict` / `load_state_dict` so that Accelerate's
    checkpoints carry it and a resumed run continues with the same anchors.

    Example:
        >>> import torch
        >>> ema = LeCamEMA(decay=0.9)
        >>> ema.update(torch.ones(4), -torch.ones(4))
        >>> loss = ema.regularization(torch.ones(4), -torch.ones(4))
        >>> float(loss)
        0.0
    """

    def __init__(self, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"LeCam EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.real = 0.0
        self.fake = 0.0
        self.initialized = False

    def update(self, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> None:
        real, fake = float(logits_real.detach().float().mean()), float(logits_fake.detach().float().mean())
        if not self.initialized:
            # Start the anchors at the first batch's values instead of 0, which would bias the early penalty.
            self.real, self.fake, self.initialized = real, fake, True
            return
        self.real = self.decay * self.real + (1.0 - self.decay) * real
        self.fake = self.decay * self.fake + (1.0 - self.decay) * fake

    def regularization(self, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
        """mean(relu(D(x) - ema_fake)^2) + mean(relu(ema_real - D(G(z)))^2)."""
        return (
            F.relu(logits_real.float() - self.fake).pow(2).mean()
            + F.relu(self.real - logits_fake.float()).pow(2).mean()
        )

    def state_dict(self) -> dict[str, float | bool]:
        return {"decay": self.decay, "real": self.real, "fake": self.fake, "initialized": self.initialized}

    def load_state_dict(self, state: dict[str, float | bool]) -> None:
        self.decay, self.real, self.fake = float(state["decay"]), float(state["real"]), float(state["fake"])
        self.initialized = bool(state["initialized"])


def adopt_weight(weight: float, global_step: int, start_step: int) -> float:
    """`weight` from `start_step` on, 0 before it (taming's delayed start of the adversarial loss)."""
    return weight if global_step >= start_step else 0.0
