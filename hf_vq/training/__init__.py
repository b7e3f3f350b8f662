"""Training the VQGAN image tokenizer with Accelerate: losses (reconstruction, LPIPS, hinge GAN, adaptive weight,
LeCam), the PatchGAN discriminator, flags and YAML configs, and the training loop.

Every command trains on one machinery, `loop.py` (see its docstring to plug a new command in); its errors
(`TrainingError` and subclasses) are in `errors.py`, and docs/robustness.md says what survives what.
The loops (`train_tokenizer`, `train_classifier`, `train_from_config`) are imported on first use: they pull in
accelerate and diffusers. The command-line modules are `tokenizer_command` and `classifier_command` (not named
after the functions, so that importing a module never shadows the function of the same name on this package).
"""

from typing import Any

from .args import ConfigError, add_training_arguments, build_training_parser, namespace_from_given, parse_training_args
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


def __getattr__(name: str) -> Any:
    if name == "train_tokenizer":
        from .trainer import train_tokenizer

        return train_tokenizer
    if name == "train_classifier":
        from .classifier_command import train_classifier

        return train_classifier
    if name == "train_prior":
        from .prior_command import train_prior

        return train_prior
    if name == "train_from_config":
        from .tokenizer_command import train_from_config

        return train_from_config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "add_training_arguments",
    "adopt_weight",
    "build_training_parser",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "load_lpips",
    "namespace_from_given",
    "parse_training_args",
    "reconstruction_loss",
    "train_classifier",
    "train_from_config",
    "train_prior",
    "train_tokenizer",
]
