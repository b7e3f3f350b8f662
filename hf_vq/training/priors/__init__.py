"""Token priors: what `hf-vq train-prior` needs to know of one kind of prior, as a `TokenPrior` spec.

The prior machinery (`prior_loop.py`: the training loop; `token_data.py`: the token cache; `prior_evaluation.py`:
samples and generation metrics; `end_of_run.py`: the final folder, metrics.json, push) is the same for every prior;
a spec says what differs: the model built from a tokenizer and the data's classes, the training loss of a batch of
token grids and labels, the pipeline that samples it, and the card template. The config's `prior_type` (a
`training:` key or `--prior_type`) picks the spec.

Adding a prior: one file here with its spec (a `TokenPrior` subclass, see `maskgit.py`), its model and pipeline
where models and pipelines live (`hf_vq/models/<name>/`, `hf_vq/pipelines/<name>/`), and one line in `PRIOR_SPECS`.

Example:
    >>> spec = get_prior_spec("maskgit")
    >>> spec.name, spec.config_class
    ('maskgit', 'hf_vq.models.maskgit.configuration_maskgit:MaskGITConfig')
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from ...errors import ConfigError
from ...flags import did_you_mean

if TYPE_CHECKING:  # the flags (hf_vq.training.args) read the registry: keep this module free of torch
    import torch
    from torch import nn

# prior_type -> "module:Class" of its spec (imported when chosen, so that a spec's model code loads only when used).
PRIOR_SPECS = {
    "maskgit": "hf_vq.training.priors.maskgit:MaskGITPrior",
    "autoregressive": "hf_vq.training.priors.autoregressive:AutoregressivePrior",
}
DEFAULT_PRIOR_TYPE = "maskgit"
PIPELINE_MODEL_SUBFOLDER = "transformer"  # where a prior pipeline folder keeps the prior (diffusers' component name)

# A training loss: (model, batch of {"image_tokens", "labels"?}, generator) -> (loss, logs of detached scalars).
PriorLoss = Callable[..., "tuple[torch.Tensor, dict[str, torch.Tensor]]"]


class TokenPrior(ABC):
    """One kind of token prior. The model it builds is a `PreTrainedModel` whose config has `num_classes` (0:
    unconditional) and, for a class-conditional prior, a null class id for classifier-free guidance."""

    name: ClassVar[str]  # its `prior_type`
    config_class: ClassVar[str]  # "module:Class" of the model config, which checks the config file's model: section
    model_class: ClassVar[str]  # "module:Class" of the model
    pipeline_class: ClassVar[str]  # "module:Class" of the generation pipeline saved as the run's output folder
    card_template: ClassVar[str]  # the model card template (model_cards/) of that folder

    def check_tokenizer(self, tokenizer: nn.Module) -> None:
        """Refuse a tokenizer whose tokens this kind of prior cannot model (called before tokenizing the data)."""

    @abstractmethod
    def build_model(
        self,
        tokenizer: nn.Module,
        tokenizer_reference: str,
        model_config: dict[str, Any],
        id2label: dict[int, str],
        tokenizer_revision: str | None = None,
    ) -> nn.Module:
        """A new prior: its size from the config file's model: section, its vocabulary and grid from the tokenizer
        (recorded by `tokenizer_reference` and revision), its classes from `id2label` (empty: unconditional)."""

    @abstractmethod
    def training_loss(self, model_config: Any, label_dropout: float | None) -> PriorLoss:
        """The loss of a batch of token grids (and labels), with `label_dropout` of the labels replaced by the null
        class (None: an unconditional prior, no labels). Called with `generator=` for reproducible validation."""

    @abstractmethod
    def build_pipeline(self, tokenizer: nn.Module, prior: nn.Module):
        """The generation pipeline of a tokenizer and a prior trained on its tokens."""

    def sampling_arguments(self, config: Any) -> dict[str, Any]:
        """The pipeline's own sampling arguments taken from the command's flags (beyond class labels, batch size,
        guidance scale, temperature, generator and output type, which every prior pipeline takes)."""
        return {}

    def load_model(self, name_or_path: str, tokenizer: nn.Module) -> nn.Module:
        """A saved prior (a model folder, or a pipeline folder holding one in transformer/), checked against the
        tokenizer given."""
        subfolder = PIPELINE_MODEL_SUBFOLDER if (Path(name_or_path) / "model_index.json").is_file() else ""
        model = import_object(self.model_class).from_pretrained(name_or_path, subfolder=subfolder)
        self.check_model_tokenizer(model, tokenizer)
        return model

    def check_model_tokenizer(self, model: nn.Module, tokenizer: nn.Module) -> None:
        """Refuse a tokenizer that does not make the tokens `model` was trained on (a `ValueError` naming both)."""
        model.check_tokenizer(tokenizer)


def get_prior_spec(prior_type: str) -> TokenPrior:
    """The spec of `prior_type`, or a `ConfigError` listing the valid ones."""
    if prior_type not in PRIOR_SPECS:
        raise ConfigError(
            f"prior_type {prior_type!r} is not a known prior{did_you_mean(prior_type, PRIOR_SPECS)}; "
            f"valid: {', '.join(PRIOR_SPECS)}"
        )
    return import_object(PRIOR_SPECS[prior_type])()


def spec_of_model(prior: nn.Module) -> TokenPrior:
    """The spec whose model class `prior` is (for a prior given without its `prior_type`)."""
    for prior_type in PRIOR_SPECS:
        spec = get_prior_spec(prior_type)
        if isinstance(prior, import_object(spec.model_class)):
            return spec
    raise TypeError(f"{type(prior).__name__} is no registered prior's model (priors: {', '.join(PRIOR_SPECS)})")


def import_object(dotted: str) -> Any:
    """ "module:Name" -> the object."""
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


__all__ = ["DEFAULT_PRIOR_TYPE", "PRIOR_SPECS", "PriorLoss", "TokenPrior", "get_prior_spec", "spec_of_model"]
