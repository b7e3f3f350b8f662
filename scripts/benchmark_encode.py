#!/usr/bin/env python
"""Tokenizing speed: `hf-vq encode` on 1 and 2 processes beside the classifier's token cache (`datasets.map` with
the same `ImageEncoder`, what `hf-vq train-classifier` runs before training), on the same images and tokenizer.

    nice -n 10 python scripts/benchmark_encode.py --dataset_name fashion_mnist --json outputs/benchmark_encode.json
    python scripts/benchmark_encode.py --tokenizer_name_or_path outputs/demo/tokenizer --max_samples 5000
    python scripts/benchmark_encode.py --baseline_ref fcf2508  # the token cache of that commit's code too

Without --tokenizer_name_or_path, a tokenizer of configs/vqgan_fashion_mnist_cpu.yaml (the demo's architecture,
random weights: speed does not depend on what the weights learned) is saved to a temporary folder. Each path runs in
its own process(es), started the way a user starts it; "images/s" counts the images encoded over the time spent
encoding and writing them (data and tokenizer loading excluded, the same for every path), "wall s" the whole
command, "CPU s" the CPU time of the whole command, all its processes together (on a shared machine the wall times
follow the other jobs' load, the CPU times much less). Each path runs at its own default batch size unless
--batch_size is given. With --baseline_ref, the token cache is also timed with the code of that git commit (`git
archive` into the temporary folder), to compare against the code as it was. Every path must write the same token
ids and labels as the first (checked). Prints a table and writes it as JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "vqgan_fashion_mnist_cpu.yaml"
ENCODED = re.compile(r"encoded (\d+) images in ([\d.]+) s")

# The classifier's path, timed around `build_token_data` (the tokenizer already loaded), in a fresh cache folder.
CACHE_PATH = """
import json, sys, time
from hf_vq.training.classifier_command import resolve_classifier_args
from hf_vq.training.token_data import build_token_data, load_tokenizer
flags = json.loads(sys.argv[1])
config = resolve_classifier_args(flags)
tokenizer, processor = load_tokenizer(config.tokenizer_name_or_path, "cpu")
start = time.perf_counter()
data = build_token_data(config, tokenizer, processor, encode=True)
seconds = time.perf_counter() - start
print(f"encoded {len(data.train) + len(data.eval)} images in {seconds:.3f} s")
print("cache files: " + json.dumps(data.cache_files))
"""
CACHE_FILES = re.compile(r"cache files: (.+)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer_name_or_path", help="default: the demo architecture, random weights")
    parser.add_argument("--dataset_name", default="fashion_mnist")
    parser.add_argument("--max_samples", type=int, default=None, help="training images (default: all)")
    parser.add_argument("--max_eval_samples", type=int, default=None, help="test images (default: all)")
    parser.add_argument("--batch_size", type=int, default=None, help="default: each path's own default")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--baseline_ref", default=None, help="also time the token cache of this git commit's code")
    parser.add_argument("--json", default=None, help="write the table here too")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="benchmark_encode_") as work:
        work = Path(work)
        tokenizer = args.tokenizer_name_or_path or save_demo_tokenizer(work / "tokenizer")
        rows = []
        if args.baseline_ref:
            code = export_commit(args.baseline_ref, work / "baseline")
            rows.append(run_cache_path(args, tokenizer, work / "baseline-cache", code, f" at {args.baseline_ref}"))
        rows.append(run_cache_path(args, tokenizer, work / "cache"))
        for processes in args.processes:
            rows.append(run_encode(args, tokenizer, work / f"encoded-{processes}", processes))
        first = rows[0]["tokens"]
        for row in rows:
            row["same_tokens_as_first"] = same_tokens(first, row.pop("tokens"))
    print_table(rows)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows, "load_average": load_average()}, indent=2) + "\n")
    return 0


def save_demo_tokenizer(folder: Path) -> str:
    import torch

    from hf_vq import VQGANConfig, VQGANModel

    torch.manual_seed(0)
    VQGANModel(VQGANConfig.from_yaml(DEMO_CONFIG)).eval().save_pretrained(folder)  # with its image processor
    return str(folder)


def data_flags(args: argparse.Namespace) -> dict:
    flags = {"dataset_name": args.dataset_name, "max_eval_samples": args.max_eval_samples}
    if args.max_samples:
        flags["max_train_samples"] = args.max_samples
    return flags


def export_commit(ref: str, folder: Path) -> Path:
    """The package of commit `ref` of this repository (`git archive`: nothing is written into .git)."""
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "hf_vq"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def run_cache_path(
    args: argparse.Namespace, tokenizer: str, cache_dir: Path, code: Path = REPO, label: str = ""
) -> dict:
    flags = {"tokenizer_name_or_path": tokenizer, "cache_dir": str(cache_dir), **data_flags(args)}
    if args.batch_size:
        flags["tokenize_batch_size"] = args.batch_size
    command = [sys.executable, "-c", CACHE_PATH, json.dumps(flags)]
    row = timed(f"train-classifier token cache (datasets.map){label}", 1, command, code)
    row["tokens"] = json.loads(CACHE_FILES.search(row.pop("stdout")).group(1))
    return row


def run_encode(args: argparse.Namespace, tokenizer: str, output_dir: Path, processes: int) -> dict:
    flags = {
        "tokenizer_name_or_path": tokenizer,
        "output_dir": str(output_dir),
        "batch_size": args.batch_size,
        **data_flags(args),
    }
    script = [str(REPO / "scripts" / "encode.py"), *(f"--{key}={value}" for key, value in flags.items() if value)]
    script.append("--no-progress_bar")
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    row = timed("hf-vq encode", processes, launcher + script)
    del row["stdout"]
    row["tokens"] = str(output_dir)
    return row


def same_tokens(first: list[str] | str, other: list[str] | str) -> bool:
    """Whether two paths wrote the same ids and labels, split by split: a token cache (its Arrow files, train then
    evaluation) or an `hf-vq encode` folder (its splits in order)."""
    import datasets

    def tables(tokens: list[str] | str) -> list:
        if isinstance(tokens, str):
            return [split.data.table for split in datasets.load_from_disk(tokens).values()]
        return [datasets.Dataset.from_file(path).data.table for path in tokens]

    return all(a.equals(b) for a, b in zip(tables(first), tables(other), strict=True))


def timed(path: str, processes: int, command: list[str], code: Path = REPO) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")])))
    cpu_start, start = _children_cpu_seconds(), time.perf_counter()
    # Started in `code`: `python -c` imports from its working folder before PYTHONPATH.
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=code)
    wall, cpu = time.perf_counter() - start, _children_cpu_seconds() - cpu_start
    if result.returncode != 0:
        raise RuntimeError(f"{path} ({processes} processes) failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")
    match = ENCODED.search(result.stdout)
    images, seconds = int(match.group(1)), float(match.group(2))
    return {
        "path": path,
        "processes": processes,
        "images": images,
        "seconds": round(seconds, 2),
        "images_per_second": round(images / seconds, 1),
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "stdout": result.stdout,
    }


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # finished child processes (and theirs), user + system
    return usage.ru_utime + usage.ru_stime


def print_table(rows: list[dict]) -> None:
    print("| path | processes | images | encoding s | images/s | wall s | CPU s | same tokens |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for row in rows:
        print(
            f"| {row['path']} | {row['processes']} | {row['images']:,} | {row['seconds']:.1f} | "
            f"{row['images_per_second']:,.0f} | {row['wall_seconds']:.1f} | {row['cpu_seconds']:.1f} | "
            f"{'yes' if row['same_tokens_as_first'] else 'NO'} |"
        )
    print(f"load average (1, 5, 15 min) at the end: {load_average()}")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    sys.exit(main())
