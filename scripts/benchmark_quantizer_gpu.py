#!/usr/bin/env python
"""The quantizer on an accelerator: fused (Triton) vs blocked nearest-code search vs vector-quantize-pytorch.

For each codebook size K (default 1024, 16384, 262144) at N vectors of D dimensions (default 16384 x 8):

1. correctness of the fused kernel against the blocked search on this device: euclidean and cosine, float32 and
   bf16 inputs, random data plus duplicated codes; reported: share of identical indices, and the largest excess of
   a chosen code's exact (float64) distance over the nearest one (0 up to float32 rounding);
2. search alone (forward): fused vs blocked, and a few tile sizes of the fused kernel at the largest K;
3. one training step (forward + backward of `quantized.sum() + loss`) of `VectorQuantizer` with all methods
   (affine="learned", sync_nu=0.2, alternating, kmeans_init, replace_freq=20) with the fused and the blocked
   search, and of vector-quantize-pytorch's `VectorQuantize` (defaults) where installed; time (median of
   --repeats calls after --warmup, CUDA-synchronised) and peak memory above the memory before the step
   (`torch.cuda.max_memory_allocated`).

Cases are timed round-robin, one call each per round. A case that fails (out of memory, a kernel error) is
recorded with its error and the run goes on.

    python scripts/benchmark_quantizer_gpu.py --json $OUT/quantizer_gpu.json
    python scripts/benchmark_quantizer_gpu.py --dry_run       # tiny shapes on the CPU (blocked only): a smoke test
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hf_vq.quantization import VectorQuantizer  # noqa: E402
from hf_vq.quantization.search import blocked_nearest_code_indices  # noqa: E402
from hf_vq.quantization.search_triton import triton_available, triton_nearest_code_indices  # noqa: E402

ALL_METHODS = dict(affine="learned", sync_nu=0.2, alternating=True, kmeans_init=True, replace_freq=20, beta=0.95)
TILE_SWEEP = ((32, 64, 4), (64, 128, 4), (64, 256, 8), (128, 128, 8), (128, 64, 4))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--num_vectors", type=int, default=16384)
    parser.add_argument("--embed_dim", type=int, default=8)
    parser.add_argument("--codebook_sizes", default="1024,16384,262144")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dry_run", action="store_true", help="tiny shapes, 2 repeats (on the CPU: blocked only)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.dry_run:
        args.num_vectors, args.codebook_sizes, args.repeats, args.warmup = 512, "64,256", 2, 1
    args.codebook_sizes = [int(size) for size in args.codebook_sizes.split(",")]
    return args


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fused_runs_here(device: torch.device) -> bool:
    return device.type == "cuda" and triton_available()


# --- 1. correctness -------------------------------------------------------------------------------------


def excess_distance(indices: torch.Tensor, vectors: torch.Tensor, codebook: torch.Tensor, cosine: bool) -> float:
    """Largest (chosen - best) exact score over rows, relative to the scores' magnitude."""
    v, c = vectors.double(), codebook.double()
    scores = -(v @ c.t()) if cosine else torch.cdist(v, c).pow(2)
    chosen = scores.gather(1, indices[:, None]).squeeze(1)
    magnitude = v.pow(2).sum(1) + c.pow(2).sum(1).max()
    return float(((chosen - scores.min(dim=1).values) / magnitude).max())


def check_correctness(device: torch.device, embed_dim: int, codebook_sizes: list[int]) -> list[dict]:
    if not fused_runs_here(device):
        return [{"skipped": f"the fused kernel needs CUDA and triton (device {device}, triton {triton_available()})"}]
    records = []
    generator = torch.Generator().manual_seed(0)
    for codebook_size in codebook_sizes:
        for distance in ("euclidean", "cosine"):
            for dtype in (torch.float32, torch.bfloat16):
                vectors = torch.randn(2048, embed_dim, generator=generator)
                codebook = torch.randn(codebook_size, embed_dim, generator=generator)
                codebook[codebook_size // 2 :: 7] = codebook[codebook_size // 3]  # duplicated codes
                vectors[:64] = codebook[codebook_size // 3]  # vectors sitting on them: lowest index must win
                if distance == "cosine":
                    vectors, codebook = F.normalize(vectors, dim=1), F.normalize(codebook, dim=1)
                vectors, codebook = vectors.to(device, dtype), codebook.to(device, dtype)
                record = {"codebook_size": codebook_size, "distance": distance, "dtype": str(dtype)}
                try:
                    fused = triton_nearest_code_indices(vectors, codebook, distance)
                    blocked = blocked_nearest_code_indices(vectors, codebook, distance)
                    record["identical_share"] = float((fused == blocked).float().mean())
                    record["duplicates_lowest_index"] = bool((fused[:64] == codebook_size // 3).all())
                    # Exact distances of the first 256 rows, in float64 on the device (all rows x 2^18 codes: 4 GiB).
                    record["max_relative_excess"] = excess_distance(
                        fused[:256], vectors[:256], codebook, distance == "cosine"
                    )
                except Exception as error:  # noqa: BLE001 - recorded, the run goes on
                    record["error"] = f"{type(error).__name__}: {error}"[:300]
                records.append(record)
                print("correctness", record, flush=True)
    return records


# --- timing helpers ----------------------------------------------------------------------------------------


def time_round_robin(
    steps: dict[str, Callable[[], None]], device: torch.device, repeats: int, warmup: int
) -> dict[str, dict]:
    """Median seconds per call of every step, round-robin; peak memory of one call above the memory before it."""
    results: dict[str, dict] = {name: {"samples_ms": []} for name in steps}
    for name, step in list(steps.items()):
        try:
            for _ in range(warmup):
                step()
            synchronize(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
                step()
                synchronize(device)
                results[name]["peak_mib"] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
        except Exception as error:  # noqa: BLE001 - e.g. out of memory at K = 262144
            results[name]["error"] = f"{type(error).__name__}: {str(error).splitlines()[0]}"[:300]
            steps.pop(name)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    names = list(steps)
    for round_index in range(repeats):
        shift = round_index % max(1, len(names))
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            start = time.perf_counter()
            steps[name]()
            synchronize(device)
            results[name]["samples_ms"].append(1e3 * (time.perf_counter() - start))
    for record in results.values():
        if record["samples_ms"]:
            record["median_ms"] = statistics.median(record["samples_ms"])
    return results


# --- 2. search alone, 3. training step ------------------------------------------------------------------


def search_steps(vectors: torch.Tensor, codebook: torch.Tensor, sweep: bool) -> dict[str, Callable[[], None]]:
    steps = {"blocked search": lambda: blocked_nearest_code_indices(vectors, codebook)}
    if fused_runs_here(vectors.device):
        steps["fused search"] = lambda: triton_nearest_code_indices(vectors, codebook)
        if sweep:
            for block_n, block_k, warps in TILE_SWEEP:
                steps[f"fused search {block_n}x{block_k}, {warps} warps"] = lambda n=block_n, k=block_k, w=warps: (
                    triton_nearest_code_indices(vectors, codebook, "euclidean", n, k, w)
                )
    return steps


def training_steps(inputs: torch.Tensor, codebook_size: int) -> dict[str, Callable[[], None]]:
    device, embed_dim = inputs.device, inputs.shape[-1]
    backends = ["triton", "blocked"] if fused_runs_here(device) else ["blocked"]
    steps = {}
    for backend in backends:
        torch.manual_seed(0)
        quantizer = (
            VectorQuantizer(embed_dim, codebook_size, channel_dim=-1, search_backend=backend, **ALL_METHODS)
            .to(device)
            .train()
        )
        steps[f"ours, all methods, {'fused' if backend == 'triton' else 'blocked'} search"] = _our_step(
            quantizer, inputs
        )
    if importlib.util.find_spec("vector_quantize_pytorch") is not None:
        from vector_quantize_pytorch import VectorQuantize

        theirs = VectorQuantize(dim=embed_dim, codebook_size=codebook_size).to(device).train()
        steps["vector-quantize-pytorch, defaults"] = _their_step(theirs, inputs)
    return steps


def _our_step(quantizer: VectorQuantizer, inputs: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        batch = inputs.clone().requires_grad_()
        quantizer.zero_grad(set_to_none=True)
        out = quantizer(batch)
        (out.quantized.sum() + out.loss).backward()

    return step


def _their_step(module: torch.nn.Module, inputs: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        batch = inputs[None].clone().requires_grad_()
        module.zero_grad(set_to_none=True)
        quantized, _, loss = module(batch)
        (quantized.sum() + loss).backward()

    return step


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    results = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "triton_available": triton_available(),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "correctness": check_correctness(device, args.embed_dim, args.codebook_sizes),
        "search": {},
        "training_step": {},
    }
    generator = torch.Generator().manual_seed(1)
    for codebook_size in args.codebook_sizes:
        vectors = torch.randn(args.num_vectors, args.embed_dim, generator=generator).to(device)
        codebook = torch.randn(codebook_size, args.embed_dim, generator=generator).to(device)
        sweep = codebook_size == max(args.codebook_sizes)
        results["search"][codebook_size] = time_round_robin(
            search_steps(vectors, codebook, sweep), device, args.repeats, args.warmup
        )
        results["training_step"][codebook_size] = time_round_robin(
            training_steps(vectors, codebook_size), device, args.repeats, args.warmup
        )
        print(f"K={codebook_size} done", flush=True)
    return results


def format_tables(results: dict) -> str:
    lines = [f"device: {results['device']}, torch {results['torch']}", ""]
    for section in ("search", "training_step"):
        lines += [f"{section} (ms, median; peak MiB above the memory before the call):", ""]
        lines += [
            "| case | " + " | ".join(f"K={k}" for k in results[section]) + " |",
            "|---|" + "---|" * len(results[section]),
        ]
        names = sorted(
            {name for per_k in results[section].values() for name in per_k},
            key=lambda n: (not n.startswith("fused"), n),
        )
        for name in names:
            cells = []
            for per_k in results[section].values():
                record = per_k.get(name)
                if record is None:
                    cells.append("-")
                elif "error" in record:
                    cells.append("fails")
                else:
                    peak = record.get("peak_mib")
                    cells.append(f"{record['median_ms']:.3f}" + ("" if peak is None else f" ({peak:.0f} MiB)"))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args)
    results["table"] = format_tables(results)
    print(results["table"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
