#!/usr/bin/env python
"""Speed and peak memory of the vector quantizer on CPU, against vector-quantize-pytorch and the bare work.

Every case runs what one training step asks of a quantizer: a forward pass over N vectors of D
dimensions with K codes, then the backward pass of `quantized.sum() + loss` into an input that
requires grad (the module's parameter gradients and the input gradient are reset to None before
each step, as `optimizer.zero_grad()` does). The reference, the "bare work", is the least any
nearest-code quantizer must compute: one unblocked `torch.addmm` distance matrix plus `argmin`,
forward only.

Cases: the bare work; our blocked search alone; our `VectorQuantizer` plain and with all methods on
(sync_nu=0.2, affine "learned" or "running", alternating, kmeans_init, replace_freq=20, beta=0.95)
on an (N, D) input with channel_dim=-1, and (first shape only) on a (B, D, H, W) input with
channel_dim=1; vector-quantize-pytorch's `VectorQuantize` with its defaults, and with affine_param and
sync_update_v=0.2 (which requires learnable_codebook=True and ema_update=False), on (1, N, D).

Time: all cases of one shape live in one process and use torch.set_num_threads(--threads). Each case
makes its first call (timed on its own: ours with kmeans_init runs k-means++ in it) and one warm-up
call; then the cases are timed round-robin, one call each per round, the starting case rotating every
round, so that load from other processes on a shared machine hits every case alike. Reported: the
median time per call, and the median over rounds of the ratio to the bare work's time in the same
round. vector-quantize-pytorch, seconds a call at K = 16384, is timed in the first 3 rounds only and
without a warm-up call beyond its first (it has no state to warm). Three input batches are cycled.

Peak memory: every (case, shape) runs in a fresh subprocess. It makes a warm-up call (ours with
kmeans_init first loads the state the timing run reached, so that k-means does not run again; none for
vector-quantize-pytorch), hands freed heap memory back to the kernel (malloc_trim), resets the
kernel's peak-RSS mark (/proc/self/clear_refs), runs one step and reports the peak RSS (VmHWM) minus
the RSS just before the step: the memory a step needs on top of its inputs, parameters and libraries.
The N = K = 65536 shape is not timed, and k-means++ there would take minutes on a small CPU, so there
our codebook keeps its normal initialisation and the measured step is the first call (k-means changes
the codebook's values, not what a step allocates). Subprocesses may grow by at most
--memory-limit-gib (an address-space limit), so that a case needing more (one unblocked N x K float32
matrix at N = K = 65536 is 16 GiB) fails with an allocation error instead of exhausting a shared
machine. --quick measures memory at its memory shape only, in the benchmark's own process.

Against the main branch: `--baseline main` (the default; `none` to skip) imports `hf_vq/quantization` as it is
on that git ref (read with `git show` into a temporary package) and times its `VectorQuantizer` with the same
options in the same rounds ("main: ..." cases); "x main" is the median over rounds of our time over its time.
Our "blocked search" cases force `search_backend="blocked"`; the others use "auto" (FAISS on the CPU for D <= 32).

Further sections: `--scaling` times our quantizer at N = 16384, D = 8 for K from 1024 to 262144 (time vs K);
`--kmeans` times k-means++ initialisation, the baseline's against ours, at K = 16384, and ours at K = 262144.
Memory is measured at every --memory-shape (default N=K=65536, D=64 and N=16384, D=8, K=262144);
`--no-memory-at-time-shapes` skips the memory runs at the timed shapes.

Usage:
    python scripts/benchmark_quantizer.py                            # full run, a few minutes
    python scripts/benchmark_quantizer.py --json benchmark.json      # also write the results as JSON
    python scripts/benchmark_quantizer.py --quick --json out.json    # small shapes, well under 30 s
    python scripts/benchmark_quantizer.py --threads 2 --repeats 11   # other settings
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import gc
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hf_vq.quantization import VectorQuantizer  # noqa: E402
from hf_vq.quantization.kmeans import kmeans_plus_plus_init  # noqa: E402
from hf_vq.quantization.search import nearest_code_indices  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BASELINE = None  # hf_vq/quantization as on --baseline's git ref (a module), set by main()

# The comparison is optional (our cases run without it) and imported only where used: it is slow to import.
HAS_VQP = importlib.util.find_spec("vector_quantize_pytorch") is not None

SYNC_NU = 0.2
REPLACE_FREQ = 20
NUM_INPUTS = 3  # distinct input batches, cycled, so that code usage changes from step to step
SLOW_CASE_ROUNDS = 3  # vector-quantize-pytorch takes seconds a call at K = 16384: fewer rounds suffice
MEMORY_TIMEOUT_S = 900


@dataclass(frozen=True)
class Shape:
    num_vectors: int
    embed_dim: int
    codebook_size: int

    @property
    def label(self) -> str:
        return f"N={self.num_vectors}, D={self.embed_dim}, K={self.codebook_size}"

    @classmethod
    def parse(cls, text: str) -> "Shape":
        num_vectors, embed_dim, codebook_size = (int(part) for part in text.split(","))
        return cls(num_vectors, embed_dim, codebook_size)

    def __str__(self) -> str:
        return f"{self.num_vectors},{self.embed_dim},{self.codebook_size}"


FULL_TIME_SHAPES = (Shape(16384, 64, 1024), Shape(16384, 8, 16384))
FULL_MEMORY_SHAPES = (Shape(65536, 64, 65536), Shape(16384, 8, 262144))
SCALING_CODEBOOK_SIZES = (1024, 4096, 16384, 65536, 262144)
QUICK_SCALING_CODEBOOK_SIZES = (256, 1024, 4096)
SCALING_BLOCKED_MAX_K = 16384  # the blocked search at larger K takes tens of seconds a call on one core
# k-means cases: (N, D, K, Lloyd iterations, also run the baseline)
KMEANS_CASES = ((16384, 8, 16384, 10, True), (32768, 8, 16384, 10, True), (262144, 8, 262144, 10, False))
QUICK_TIME_SHAPES = (Shape(2048, 64, 256), Shape(2048, 8, 1024))
QUICK_MEMORY_SHAPES = (Shape(4096, 64, 4096),)
QUICK_KMEANS_CASES = ((2048, 8, 512, 10, True),)


# --- the baseline: hf_vq/quantization as on another git ref ------------------------------------------


def load_baseline(ref: str, directory: Path):
    """Import `hf_vq/quantization` as it is on git ref `ref` as a standalone package (its files import each
    other relatively only), from copies written under `directory`."""
    listing = subprocess.run(
        ["git", "-C", str(REPO), "ls-tree", "--name-only", f"{ref}:hf_vq/quantization"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    package = directory / "hf_vq_baseline_quantization"
    package.mkdir(parents=True, exist_ok=True)
    for name in listing:
        if name.endswith(".py"):
            source = subprocess.run(
                ["git", "-C", str(REPO), "show", f"{ref}:hf_vq/quantization/{name}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            (package / name).write_text(source)
    sys.path.insert(0, str(directory))
    return importlib.import_module("hf_vq_baseline_quantization")


# --- the cases -------------------------------------------------------------------------------------


class Runner:
    """One case at one shape: turns a flat (N, D) batch into its own input and runs one step on it."""

    module: nn.Module | None = None

    def prepare(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.clone().requires_grad_()

    def step(self, inputs: torch.Tensor) -> None:
        raise NotImplementedError

    def zero_grad(self, inputs: torch.Tensor) -> None:
        inputs.grad = None
        if self.module is not None:
            self.module.zero_grad(set_to_none=True)


class BareWork(Runner):
    """One unblocked distance matrix (N, K) from a single addmm, and its argmin; forward only."""

    def __init__(self, shape: Shape):
        self.codebook = torch.randn(shape.codebook_size, shape.embed_dim)

    def prepare(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.clone()

    @torch.no_grad()
    def step(self, inputs: torch.Tensor) -> None:
        codes = self.codebook
        scores = torch.addmm(codes.pow(2).sum(dim=1), inputs, codes.t(), beta=1.0, alpha=-2.0)
        scores.argmin(dim=1)


class OurSearch(BareWork):
    """Our nearest-code search alone (forward only), for comparison with the bare work."""

    def __init__(self, shape: Shape, backend: str = "blocked"):
        super().__init__(shape)
        self.backend = backend

    @torch.no_grad()
    def step(self, inputs: torch.Tensor) -> None:
        nearest_code_indices(inputs, self.codebook, backend=self.backend)


class OurQuantizer(Runner):
    """`VectorQuantizer` in training mode; backward of quantized.sum() + loss."""

    def __init__(self, shape: Shape, image_layout: bool = False, **options):
        self.image_layout = image_layout
        channel_dim = 1 if image_layout else -1
        self.module = VectorQuantizer(
            embed_dim=shape.embed_dim, codebook_size=shape.codebook_size, channel_dim=channel_dim, **options
        ).train()

    def prepare(self, flat: torch.Tensor) -> torch.Tensor:
        if not self.image_layout:
            return flat.clone().requires_grad_()
        side = _image_side(flat.shape[0])
        grid = flat.reshape(-1, side, side, flat.shape[1])  # (B, H, W, D) -> contiguous (B, D, H, W)
        return grid.permute(0, 3, 1, 2).contiguous().requires_grad_()

    def step(self, inputs: torch.Tensor) -> None:
        out = self.module(inputs)
        (out.quantized.sum() + out.loss).backward()


class BaselineQuantizer(OurQuantizer):
    """The baseline ref's `VectorQuantizer` (see --baseline), same options, same input."""

    def __init__(self, shape: Shape, image_layout: bool = False, **options):
        self.image_layout = image_layout
        self.module = BASELINE.VectorQuantizer(
            embed_dim=shape.embed_dim, codebook_size=shape.codebook_size, channel_dim=-1, **options
        ).train()


class TheirQuantizer(Runner):
    """vector-quantize-pytorch's `VectorQuantize` in training mode, on a (1, N, D) input."""

    def __init__(self, shape: Shape, **options):
        from vector_quantize_pytorch import VectorQuantize

        self.module = VectorQuantize(dim=shape.embed_dim, codebook_size=shape.codebook_size, **options).train()

    def prepare(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.reshape(1, *flat.shape).clone().requires_grad_()

    def step(self, inputs: torch.Tensor) -> None:
        quantized, _, loss = self.module(inputs)
        (quantized.sum() + loss).backward()


def _image_side(num_vectors: int) -> int:
    """Largest power-of-two side (at most 32) of square feature maps that tile `num_vectors` vectors."""
    side = 32
    while num_vectors % (side * side):
        side //= 2
    return side


ALL_METHODS = (
    ("sync_nu", SYNC_NU),
    ("alternating", True),
    ("kmeans_init", True),
    ("replace_freq", REPLACE_FREQ),
    ("beta", 0.95),
)


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    runner: type[Runner]
    options: tuple[tuple[str, object], ...] = ()
    slow: bool = False  # timed in at most SLOW_CASE_ROUNDS rounds, and its first call is its warm-up
    first_shape_only: bool = False  # timed at the first shape only (and not run at the memory shape)
    at_memory_shape: bool = True

    @property
    def needs_vqp(self) -> bool:
        return self.runner is TheirQuantizer

    @property
    def needs_baseline(self) -> bool:
        return self.runner is BaselineQuantizer

    @property
    def baseline_key(self) -> str | None:
        """The baseline case that this one of ours is compared with ("x main")."""
        key = self.key.replace("ours_blocked_", "main_").replace("ours_", "main_")
        return key if key != self.key else None

    @property
    def runs_kmeans(self) -> bool:
        return bool(dict(self.options).get("kmeans_init", False))

    def build(self, shape: Shape, kmeans_init: bool = True, seed: int = 0) -> Runner:
        """The case's runner; `kmeans_init=False` starts our codebook from its normal initialisation."""
        options = dict(self.options)
        if self.runs_kmeans:
            options["kmeans_init"] = kmeans_init
        torch.manual_seed(seed)
        return self.runner(shape, **options)


CASES = (
    Case("bare", "bare work: one addmm + argmin, unblocked (forward only)", BareWork),
    Case("ours_search", "ours: blocked search only (forward only)", OurSearch, at_memory_shape=False),
    Case(
        "ours_auto_search",
        "ours: auto search only (FAISS where D <= 32; forward only)",
        OurSearch,
        (("backend", "auto"),),
        at_memory_shape=False,
    ),
    Case("main_plain", "main: plain (defaults)", BaselineQuantizer),
    Case(
        "main_all_learned",
        "main: all methods, affine=learned",
        BaselineQuantizer,
        (("affine", "learned"), *ALL_METHODS),
    ),
    Case(
        "main_all_running",
        "main: all methods, affine=running",
        BaselineQuantizer,
        (("affine", "running"), *ALL_METHODS),
    ),
    Case("ours_plain", "ours: plain (defaults)", OurQuantizer),
    Case("ours_all_learned", "ours: all methods, affine=learned", OurQuantizer, (("affine", "learned"), *ALL_METHODS)),
    Case("ours_all_running", "ours: all methods, affine=running", OurQuantizer, (("affine", "running"), *ALL_METHODS)),
    Case(
        "ours_blocked_all_learned",
        "ours: all methods, affine=learned, blocked search",
        OurQuantizer,
        (("search_backend", "blocked"), ("affine", "learned"), *ALL_METHODS),
        at_memory_shape=False,
    ),
    Case(
        "ours_all_learned_bdhw",
        "ours: all methods, affine=learned, (B, D, H, W) input",
        OurQuantizer,
        (("image_layout", True), ("affine", "learned"), *ALL_METHODS),
        first_shape_only=True,  # its extra cost, two N x D layout copies, shows best where D is large
        at_memory_shape=False,
    ),
    Case("vqp_default", "vector-quantize-pytorch: defaults", TheirQuantizer, slow=True),
    Case(
        "vqp_affine_sync",
        f"vector-quantize-pytorch: affine_param + sync_update_v={SYNC_NU}",
        TheirQuantizer,
        (("affine_param", True), ("sync_update_v", SYNC_NU), ("learnable_codebook", True), ("ema_update", False)),
        slow=True,
    ),
)
CASES_BY_KEY = {case.key: case for case in CASES}


def available_cases(skip_vqp: bool = False) -> list[Case]:
    return [
        case
        for case in CASES
        if (HAS_VQP and not skip_vqp or not case.needs_vqp) and (BASELINE is not None or not case.needs_baseline)
    ]


def make_inputs(shape: Shape, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape.num_vectors, shape.embed_dim, generator=generator) for _ in range(NUM_INPUTS)]


# --- timing ----------------------------------------------------------------------------------------


def _seconds(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def time_shape(cases: list[Case], shape: Shape, repeats: int, warmup: int, state_dir: Path) -> list[dict]:
    """Median step time of every case at one shape, timed round-robin (see the module docstring)."""
    runners = {case.key: case.build(shape) for case in cases}
    flat_inputs = make_inputs(shape)
    inputs = {key: [runner.prepare(flat) for flat in flat_inputs] for key, runner in runners.items()}

    def run(key: str, call: int) -> float:
        batch = inputs[key][call % NUM_INPUTS]
        runners[key].zero_grad(batch)
        return _seconds(lambda: runners[key].step(batch))

    first_call = {}
    for case in cases:
        first_call[case.key] = run(case.key, 0)
        for call in range(0 if case.slow else warmup):
            run(case.key, call + 1)

    samples: dict[str, list[float]] = {case.key: [] for case in cases}
    for round_index in range(repeats):
        shift = round_index % len(cases)
        for case in cases[shift:] + cases[:shift]:
            if not (case.slow and round_index >= SLOW_CASE_ROUNDS):
                samples[case.key].append(run(case.key, round_index))

    for case in cases:
        if case.runs_kmeans:  # memory runs start from here instead of running k-means again
            torch.save(runners[case.key].module.state_dict(), _state_path(state_dir, case.key, shape))
    return [_timing_record(case, shape, samples, first_call[case.key]) for case in cases]


def _timing_record(case: Case, shape: Shape, samples: dict[str, list[float]], first_call: float) -> dict:
    own, bare = samples[case.key], samples["bare"]
    baseline = samples.get(case.baseline_key) if case.baseline_key else None
    return {
        "ratio_to_main": statistics.median(mine / theirs for mine, theirs in zip(own, baseline)) if baseline else None,
        "case": case.key,
        "label": case.label,
        "shape": asdict(shape),
        "median_ms": 1e3 * statistics.median(own),
        "min_ms": 1e3 * min(own),
        "ratio_to_bare": statistics.median(mine / reference for mine, reference in zip(own, bare)),
        "first_call_s": first_call,
        "samples_ms": [1e3 * value for value in own],
    }


def _state_path(state_dir: Path, key: str, shape: Shape) -> Path:
    return state_dir / f"{key}-{shape.num_vectors}-{shape.embed_dim}-{shape.codebook_size}.pt"


# --- peak memory -----------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _release_free_memory() -> None:
    """Hand freed heap memory back to the kernel, so that the RSS before a step holds only live data."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _peak_extra_mib(run: Callable[[], None]) -> float:
    """Peak RSS during `run` minus the RSS just before it (Linux: VmHWM after resetting it)."""
    _release_free_memory()
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS (VmHWM) to the current RSS
    run()
    return (_status_kib("VmHWM") - before) / 1024


def _limit_address_space(headroom_gib: float) -> None:
    """Let this process grow by at most `headroom_gib`: a larger allocation fails instead of swapping
    or waking the OOM killer on a shared machine."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _status_kib("VmSize") * 1024 + int(headroom_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


def memory_worker(case: Case, shape: Shape, state_path: Path | None, warmup: int) -> dict:
    """`warmup` calls, then the peak RSS of one step above the RSS before it (meant for a fresh process)."""
    record = {"case": case.key, "shape": asdict(shape), "warmup_calls": warmup}
    try:
        # Without a saved state (the N = K = 65536 shape is not timed) k-means would take minutes
        # here; the codebook then keeps its normal initialisation, which costs no memory of its own.
        runner = case.build(shape, kmeans_init=state_path is not None)
        if state_path is not None:
            runner.module.load_state_dict(torch.load(state_path))
        batches = [runner.prepare(flat) for flat in make_inputs(shape)[:2]]
        for call in range(warmup):
            runner.zero_grad(batches[call % 2])
            runner.step(batches[call % 2])
        runner.zero_grad(batches[warmup % 2])
        record["peak_mib"] = _peak_extra_mib(lambda: runner.step(batches[warmup % 2]))
    except (RuntimeError, MemoryError) as error:
        record["error"] = f"allocation failed: {str(error).strip().splitlines()[0][:160]}"
    return record


def measure_memory(case: Case, shape: Shape, timed: bool, args: argparse.Namespace, state_dir: Path) -> dict:
    """`memory_worker` in a fresh subprocess; at timed shapes it starts from the state timing reached."""
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", case.key, "--shape", str(shape)]
    command += ["--threads", str(args.threads), "--memory-limit-gib", str(args.memory_limit_gib)]
    command += ["--baseline", args.baseline if case.needs_baseline else "none"]
    command += ["--warmup", "1" if timed and not case.slow else "0"]
    if timed and case.runs_kmeans:
        command += ["--state", str(_state_path(state_dir, case.key, shape))]
    failure = {"case": case.key, "shape": asdict(shape)}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=MEMORY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {**failure, "error": f"timed out after {MEMORY_TIMEOUT_S} s"}
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return {**failure, "error": reason[:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- report ----------------------------------------------------------------------------------------


def machine_info(threads: int) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "torch": torch.__version__,
        "vector_quantize_pytorch": _package_version("vector-quantize-pytorch"),
        "python": platform.python_version(),
        "threads": threads,
    }


def _package_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # not installed
        return None


def _format_ms(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _format_mib(record: dict | None) -> str:
    if record is None:
        return "-"
    if "error" in record:
        return "fails" if record["error"].startswith("allocation failed") else "error"
    return f"{record['peak_mib']:.0f}"


def format_tables(results: dict) -> str:
    time_shapes = [Shape(**shape) for shape in results["time_shapes"]]
    memory_shapes = [Shape(**shape) for shape in results["memory_shapes"]] if results["memory"] else []
    timing = {(r["case"], Shape(**r["shape"])): r for r in results["timing"]}
    memory = {(r["case"], Shape(**r["shape"])): r for r in results["memory"]}
    with_main = any(r.get("ratio_to_main") is not None for r in results["timing"])
    with_time_memory = any(Shape(**r["shape"]) in time_shapes for r in results["memory"])
    header = ["case"]
    for shape in time_shapes:
        header += [f"{shape.label}: ms", "x bare"] + (["x main"] if with_main else [])
        header += ["peak MiB"] if with_time_memory else []
    header += [f"{shape.label}: peak MiB" for shape in memory_shapes]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] if results["timing"] else []
    for key in results["cases"] if results["timing"] else []:
        row = [CASES_BY_KEY[key].label]
        for shape in time_shapes:
            record = timing.get((key, shape))
            width = 2 + with_main + with_time_memory
            if record is None:
                row += ["-"] * width
                continue
            row += [_format_ms(record["median_ms"]), f"{record['ratio_to_bare']:.2f}"]
            if with_main:
                ratio = record.get("ratio_to_main")
                row.append("-" if ratio is None else f"**{ratio:.2f}**")
            if with_time_memory:
                row.append(_format_mib(memory.get((key, shape))))
        row += [_format_mib(memory.get((key, shape))) for shape in memory_shapes]
        lines.append("| " + " | ".join(row) + " |")
    if results["timing"]:
        lines += ["", "First call of each case (s; ours with kmeans_init runs k-means++ in it):", ""]
    for key in results["cases"] if results["timing"] else []:
        timed = [timing[(key, shape)] for shape in time_shapes if (key, shape) in timing]
        firsts = ", ".join(f"{record['first_call_s']:.2f}" for record in timed)
        lines.append(f"- {key}: {firsts}")
    lines += format_scaling(results.get("scaling", []))
    lines += format_kmeans(results.get("kmeans", []))
    failures = [r for r in results["memory"] if "error" in r]
    if failures:
        lines += ["", "Memory runs that did not finish:", ""]
        lines += [f"- {r['case']} at {Shape(**r['shape']).label}: {r['error']}" for r in failures]
    return "\n".join(lines)


def format_scaling(records: list[dict]) -> list[str]:
    if not records:
        return []
    lines = ["", "Time vs codebook size (D = 8; ms per step, median; in brackets: ns per step per code):", ""]
    lines += [
        "| K | " + " | ".join(r["label"] for r in records[0]["cases"]) + " |",
        "|---|" + "---|" * len(records[0]["cases"]),
    ]
    for record in records:
        cells = []
        for case in record["cases"]:
            if case["median_ms"] is None:
                cells.append("-")
            else:
                per_code = 1e6 * case["median_ms"] / record["codebook_size"]
                cells.append(f"{_format_ms(case['median_ms'])} ({per_code:.1f} ns/code)")
        lines.append(f"| {record['codebook_size']} | " + " | ".join(cells) + " |")
    return lines


def format_kmeans(records: list[dict]) -> list[str]:
    if not records:
        return []
    lines = ["", "k-means++ initialisation (seconds; cost = mean squared distance to the nearest centre):", ""]
    lines += [
        "| N | D | K | Lloyd iterations | baseline s | ours s | ours / baseline | baseline cost | ours cost | "
        "ours distinct codes |"
    ]
    lines += ["|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        base, base_cost = r.get("baseline_s"), r.get("baseline_cost")
        ratio = "-" if base is None else f"**{r['ours_s'] / base:.3f}**"
        base_text = "-" if base is None else f"{base:.2f}"
        base_cost_text = "-" if base_cost is None else f"{base_cost:.4f}"
        lines.append(
            f"| {r['num_vectors']} | {r['embed_dim']} | {r['codebook_size']} | {r['iterations']} | {base_text} | "
            f"{r['ours_s']:.2f} | {ratio} | {base_cost_text} | {r['ours_cost']:.4f} | {r['ours_distinct']} |"
        )
    return lines


# --- time vs K, and k-means ------------------------------------------------------------------------


def time_scaling(repeats: int, num_vectors: int, codebook_sizes: tuple[int, ...]) -> list[dict]:
    """Our quantizer (plain; all methods with the auto and the blocked search) at D = 8 for growing K,
    round-robin within each K."""
    records = []
    for codebook_size in codebook_sizes:
        shape = Shape(num_vectors, 8, codebook_size)
        keys = ["ours_plain", "ours_all_learned"]
        if codebook_size <= SCALING_BLOCKED_MAX_K:
            keys.append("ours_blocked_all_learned")
        cases = [CASES_BY_KEY[key] for key in keys]
        runners = {case.key: case.build(shape) for case in cases}
        flat = make_inputs(shape)
        inputs = {key: [runner.prepare(batch) for batch in flat] for key, runner in runners.items()}
        samples: dict[str, list[float]] = {key: [] for key in keys}
        for call in range(repeats + 2):  # the first two calls (k-means, warm-up) are not kept
            for key in keys[call % len(keys) :] + keys[: call % len(keys)]:
                batch = inputs[key][call % NUM_INPUTS]
                runners[key].zero_grad(batch)
                seconds = _seconds(lambda: runners[key].step(batch))
                if call >= 2:
                    samples[key].append(seconds)
        all_keys = ["ours_plain", "ours_all_learned", "ours_blocked_all_learned"]
        records.append(
            {
                "num_vectors": num_vectors,
                "codebook_size": codebook_size,
                "cases": [
                    {
                        "case": key,
                        "label": CASES_BY_KEY[key].label.removeprefix("ours: "),
                        "median_ms": 1e3 * statistics.median(samples[key]) if key in samples else None,
                        "samples_ms": [1e3 * value for value in samples.get(key, [])],
                    }
                    for key in all_keys
                ],
            }
        )
        _progress(f"scaling: K={codebook_size} done")
    return records


def _kmeans_cost(vectors: torch.Tensor, centres: torch.Tensor) -> float:
    nearest = centres[nearest_code_indices(vectors, centres)]
    return float((vectors - nearest).pow(2).sum(dim=1).mean())


def time_kmeans(cases: tuple) -> list[dict]:
    """k-means++ initialisation on clustered data (4096 Gaussian clusters): ours, and the baseline's where asked."""
    records = []
    for num_vectors, embed_dim, codebook_size, iterations, with_baseline in cases:
        generator = torch.Generator().manual_seed(0)
        means = torch.randn(4096, embed_dim, generator=generator) * 3
        vectors = means[torch.randint(4096, (num_vectors,), generator=generator)]
        vectors = vectors + 0.5 * torch.randn(num_vectors, embed_dim, generator=generator)
        record = {
            "num_vectors": num_vectors,
            "embed_dim": embed_dim,
            "codebook_size": codebook_size,
            "iterations": iterations,
        }
        started = time.perf_counter()
        ours = kmeans_plus_plus_init(vectors, codebook_size, iterations, generator=torch.Generator().manual_seed(1))
        record["ours_s"] = time.perf_counter() - started
        record["ours_cost"] = _kmeans_cost(vectors, ours)
        record["ours_distinct"] = int(torch.unique(ours, dim=0).shape[0])
        if with_baseline and BASELINE is not None:
            started = time.perf_counter()
            theirs = BASELINE.kmeans_plus_plus_init(
                vectors, codebook_size, iterations, generator=torch.Generator().manual_seed(1)
            )
            record["baseline_s"] = time.perf_counter() - started
            record["baseline_cost"] = _kmeans_cost(vectors, theirs)
        records.append(record)
        _progress(f"k-means: N={num_vectors}, K={codebook_size} done")
    return records


# --- entry points ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes and few repeats (a smoke test)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for every case (default 1)")
    parser.add_argument("--repeats", type=int, help="timed rounds per shape (default 7; 3 with --quick)")
    parser.add_argument("--warmup", type=int, help="warm-up calls per case after the first (default 1)")
    parser.add_argument("--memory-limit-gib", type=float, default=8.0, help="address-space headroom of memory runs")
    parser.add_argument("--memory-workers", type=int, default=2, help="memory subprocesses run at once")
    parser.add_argument("--skip-memory", action="store_true", help="time only")
    parser.add_argument("--skip-time", action="store_true", help="skip the timing of the quantizer cases")
    parser.add_argument("--skip-vqp", action="store_true", help="leave out vector-quantize-pytorch (seconds a call)")
    parser.add_argument("--baseline", default="main", help="git ref whose hf_vq/quantization is compared ('none': no)")
    parser.add_argument("--scaling", action="store_true", help="also time our quantizer for K up to 262144")
    parser.add_argument("--kmeans", action="store_true", help="also time k-means++ initialisation")
    parser.add_argument(
        "--no-memory-at-time-shapes", action="store_true", help="measure memory at --memory-shape only"
    )
    parser.add_argument("--memory-shape", type=Shape.parse, action="append", help="N,D,K (repeatable)")
    parser.add_argument("--time-shape", type=Shape.parse, action="append", help="N,D,K (repeatable)")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)  # internal: case key of a memory subprocess
    parser.add_argument("--shape", type=Shape.parse, help=argparse.SUPPRESS)
    parser.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_benchmark(args: argparse.Namespace) -> dict:
    time_shapes = tuple(args.time_shape or (QUICK_TIME_SHAPES if args.quick else FULL_TIME_SHAPES))
    memory_shapes = args.memory_shape or (QUICK_MEMORY_SHAPES if args.quick else FULL_MEMORY_SHAPES)
    repeats = args.repeats or (3 if args.quick else 7)
    warmup = args.warmup if args.warmup is not None else 1
    cases = available_cases(args.skip_vqp)
    results: dict = {
        "command": " ".join(["python", *sys.argv]),
        "machine": machine_info(args.threads),
        "settings": {
            "repeats": repeats,
            "warmup": warmup,
            "quick": args.quick,
            "sync_nu": SYNC_NU,
            "replace_freq": REPLACE_FREQ,
            "memory_limit_gib": args.memory_limit_gib,
        },
        "cases": [case.key for case in cases],
        "time_shapes": [asdict(shape) for shape in time_shapes],
        "memory_shapes": [asdict(shape) for shape in memory_shapes],
        "baseline": args.baseline,
        "timing": [],
        "memory": [],
    }
    with tempfile.TemporaryDirectory() as state_dir:
        for index, shape in enumerate(() if args.skip_time else time_shapes):
            started = time.perf_counter()
            shape_cases = [case for case in cases if index == 0 or not case.first_shape_only]
            results["timing"] += time_shape(shape_cases, shape, repeats, warmup, Path(state_dir))
            _progress(f"timed {shape.label} in {time.perf_counter() - started:.0f} s")
        if not args.skip_memory:
            started = time.perf_counter()
            timed_shapes = () if args.skip_time or args.no_memory_at_time_shapes else time_shapes
            results["memory"] = measure_all_memory(cases, timed_shapes, memory_shapes, args, Path(state_dir))
            _progress(f"measured peak memory in {time.perf_counter() - started:.0f} s")
    if args.scaling:
        if args.quick:
            results["scaling"] = time_scaling(3, 2048, QUICK_SCALING_CODEBOOK_SIZES)
        else:
            results["scaling"] = time_scaling(5, 16384, SCALING_CODEBOOK_SIZES)
    if args.kmeans:
        results["kmeans"] = time_kmeans(QUICK_KMEANS_CASES if args.quick else KMEANS_CASES)
    return results


def measure_all_memory(
    cases: list[Case],
    time_shapes: tuple[Shape, ...],
    memory_shapes: tuple[Shape, ...],
    args: argparse.Namespace,
    state_dir: Path,
) -> list[dict]:
    """Fresh subprocesses, a few at once: peak RSS belongs to each process, so running them side by side
    changes nothing but the wall time. --quick, a smoke test that must stay fast, measures only its
    memory shape and in this process (starting a process that imports hf_vq takes seconds)."""
    at_memory_shape = [case for case in cases if case.at_memory_shape]
    if args.quick:
        return [
            {**memory_worker(case, shape, None, 0), "process": "benchmark"}
            for shape in memory_shapes
            for case in at_memory_shape
        ]
    jobs = [
        (case, shape, True)
        for index, shape in enumerate(time_shapes)
        for case in cases
        if index == 0 or not case.first_shape_only
    ]
    jobs += [(case, shape, False) for shape in memory_shapes for case in at_memory_shape]
    with ThreadPoolExecutor(max_workers=args.memory_workers) as pool:
        records = pool.map(lambda job: measure_memory(*job, args, state_dir), jobs)
        return [{**record, "process": "fresh"} for record in records]


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    global BASELINE
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    baseline_dir = tempfile.TemporaryDirectory()
    if args.baseline != "none":
        BASELINE = load_baseline(args.baseline, Path(baseline_dir.name))
    if args.memory_worker:
        _limit_address_space(args.memory_limit_gib)
        print(json.dumps(memory_worker(CASES_BY_KEY[args.memory_worker], args.shape, args.state, args.warmup or 0)))
        return
    results = run_benchmark(args)
    results["table"] = format_tables(results)
    machine = results["machine"]
    print(f"CPU: {machine['cpu']}, nproc={machine['nproc']}, torch {machine['torch']}, threads={machine['threads']}")
    print(results["table"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
