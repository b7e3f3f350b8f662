#!/usr/bin/env python
"""Sampling speed of the autoregressive prior (transformers' `LlamaForCausalLM`) with classifier-free guidance, two
ways:

- "batched" (hf_vq's `AutoregressivePipeline`): the conditional and the unconditional rows in one batch, one forward
  per step of `2N` rows; `GuidedCodeSampler` combines the pairs and draws the codes (LlamaGen's form);
- "transformers": `generate(guidance_scale=s, negative_prompt_ids=...)`, transformers' built-in
  `UnbatchedClassifierFreeGuidanceLogitsProcessor`, which runs the unconditional branch as a second, sequential
  forward of `N` rows per step with a cache of its own (codes only through `suppress_tokens`).

The tokenizer is the `make demo` one (configs/vqgan_fashion_mnist_cpu.yaml: 8x8 = 64 tokens, 512 codes), the priors
Llama models of the given widths (4 layers, 4 heads, MLP 2.7x, 10 classes, random weights: sampling costs the same for
trained ones). Both ways sample the same number of tokens; only the prior's `generate` is timed (the decode is the
same for both). Ways alternate in rounds so that load from other processes hits both alike; medians over rounds.
With one thread, the CPU time is what sampling costs one free core.

    python scripts/benchmark_autoregressive.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hf_vq import AutoregressivePipeline, VQGANConfig, VQGANModel
from hf_vq.pipelines.autoregressive import GuidedCodeSampler, autoregressive_prior_fields


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer_config", default="configs/vqgan_fashion_mnist_cpu.yaml")
    parser.add_argument("--hidden_sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--num_hidden_layers", type=int, default=4)
    parser.add_argument("--num_images", type=int, default=64)
    parser.add_argument("--guidance_scale", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the target is one CPU core)")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    return parser.parse_args(argv)


def build_pipeline(tokenizer: VQGANModel, hidden_size: int, num_hidden_layers: int) -> AutoregressivePipeline:
    fields = autoregressive_prior_fields(tokenizer.config, num_classes=10)
    config = LlamaConfig(
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=int(2.6875 * hidden_size),
        **fields,
    )
    pipe = AutoregressivePipeline(vqgan=tokenizer, transformer=LlamaForCausalLM(config).eval())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def batched(pipe: AutoregressivePipeline, labels: torch.Tensor, scale: float) -> torch.Tensor:
    sampler = GuidedCodeSampler(
        pipe.transformer.config.codebook_size, scale, generator=torch.Generator().manual_seed(0)
    )
    return pipe.generate_tokens(labels, sampler)


def transformers_builtin(pipe: AutoregressivePipeline, labels: torch.Tensor, scale: float) -> torch.Tensor:
    config = pipe.transformer.config
    prompts = (labels + config.codebook_size)[:, None]
    null = torch.full_like(prompts, config.codebook_size + config.num_classes)
    length = config.grid_size[0] * config.grid_size[1]
    torch.manual_seed(0)
    sequences = pipe.transformer.generate(
        prompts,
        attention_mask=torch.ones_like(prompts),
        do_sample=True,
        top_k=0,
        max_new_tokens=length,
        min_new_tokens=length,
        guidance_scale=scale,
        negative_prompt_ids=null,
        pad_token_id=config.pad_token_id,
        eos_token_id=None,
        suppress_tokens=list(range(config.codebook_size, config.vocab_size)),
    )
    return sequences[:, 1:]


WAYS = {"batched": batched, "transformers": transformers_builtin}


def timed(way, pipe: AutoregressivePipeline, labels: torch.Tensor, scale: float) -> dict[str, float]:
    start, start_cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        tokens = way(pipe, labels, scale)
    assert int(tokens.max()) < pipe.transformer.config.codebook_size
    return {"wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - start_cpu}


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokenizer = VQGANModel(VQGANConfig.from_yaml(args.tokenizer_config)).eval()
    pipes = {hidden: build_pipeline(tokenizer, hidden, args.num_hidden_layers) for hidden in args.hidden_sizes}
    labels = torch.arange(args.num_images) % 10
    cases = [(hidden, way) for hidden in args.hidden_sizes for way in WAYS]
    for hidden, way in cases:  # warm-up
        timed(WAYS[way], pipes[hidden], labels[:2], args.guidance_scale)
    runs: dict[tuple[int, str], list[dict[str, float]]] = {case: [] for case in cases}
    for _ in range(args.rounds):
        for hidden, way in cases:
            runs[(hidden, way)].append(timed(WAYS[way], pipes[hidden], labels, args.guidance_scale))
    results = []
    for (hidden, way), timings in runs.items():
        median = {key: statistics.median(t[key] for t in timings) for key in timings[0]}
        parameters = sum(p.numel() for p in pipes[hidden].transformer.parameters())
        results.append({"hidden_size": hidden, "prior_parameters": parameters, "way": way, **median})
    print(
        f"threads={args.threads}, {args.num_images} images of 8x8 tokens, guidance {args.guidance_scale:g}, "
        f"{args.rounds} rounds (median), torch {torch.__version__}, {platform.processor() or platform.machine()}\n"
    )
    print("| prior width (params) | guidance | wall s | cpu s | cpu s per image | cpu ratio to batched |")
    print("|---|---|---|---|---|---|")
    for r in results:
        base = next(b for b in results if b["hidden_size"] == r["hidden_size"] and b["way"] == "batched")
        print(
            f"| {r['hidden_size']} ({r['prior_parameters'] / 1e6:.2f}M) | {r['way']} | {r['wall_s']:.2f} | "
            f"{r['cpu_s']:.2f} | {r['cpu_s'] / args.num_images:.3f} | {r['cpu_s'] / base['cpu_s']:.2f} |"
        )
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
