"""The vector quantizer of Huh et al. (ICML 2023), and the base shared by its grouped and residual forms.

Each idea of the paper lives in its own module and is called from `VectorQuantizer._match`:

- affine re-parameterised codes      -> affine.py (through codebook.Codebook)
- alternating optimisation           -> alternating.py (mean step), alternating_sgd.py (the authors' SGD step)
- synchronized update                -> synchronized_update.py
- beta commitment loss               -> commitment.py
- k-means++ init, dead-code reset    -> kmeans.py, replacement.py

and so does each successor method that is an option here:

- SimVQ (one learned linear map of a frozen codebook, affine="linear")  -> simvq.py
- the rotation trick (gradient_estimator="rotation")                   -> rotation_trick.py
- EMA codebook updates (codebook_update="ema")                          -> ema.py
- finite scalar quantization (its own quantizer type)                   -> fsq.py
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .alternating import alternating_codebook_step
from .alternating_sgd import sgd_codebook_step
from .codebook import Codebook
from .commitment import beta_commitment_loss
from .config import QuantizerConfig, alternating_mode
from .distributed import all_gather_cat, all_reduce_min_int, all_reduce_sum, broadcast_, rank
from .kmeans import kmeans_plus_plus_init
from .metrics import code_counts as count_codes
from .metrics import perplexity_and_usage
from .registry import register_quantizer
from .replacement import replace_dead_codes, update_dead_code_counters
from .rotation_trick import rotation_trick
from .search import nearest_code_indices
from .synchronized_update import synchronized_straight_through


def straight_through_output(
    vectors: torch.Tensor, codes: torch.Tensor, sync_nu: float, gradient_estimator: str
) -> torch.Tensor:
    """Value `codes`; gradient to `vectors` by straight-through or the rotation trick; nu x the task gradient to the
    codes."""
    # The rotation trick's output has the value of `codes`; the synchronized update then passes its gradient on
    # unchanged (to the rotation, instead of straight to the vectors) and adds nu x the gradient to the codes.
    carrier = vectors if gradient_estimator == "ste" else rotation_trick(vectors, codes)
    return synchronized_straight_through(carrier, codes, sync_nu)


class NonFiniteInputError(ValueError):
    """The quantizer's input holds NaN or infinite values: the network feeding it diverged, or the data is corrupt.
    A type of its own so that a training loop can tell divergence from a misuse of the quantizer."""


@dataclass
class VectorQuantizerOutput:
    """What every quantizer forward returns.

    quantized: the input's shape and layout; value = effective codes, gradient = straight-through plus
        the synchronized codebook update. The loss is never folded into it.
    indices: the input's shape without the channel axis (a trailing axis per group / residual stage).
    loss: (1 - beta) * commitment_loss + beta * codebook_loss.
    perplexity, usage: exp(entropy) of the code distribution and the fraction of codes used in the
        batch (over all processes in training).
    """

    quantized: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    commitment_loss: torch.Tensor
    codebook_loss: torch.Tensor
    perplexity: torch.Tensor
    usage: torch.Tensor


@dataclass
class _Match:
    """Flat (N, D) result of matching vectors to codes, before the straight-through output."""

    inputs: torch.Tensor
    codes: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    commitment_loss: torch.Tensor
    codebook_loss: torch.Tensor
    perplexity: torch.Tensor
    usage: torch.Tensor

    @classmethod
    def average(cls, matches: list["_Match"], inputs: torch.Tensor, codes: torch.Tensor) -> "_Match":
        """Combine the stages of a grouped or residual quantizer: indices stacked, scalars averaged."""

        def mean(name: str) -> torch.Tensor:
            return torch.stack([getattr(m, name) for m in matches]).mean()

        return cls(
            inputs=inputs,
            codes=codes,
            indices=torch.stack([m.indices for m in matches], dim=-1),
            loss=mean("loss"),
            commitment_loss=mean("commitment_loss"),
            codebook_loss=mean("codebook_loss"),
            perplexity=mean("perplexity"),
            usage=mean("usage"),
        )


def check_finite(z: torch.Tensor, owner: str = "quantizer") -> None:
    """Raise `NonFiniteInputError` if `z` holds a NaN or an infinite value.

    A host-device sync (the answer decides a Python branch): the quantizers call it in training mode only, where
    the training loop turns the error into a divergence report; call it yourself to check inputs at inference.
    """
    # One reduction instead of an elementwise isfinite pass plus a temporary as large as the input
    # (about 10x cheaper on CPU): the min and max are NaN or infinite iff some element is.
    low, high = torch.aminmax(z.detach())
    if not bool(torch.isfinite(low) & torch.isfinite(high)):
        bad = int((~torch.isfinite(z)).sum())
        raise NonFiniteInputError(
            f"{owner} input contains {bad} NaN or Inf values: the encoder diverged or the "
            "data is corrupt; lower the learning rate or check the inputs"
        )


class QuantizerBase(nn.Module):
    """Input checks, layout handling, float32 under autocast, and the straight-through output.

    Subclasses validate their options through `QuantizerConfig`, build themselves from one in `from_config`, and
    initialise every tensor they own in `reset_parameters` (which models call for tensors a checkpoint lacks).
    """

    def __init__(self, embed_dim: int, beta: float, sync_nu: float, channel_dim: int, gradient_estimator: str = "ste"):
        super().__init__()
        self.embed_dim = embed_dim
        self.beta = beta
        self.sync_nu = sync_nu
        self.channel_dim = channel_dim
        self.gradient_estimator = gradient_estimator

    @classmethod
    def from_config(cls, config: QuantizerConfig) -> "QuantizerBase":
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """Initialise the tensors this module owns itself (not those of its submodules, which have their own)."""

    def forward(self, z: torch.Tensor) -> VectorQuantizerOutput:
        self._check_input(z)
        channels_last = z.movedim(self.channel_dim, -1)
        # Distances, losses and codebook updates run in float32 even under autocast: bf16 distances pick
        # wrong codes and bf16 codebook steps underflow.
        with torch.autocast(device_type=z.device.type, enabled=False):
            match = self._match(channels_last.reshape(-1, self.embed_dim).float())
            quantized = straight_through_output(match.inputs, match.codes, self.sync_nu, self.gradient_estimator)
        quantized = quantized.reshape(channels_last.shape).movedim(-1, self.channel_dim).to(z.dtype)
        grid_shape = channels_last.shape[:-1]
        return VectorQuantizerOutput(
            quantized=quantized,
            indices=match.indices.reshape(*grid_shape, *match.indices.shape[1:]),
            loss=match.loss,
            commitment_loss=match.commitment_loss,
            codebook_loss=match.codebook_loss,
            perplexity=match.perplexity,
            usage=match.usage,
        )

    def get_codebook_entry(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors for `indices`, in the same layout as `forward(...).quantized`."""
        if indices.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"indices must be an integer tensor, got {indices.dtype}")
        grid_shape = indices.shape[: indices.ndim - self._index_depth]
        flat = indices.reshape(-1, *indices.shape[len(grid_shape) :]).long()
        vectors = self._lookup(flat).reshape(*grid_shape, self.embed_dim)
        if len(grid_shape) == 0:
            return vectors
        return vectors.movedim(-1, self.channel_dim)

    @property
    def _index_depth(self) -> int:
        """Number of trailing axes of `indices` that belong to one vector (0, or 1 for groups/stages)."""
        return 1

    def _check_input(self, z: torch.Tensor) -> None:
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor, got {type(z).__name__}")
        if not z.is_floating_point():
            raise TypeError(
                f"{type(self).__name__} expects a floating-point tensor, got {z.dtype}; convert it with .float()"
            )
        if z.ndim < 2:
            raise ValueError(
                f"{type(self).__name__} expects at least 2 dimensions (a batch of vectors), got shape {tuple(z.shape)}"
            )
        if z.shape[self.channel_dim] != self.embed_dim:
            raise ValueError(
                f"{type(self).__name__} was built for embed_dim={self.embed_dim} channels on axis "
                f"channel_dim={self.channel_dim}, but the input has shape {tuple(z.shape)} "
                f"({z.shape[self.channel_dim]} channels there); project the input to {self.embed_dim} "
                "channels or pass the right channel_dim"
            )
        if z.numel() == 0:
            raise ValueError(f"{type(self).__name__} got an empty input of shape {tuple(z.shape)}")
        # Only in training: the check needs the data on the host, which would stall inference on an accelerator
        # and stop torch.export / torch.compile(fullgraph=True) of an eval-mode model.
        if self.training:
            check_finite(z, type(self).__name__)

    def _check_indices(self, indices: torch.Tensor, codebook_size: int) -> None:
        if indices.numel() == 0:
            return
        if torch.compiler.is_compiling():
            # Traced (torch.compile, torch.export): an assert op inside the graph, a RuntimeError when it fails, with
            # no host sync and no graph break (reading min/max with .item() would be both).
            in_range = ((indices >= 0) & (indices < codebook_size)).all()
            torch._assert_async(in_range, f"code indices must lie in [0, {codebook_size - 1}]")
            return
        low, high = indices.min().item(), indices.max().item()

        def message() -> str:
            return (
                f"code indices must lie in [0, {codebook_size - 1}] for a codebook of {codebook_size} codes; "
                f"got values from {low} to {high}"
            )

        torch._check_with(ValueError, low >= 0, message)
        torch._check_with(ValueError, high < codebook_size, message)

    def _match(self, vectors: torch.Tensor) -> _Match:
        raise NotImplementedError

    def _lookup(self, indices: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@register_quantizer("vector")
class VectorQuantizer(QuantizerBase):
    """Vector quantizer with the improvements of Huh et al. (ICML 2023).

    Args:
        embed_dim: size of each vector (channels of the input on `channel_dim`).
        codebook_size: number of codes K.
        beta: weight of the codebook part of the loss, in [0, 1] (commitment part: 1 - beta).
        sync_nu: synchronized-update strength nu (0: plain straight-through).
        affine: None, "learned" or "running" (affine re-parameterised codes, Huh et al.), or "linear" (SimVQ: the raw
            codes frozen, the codebook C @ W^T with one learned D x D matrix W).
        affine_lr: learning-rate multiplier of the learned affine scale and shift.
        affine_groups: number of groups of consecutive codes with their own scale and shift.
        affine_momentum: momentum of the running statistics of the encoder output.
        gradient_estimator: "ste" (straight-through) or "rotation" (the rotation trick of Fifty et al. 2024).
        codebook_update: "gradient" (the optimizer trains the codes) or "ema" (moving averages of the cluster
            means, VQ-VAE-2 / SoundStream; combine with replace_freq for dead-code restarts).
        ema_decay: decay of the EMA statistics.
        alternating: False, "mean" (or True: move the selected codes `alternating_step_size` of the way to their
            cluster means before the lookup) or "sgd" (the authors' form: one SGD step of the codebook parameters
            on the codebook loss, learning rate `alternating_lr`).
        alternating_step_size: fraction of the way to move for "mean" (1 = a full k-means step).
        alternating_lr: learning rate of the "sgd" step (vqtorch's example uses 50 on the mean squared error).
        kmeans_init: initialise the codebook with k-means++ on the first training batch.
        kmeans_iterations, kmeans_max_samples: Lloyd iterations and vectors per process used for it.
        replace_freq: reset codes unused for this many training steps (0: never).
        distance: "euclidean" or "cosine" (vectors and codes l2-normalised).
        channel_dim: axis of the input holding the `embed_dim` channels (1 for (B, C, H, W)).
        max_block_elements: most distances the nearest-code search holds at once (None: a per-device
            default, see search.default_max_block_elements).
        search_backend: nearest-code search, "auto" (the fused Triton kernel on CUDA, FAISS on the CPU where it
            is faster, else blocked PyTorch), or "blocked", "faiss", "triton" to force one (see search.py).

    Example:
        >>> import torch
        >>> from hf_vq import VectorQuantizer
        >>> vq = VectorQuantizer(embed_dim=8, codebook_size=32, sync_nu=0.2, affine="learned", replace_freq=10)
        >>> out = vq(torch.randn(2, 8, 4, 4))
        >>> out.quantized.shape, out.indices.shape
        (torch.Size([2, 8, 4, 4]), torch.Size([2, 4, 4]))
        >>> torch.equal(vq.get_codebook_entry(out.indices), out.quantized)
        True
    """

    def __init__(
        self,
        embed_dim: int,
        codebook_size: int,
        beta: float = 0.95,
        sync_nu: float = 0.0,
        affine: str | None = None,
        affine_lr: float = 1.0,
        affine_groups: int = 1,
        affine_momentum: float = 0.1,
        alternating: bool | str = False,
        alternating_step_size: float = 0.5,
        alternating_lr: float = 50.0,
        gradient_estimator: str = "ste",
        codebook_update: str = "gradient",
        ema_decay: float = 0.99,
        kmeans_init: bool = False,
        kmeans_iterations: int = 10,
        kmeans_max_samples: int = 16384,
        replace_freq: int = 0,
        distance: str = "euclidean",
        channel_dim: int = 1,
        max_block_elements: int | None = None,
        search_backend: str = "auto",
    ):
        config = QuantizerConfig(
            quantizer_type="vector",
            embed_dim=embed_dim,
            codebook_size=codebook_size,
            beta=beta,
            sync_nu=sync_nu,
            affine=affine,
            affine_lr=affine_lr,
            affine_groups=affine_groups,
            affine_momentum=affine_momentum,
            alternating=alternating,
            alternating_step_size=alternating_step_size,
            alternating_lr=alternating_lr,
            gradient_estimator=gradient_estimator,
            codebook_update=codebook_update,
            ema_decay=ema_decay,
            kmeans_init=kmeans_init,
            kmeans_iterations=kmeans_iterations,
            kmeans_max_samples=kmeans_max_samples,
            replace_freq=replace_freq,
            distance=distance,
            channel_dim=channel_dim,
            max_block_elements=max_block_elements,
            search_backend=search_backend,
        )  # validates every option, each error naming the fix
        super().__init__(embed_dim, beta, sync_nu, channel_dim, gradient_estimator)
        self.quantizer_config = config  # every option, validated
        self.alternating_mode = alternating_mode(alternating)
        self.codebook_size = codebook_size
        self.distance = distance
        self.alternating = alternating
        self.alternating_step_size = alternating_step_size
        self.alternating_lr = alternating_lr
        self.codebook_update = codebook_update
        self.kmeans_init = kmeans_init
        self.kmeans_iterations = kmeans_iterations
        self.kmeans_max_samples = kmeans_max_samples
        self.replace_freq = replace_freq
        self.max_block_elements = max_block_elements
        self.search_backend = search_backend
        self.embedding = Codebook(
            codebook_size, embed_dim, affine, affine_groups, affine_lr, affine_momentum, codebook_update, ema_decay
        )
        # All state is created here so that state dicts round-trip (no lazily created buffers).
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.register_buffer("steps_since_used", torch.zeros(codebook_size, dtype=torch.long))

    @classmethod
    def from_config(cls, config: QuantizerConfig) -> "VectorQuantizer":
        return cls(**vector_options(config))

    @property
    def _index_depth(self) -> int:
        return 0

    @property
    def codebook(self) -> torch.Tensor:
        """The effective (post-affine, l2-normalised for cosine) codebook, (codebook_size, embed_dim)."""
        # A copy: for plain codes the effective codebook *is* the weight, which callers must not alter.
        with torch.no_grad():
            return self._effective_codebook().clone()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """`initialized` False makes the first training batch run k-means++; no code has been unused yet. The
        codebook (`self.embedding`) initialises itself."""
        # nn.init functions: a model loading a checkpoint skips through them the tensors the checkpoint held.
        nn.init.constant_(self.initialized, not self.kmeans_init)
        nn.init.zeros_(self.steps_since_used)

    @torch.no_grad()
    def _search_codebook(self) -> torch.Tensor:
        return self._effective_codebook()

    def _effective_codebook(self) -> torch.Tensor:
        codes = self.embedding.effective().float()  # float32 even when the model was cast to bf16
        return F.normalize(codes, dim=-1) if self.distance == "cosine" else codes

    def _match(self, vectors: torch.Tensor) -> _Match:
        if self.distance == "cosine":
            vectors = F.normalize(vectors, dim=-1)
        if self.training:
            self._maintain_codebook(vectors.detach())
        indices = nearest_code_indices(
            vectors.detach(), self._search_codebook(), self.distance, self.max_block_elements, self.search_backend
        )
        if self.training and self.alternating_mode == "mean":
            alternating_codebook_step(
                self.embedding,
                vectors.detach(),
                indices,
                self.alternating_step_size,
                normalize=self.distance == "cosine",
            )
        elif self.training and self.alternating_mode == "sgd":
            sgd_codebook_step(
                self.embedding, vectors.detach(), indices, self.alternating_lr, normalize=self.distance == "cosine"
            )
        code_counts = count_codes(indices, self.codebook_size)
        if self.training:
            code_counts = all_reduce_sum(code_counts)
            if self.replace_freq > 0:
                update_dead_code_counters(self.steps_since_used, code_counts)
        # index_select rather than F.embedding: the same rows, but its backward is one index_add instead of
        # embedding's sorting dense backward (fwd+bwd 0.49 ms against 1.19 ms at N = 16384, D = 64, K = 1024, CPU).
        codes = self._effective_codebook().index_select(0, indices)
        if self.training and self.codebook_update == "ema":
            # After the lookup, as in VQ-VAE-2: this step's codes are the ones its assignments were made with.
            self.embedding.ema_update(vectors.detach(), indices)
        loss, commitment_loss, codebook_loss = beta_commitment_loss(vectors, codes, self.beta)
        perplexity, usage = perplexity_and_usage(code_counts)
        return _Match(vectors, codes, indices, loss, commitment_loss, codebook_loss, perplexity, usage)

    def _maintain_codebook(self, vectors: torch.Tensor) -> None:
        """Training-time codebook state, always computed from all processes: running statistics,
        k-means initialisation on the first batch, and replacement of codes that died."""
        self.embedding.update_statistics(vectors)
        if not bool(self.initialized):
            self._initialize_with_kmeans(vectors)
        if self.replace_freq > 0:
            replace_dead_codes(self.embedding, self.steps_since_used, vectors, self.replace_freq)

    @torch.no_grad()
    def _initialize_with_kmeans(self, vectors: torch.Tensor) -> None:
        # Every rank contributes the same number of vectors; rank 0 runs k-means on the pool and
        # broadcasts the centres, so all ranks start from one codebook.
        per_rank = all_reduce_min_int(min(vectors.shape[0], self.kmeans_max_samples), vectors.device)
        local = vectors[torch.randperm(vectors.shape[0])[:per_rank].to(vectors.device)]
        pool = all_gather_cat(local)
        if rank() == 0:
            centres = kmeans_plus_plus_init(
                pool, self.codebook_size, self.kmeans_iterations, search_backend=self.search_backend
            )
        else:
            centres = torch.empty(self.codebook_size, self.embed_dim, device=vectors.device)
        if self.distance == "cosine":
            centres = F.normalize(centres, dim=-1)
        broadcast_(centres)
        self.embedding.set_effective_codes(torch.arange(self.codebook_size, device=vectors.device), centres)
        self.initialized.fill_(True)

    def _lookup(self, indices: torch.Tensor) -> torch.Tensor:
        self._check_indices(indices, self.codebook_size)
        return self._effective_codebook().index_select(0, indices)


def vector_options(config: QuantizerConfig) -> dict:
    """`VectorQuantizer`'s keyword arguments from `config` (all options but the type and the other types' own)."""
    options = config.to_dict()
    for name in ("quantizer_type", "num_groups", "num_quantizers", "fsq_levels"):
        del options[name]
    return options


__all__ = [
    "NonFiniteInputError",
    "QuantizerBase",
    "VectorQuantizer",
    "VectorQuantizerOutput",
    "check_finite",
    "vector_options",
]
