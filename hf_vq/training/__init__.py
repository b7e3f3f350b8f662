"""Training the VQGAN image tokenizer, the token classifier and the token prior with Accelerate.

Every command trains on one machinery: `args.py` (flags, YAML configs, the typed config of each command),
`loop.py` (setup, step loop, checkpoints, resume) and `end_of_run.py` (final save, EMA weights, metrics.json,
push); its errors (`TrainingError` and subclasses) are in `errors.py`, and docs/robustness.md says what survives
what. Each command is a `<name>_command.py` (flags, entry points) and a `<name>_loop.py` (what a step computes);
the classifier and the prior read the token cache of `token_data.py` (or, with `--token_dataset`, a token dataset
that `hf-vq encode` wrote: `encode_command.py`, `encoding.py`; the format is `hf_vq.data.token_dataset`), and a
prior is chosen by its spec (`priors/`). The loops are imported from their modules (`tokenizer_loop.train_tokenizer`,
`classifier_command.train_classifier`, `prior_command.train_prior`): they pull in accelerate and diffusers.
"""

from .args import ConfigError
from .discriminator import NLayerDiscriminator
from .errors import (
    CheckpointError,
    FinalEvaluationError,
    FinalSaveError,
    NoTrainingDataError,
    RunLockedError,
    TrainingDivergedError,
    TrainingError,
    TrainingInterrupted,
)
from .losses import (
    LeCamEMA,
    adaptive_generator_weight,
    adopt_weight,
    hinge_discriminator_loss,
    hinge_generator_loss,
    reconstruction_loss,
)
from .lpips import LPIPS, LPIPSWeightsError, load_lpips

__all__ = [
    "CheckpointError",
    "ConfigError",
    "FinalEvaluationError",
    "FinalSaveError",
    "LPIPS",
    "LPIPSWeightsError",
    "LeCamEMA",
    "NLayerDiscriminator",
    "NoTrainingDataError",
    "RunLockedError",
    "TrainingDivergedError",
    "TrainingError",
    "TrainingInterrupted",
    "adaptive_generator_weight",
    "adopt_weight",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "load_lpips",
    "reconstruction_loss",
]
