"""The divergence guard: a run whose loss or gradients become non-finite, or whose loss jumps far above its reference,
stops with a message naming the step and the last good checkpoint (`--on_divergence stop`, the default) or skips
that optimizer step (`--on_divergence skip_step`), before the bad update reaches the weights.

The reference: during the first `WARMUP_STEPS` steps, the loss before the first update (the first step's loss,
computed on the initial weights): a loss above `--divergence_factor` (10) times it is a jump, so that a loss of 1e9
at step 2 stops the run there. After them, the running average of the accepted steps (a rejected loss never enters
it): a jump is above `--divergence_factor` times that average and above the loss of the first steps. The last good
checkpoint the messages name is the newest complete one written before the first step of the current divergence.

The check runs between the backward pass and the optimizer step, at the end of each accumulation window. Every
process takes the same decision: the monitored loss is averaged over processes (their losses differ) and a
non-finite value anywhere counts everywhere, so that no process stops or skips alone and leaves the others
waiting in a collective.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Iterable

import torch

from .args import ON_DIVERGENCE
from .checkpointing import (
    TrainingState,
    checkpoint_step,
    complete_checkpoints,
    describe,
    last_good_checkpoint,
)
from .errors import TrainingDivergedError

logger = logging.getLogger(__name__)

DEFAULT_DIVERGENCE_FACTOR = 10.0
# The jump check starts once the average has seen this many steps; the average then follows about the last
# AVERAGE_WINDOW steps (a mean over the first ones, an exponential moving average after).
WARMUP_STEPS = 10
AVERAGE_WINDOW = 20
# With --on_divergence skip_step, this many skipped steps in a row stop the run anyway: the run is not recovering.
MAX_CONSECUTIVE_SKIPS = 20


class DivergenceGuard:
    """Checks each optimizer step (see the module docstring). `check` returns True when the step may be applied,
    False when it must be skipped, and raises `TrainingDivergedError` when the run must stop.

    Example:
        >>> import torch
        >>> from hf_vq.training.checkpointing import TrainingState
        >>> guard = DivergenceGuard(None, TrainingState(), "outputs/run", on_divergence="skip_step")
        >>> weight = torch.nn.Parameter(torch.ones(2)); weight.grad = torch.tensor([1.0, float("nan")])
        >>> guard.check(torch.tensor(0.5), [weight])
        False
    """

    def __init__(
        self,
        accelerator,
        state: TrainingState,
        output_dir: str,
        on_divergence: str = "stop",
        factor: float = DEFAULT_DIVERGENCE_FACTOR,
    ):
        if on_divergence not in ON_DIVERGENCE:
            raise ValueError(f"on_divergence must be one of {ON_DIVERGENCE}, got {on_divergence!r}")
        self.accelerator, self.state, self.output_dir = accelerator, state, output_dir
        self.on_divergence, self.factor = on_divergence, factor
        self.consecutive_skips = 0

    @classmethod
    def from_args(cls, args, accelerator, state: TrainingState) -> "DivergenceGuard":
        """From a training command's config (every command has `--on_divergence` and `--divergence_factor`)."""
        return cls(accelerator, state, args.output_dir, args.on_divergence, args.divergence_factor)

    def check(
        self,
        loss: torch.Tensor,
        parameters: Iterable[torch.nn.Parameter],
        what: str = "loss",
        track_average: bool = True,
        tracked: torch.Tensor | None = None,
    ) -> bool:
        """`loss`: this process' loss (a scalar tensor); `parameters`: those about to be updated, whose gradients
        must be finite (not checked under fp16, where the gradient scaler skips such steps itself).
        `track_average`: also compare the loss (or `tracked`, a steadier part of it, such as the tokenizer's
        reconstruction loss) with its running average."""
        loss_value, tracked_value, gradients_finite = self._reduced(
            loss, loss if tracked is None else tracked, parameters
        )
        problem = None
        if not (math.isfinite(loss_value) and math.isfinite(tracked_value)):
            problem = f"the {what} is {loss_value if not math.isfinite(loss_value) else tracked_value}"
        elif not gradients_finite:
            problem = f"the gradients of the {what} are not finite"
        elif track_average and self._jumped(tracked_value):
            reference, name = self._reference()
            problem = (
                f"the {what} jumped to {tracked_value:.4g}, {tracked_value / reference:.0f} times {name} "
                f"{reference:.4g} (--divergence_factor {self.factor:g})"
            )
        if problem is None:
            if track_average:
                self._update_average(tracked_value)
            self.consecutive_skips = 0
            self.state.exploded_at_step = 0  # recovered (or never diverged): later checkpoints are good again
            return True
        if not self.state.exploded_at_step:
            self.state.exploded_at_step = self.state.global_step + 1
        return self._diverged(problem)

    def _reduced(self, loss: torch.Tensor, tracked: torch.Tensor, parameters) -> tuple[float, float, bool]:
        """(loss, tracked value, gradients finite), averaged over processes in one collective."""
        values = [loss.detach().float().reshape(()), tracked.detach().float().reshape(())]
        gradients_finite = torch.ones((), device=values[0].device)
        if getattr(self.accelerator, "scaler", None) is None:
            norms = [p.grad.detach().float().norm() for p in parameters if p.grad is not None]
            if norms:
                gradients_finite = torch.stack(norms).sum().isfinite().float()
        values.append(torch.where(gradients_finite > 0, 0.0, float("nan")).to(values[0]))
        packed = torch.stack(values)
        if self.accelerator is not None and self.accelerator.num_processes > 1:
            packed = self.accelerator.reduce(packed, reduction="mean")  # NaN anywhere -> NaN everywhere
        loss_value, tracked_value, flag = packed.tolist()
        return loss_value, tracked_value, math.isfinite(flag)

    def _early(self) -> bool:
        """Still in the first steps, judged against the loss before the first update (checkpoints of older hf_vq
        versions lack it: those runs keep the running average alone)."""
        return self.state.loss_observations < WARMUP_STEPS and self.state.initial_loss > 0

    def _reference(self) -> tuple[float, str]:
        if self._early():
            return self.state.initial_loss, "the loss before the first update"
        return self.state.loss_average, "its running average"

    def _jumped(self, value: float) -> bool:
        """Early: far above the loss before the first update. Later: far above the running average, and above the
        loss of the first steps too: a loss that has fallen near zero (an overfit model) can spike tenfold in noise
        without the run diverging."""
        state = self.state
        if self.factor <= 0:
            return False
        if self._early():
            return value > self.factor * state.initial_loss
        return (
            state.loss_observations >= WARMUP_STEPS
            and state.loss_average > 0
            and value > self.factor * state.loss_average
            and value > state.loss_at_start
        )

    def _update_average(self, value: float) -> None:
        state = self.state
        if state.loss_observations == 0:
            state.initial_loss = value
        state.loss_observations += 1
        state.loss_average += (value - state.loss_average) / min(state.loss_observations, AVERAGE_WINDOW)
        if state.loss_observations == WARMUP_STEPS:
            state.loss_at_start = state.loss_average

    def _diverged(self, problem: str) -> bool:
        step = self.state.global_step + 1  # the step being computed
        if self.on_divergence == "skip_step" and self.consecutive_skips < MAX_CONSECUTIVE_SKIPS:
            self.consecutive_skips += 1
            self.state.skipped_steps += 1
            logger.warning("step %d: %s; this step is skipped (--on_divergence skip_step)", step, problem)
            return False
        if self.on_divergence == "skip_step":
            problem += f", for {MAX_CONSECUTIVE_SKIPS} steps in a row"
        raise TrainingDivergedError(
            f"training diverged at step {step}: {problem}. Nothing from this state was saved; the last good "
            f"checkpoint is {describe(last_checkpoint_before(self.output_dir, self.state.exploded_at_step))}. Resume "
            "from it with a lower "
            "--learning_rate or --max_grad_norm, or pass --on_divergence skip_step to skip such steps"
        )


def last_checkpoint_before(output_dir: str, step: int) -> Path | None:
    """The newest complete checkpoint written before `step` (any step when 0): one written after the loss
    exploded (possible with --on_divergence skip_step) is not a good one to resume from."""
    for checkpoint in complete_checkpoints(output_dir):
        if not step or checkpoint_step(checkpoint) < step:
            return checkpoint
    return None


def ensure_finite_weights(models: Iterable[torch.nn.Module], step: int, output_dir: str) -> None:
    """Raise `TrainingDivergedError` if a floating-point parameter or buffer of `models` is NaN or infinite: called
    before every checkpoint and before the final model is written, so that neither ever holds such weights."""
    for model in models:
        named = [
            (name, tensor)
            for name, tensor in list(model.named_parameters()) + list(model.named_buffers())
            if tensor.is_floating_point()
        ]
        if not named or bool(torch.stack([torch.isfinite(tensor).all() for _, tensor in named]).all()):
            continue  # one device synchronisation per model; the bad tensor is looked for only when there is one
        for name, tensor in named:
            if not bool(torch.isfinite(tensor).all()):
                raise TrainingDivergedError(
                    f"training diverged by step {step}: {type(model).__name__}.{name} holds NaN or infinite values, "
                    f"so nothing is saved. The last good checkpoint is {describe(last_good_checkpoint(output_dir))}; "
                    "resume from it with a lower --learning_rate or --max_grad_norm"
                )
