"""Sharing trained models on the Hugging Face Hub: model cards and pushing.

    from hf_vq.hub import push_to_hub
    push_to_hub("outputs/vqgan", "me/vqgan-fashion-mnist")   # -> commit URL
    # or: hf-vq push --model_dir outputs/vqgan --hub_model_id me/vqgan-fashion-mnist
    # a tokenizer and the models built on it, linked:
    # hf-vq push-set --tokenizer_dir outputs/vqgan --classifier_dirs outputs/token-vit --hub_namespace me

The model-folder contract (what a training run leaves in its output folder, and what is pushed):

- `config.json` and `model.safetensors` (or `model.safetensors.index.json` and its shards), written by
  `save_pretrained`. Required.
- `preprocessor_config.json`: the image processor, when the model has one.
- `*.py` modeling files named by `auto_map` in the config (written by `save_pretrained` after
  `register_for_auto_class()`): with them `trust_remote_code=True` loads the model without hf_vq.
- `metrics.json`: a flat JSON object of what the evaluation measured, e.g.
  `{"psnr": 27.1, "ssim": 0.91, "rfid": 4.2, "codebook_usage": 0.97, "perplexity": 900.5,
  "accuracy": 0.89, "dataset": "zalando-datasets/fashion_mnist", "split": "test",
  "train_steps": 20000, "hardware": "1x H100", "num_processes": 1, "train_seconds": 3600}`.
  Metrics shown on the card: psnr, ssim, rfid, codebook_usage, perplexity, accuracy, top5_accuracy;
  a metric absent, null or not a finite number is not shown anywhere. `dataset` goes to the card's
  `datasets` metadata when it is a Hub dataset id. Compute fields: hardware, num_processes,
  mixed_precision, train_steps, train_batch_size, train_seconds, train_hours.
- `training_config.json` (or `.yaml`): the resolved training flags, shown on the card (keys ending
  in token/password/secret/api_key are left out). Quantizer options (affine, sync_nu, alternating,
  beta, kmeans_init, replace_freq, num_groups, num_quantizers, distance, optionally prefixed
  `quantizer_`) are read from it and from config.json.
- `samples.png`: an image grid, embedded in the card.
- A classifier's config.json names its tokenizer in `tokenizer_name_or_path` (a Hub repo id, or a
  local folder plus `--tokenizer_hub_id` at push time); the uploaded config names the Hub repo and pins
  `tokenizer_revision` (the tokenizer's commit). The classifier card links the tokenizer (`base_model`),
  and the tokenizer's card on the Hub lists the models built on it. A classifier whose tokenizer is
  only local is refused: push both with `hf-vq push-set` (`push_model_set`).
- A generation pipeline (a prior) is a diffusers folder: `model_index.json` and one subfolder per
  component, with metrics.json and samples.png at the top.

A push uploads exactly these (an allow-list, `model_folder.SHARED_NAMES`, plus the shards an index names and
`*.py` code), at the top and in each pipeline component: other files (checkpoints, logs, a README.md, a stray
credentials.yaml), hidden files and folders at any depth, and symbolic links are never uploaded (a link with a
needed name stops the push); what went up and what stayed is printed. The card is generated. The uploaded JSON
files carry no local paths (a path, absolute or relative, becomes the Hub id of the model it names, or its last
component), and the upload is refused if a local folder's path is still in any uploaded text file.
"""

from .errors import (
    HubPushError,
    HubUnreachableError,
    IncompleteModelFolderError,
    InvalidCardMetadataError,
    InvalidRepoIdError,
    LocalTokenizerError,
    MissingTokenError,
    OfflineModeError,
    TokenizerMismatchError,
)
from .model_card import listed_dependents, render_model_card, validate_card_metadata
from .model_folder import ModelFolder, load_model_folder
from .model_set import PushedSet, add_push_set_subcommand, push_model_set
from .push import (
    add_hub_arguments,
    add_push_subcommand,
    check_push_arguments,
    check_tokenizer_for_push,
    push_to_hub,
    push_trained_model,
)

__all__ = [
    "HubPushError",
    "HubUnreachableError",
    "IncompleteModelFolderError",
    "InvalidCardMetadataError",
    "InvalidRepoIdError",
    "LocalTokenizerError",
    "MissingTokenError",
    "ModelFolder",
    "OfflineModeError",
    "PushedSet",
    "TokenizerMismatchError",
    "add_hub_arguments",
    "add_push_set_subcommand",
    "add_push_subcommand",
    "check_push_arguments",
    "check_tokenizer_for_push",
    "listed_dependents",
    "load_model_folder",
    "push_model_set",
    "push_to_hub",
    "push_trained_model",
    "render_model_card",
    "validate_card_metadata",
]
