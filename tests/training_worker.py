"""Run under `torchrun --nproc_per_node 2`: train the tiny tokenizer (GAN, LeCam and EMA on), then save this
rank's generator and discriminator weights and codebook state for the test to compare across ranks."""

import os
import sys
from pathlib import Path

import torch

from training_helpers import training_args


def main(data_dir: str, output_dir: str) -> None:
    from hf_vq.training.tokenizer_loop import train_tokenizer

    args = training_args(
        Path(output_dir) / "run",
        train_data_dir=data_dir,
        max_train_steps=6,
        checkpointing_steps=3,
        discriminator_start=2,
        lecam_weight=0.01,
        use_ema=True,
        random_flip=True,
    )
    result = train_tokenizer(args)
    state = {f"generator.{k}": v for k, v in result["model"].state_dict().items()}
    state |= {f"discriminator.{k}": v for k, v in result["discriminator"].state_dict().items()}
    state["global_step"] = torch.tensor(result["global_step"])
    state["images_seen"] = torch.tensor(result["metrics"].get("images_seen", -1) if result["is_main_process"] else -1)
    torch.save(state, Path(output_dir) / f"rank{os.environ['RANK']}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
