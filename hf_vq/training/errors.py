"""The training loops' own errors: problems a user can act on, each with a message that says what happened and
what to do (the CLI prints them as one line: `HfVqUserError`). They subclass RuntimeError, so callers that caught
RuntimeError before still do."""

from ..errors import HfVqUserError


class TrainingError(HfVqUserError, RuntimeError):
    """A training run stopped for a reason its message explains."""


class TrainingDivergedError(TrainingError):
    """The loss or the gradients became non-finite, or the loss jumped far above its running average. Nothing
    was saved from the diverged state; the message names the step and the last good checkpoint."""


class NoTrainingDataError(TrainingError):
    """A whole epoch of the training data yielded no usable example (e.g. every image unreadable)."""


class CheckpointError(TrainingError):
    """A checkpoint could not be written (e.g. a full disk: the previous checkpoints are left intact) or the one
    asked for cannot be resumed from (incomplete or unreadable)."""


class FinalSaveError(TrainingError):
    """The final model could not be written (e.g. a full disk): the folder still holds what it held before, and
    the checkpoints are intact."""


class RunLockedError(TrainingError):
    """Another live run holds the output directory's lock (`hf_vq_run.lock`)."""


class TrainingInterrupted(TrainingError):
    """The run stopped on SIGINT or SIGTERM after saving a checkpoint; the exit code is 128 + the signal number
    (130, 143), as a shell reports a process those signals ended."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_code = 128 + signal_number


class FinalEvaluationError(TrainingError):
    """The final evaluation failed after training; the final model was saved before it and is named here."""

    def __init__(self, message: str, output_dir: str):
        super().__init__(message)
        self.output_dir = output_dir
