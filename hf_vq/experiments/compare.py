"""The comparison study: Huh et al. against its successors (SimVQ, the rotation trick, EMA, LlamaGen's low-dimensional
l2 codes, FSQ) on the paper reproduction's backbones and the demo's VQGAN tokenizer (vqgan_backbone.py), same budget
and seeds, several codebook sizes.

Entry point of `scripts/compare_quantizers.py`; `main(argv)` is also what the tests call. Every run is written as
one JSON file as soon as it ends (`--resume` skips the runs whose file exists), so an interrupted study still
leaves usable results, and `--report_only` rebuilds the tables and plots from the files. The report is one
Markdown file of tables and, beside it, one PNG per (backbone, codebook size) (`report.plot_methods`).

A named plan (`--plan cpu`, study_plan.py) is several grids of runs at their own budgets in one command, one report
per step budget; the runs of all its parts share one pool of workers.

Examples (--quick smoke runs, seconds on a CPU):
    python scripts/compare_quantizers.py --quick --output_dir /tmp/vq_compare
    python scripts/compare_quantizers.py --quick --arch vqgan --methods baseline,all,fsq --output_dir /tmp/vq_compare
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from .defaults import STUDY_ARCHITECTURES
from .methods import METHODS, method_defaults
from .report import METRIC_LABELS, format_value, plot_methods, table_metrics
from .reproduce import DATASETS, DEFAULT_STEPS, RELATIVE_COST, _run_job, configure, run_jobs
from .study_plan import STUDY_PLANS, StudyPart

DEFAULT_CODEBOOK_SIZES = (512, 4096, 16384)
QUICK_CODEBOOK_SIZES = (64,)
QUICK_STEPS = 4
# The flags that define the runs; a --plan defines them itself.
PART_FLAGS = ("arch", "methods", "codebook_sizes", "seeds", "steps", "curve_points")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare VQ methods (Huh et al. and successors) on one budget and set of seeds."
    )
    parser.add_argument(
        "--plan",
        choices=list(STUDY_PLANS),
        default=None,
        help="run a named plan of several parts instead of one grid: "
        + "; ".join(f"{name}: {plan.description}" for name, plan in STUDY_PLANS.items()),
    )
    parser.add_argument(
        "--arch",
        default=None,
        help="comma-separated backbones: " + ", ".join(STUDY_ARCHITECTURES) + " (or 'all'; default autoencoder)",
    )
    parser.add_argument(
        "--methods", default=None, help="comma-separated methods (default: all): " + ", ".join(METHODS)
    )
    parser.add_argument(
        "--codebook_sizes", type=int, nargs="+", default=None, help=f"default {list(DEFAULT_CODEBOOK_SIZES)}"
    )
    parser.add_argument("--dataset", choices=DATASETS, default="fashion_mnist")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument(
        "--steps", type=int, default=None, help=f"training steps per run (default per dataset: {DEFAULT_STEPS})"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2")
    parser.add_argument(
        "--eval_size", type=int, default=None, help="test images for the final metrics (default: all, or the plan's)"
    )
    parser.add_argument(
        "--curve_size", type=int, default=None, help="test images per curve point (default 500, or the plan's)"
    )
    parser.add_argument("--curve_points", type=int, default=None, help="default 4")
    parser.add_argument("--workers", type=int, default=1, help="parallel runs (processes of one thread each)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output_dir", default="results/compare")
    parser.add_argument("--resume", action="store_true", help="skip runs whose JSON file already exists")
    parser.add_argument(
        "--report_only", action="store_true", help="only rebuild the tables from the JSON files in --output_dir"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run of the chosen runs (default: every method on the autoencoder): "
        f"at most {QUICK_STEPS} steps, one seed, {QUICK_CODEBOOK_SIZES[0]} codes",
    )
    args = parser.parse_args(argv)
    try:
        parts, eval_size, curve_size = _study_parts(args)
    except ValueError as error:
        parser.error(str(error))
    if args.quick:
        parts = tuple(_quick_part(part) for part in parts)
        eval_size, curve_size = 128, 64
    args.parts = parts
    args.eval_size = args.eval_size if args.eval_size is not None else eval_size
    args.curve_size = args.curve_size if args.curve_size is not None else curve_size
    # The methods in the order they are first named: the tables' row order.
    args.method_names = list(dict.fromkeys(method for part in parts for method in part.methods))
    return args


def _study_parts(args: argparse.Namespace) -> tuple[tuple[StudyPart, ...], int | None, int]:
    """The parts the flags ask for, and the evaluation sizes that go with them: a named plan's, or one grid's."""
    if args.plan is not None:
        given = [f"--{name}" for name in PART_FLAGS if getattr(args, name) is not None]
        if given:
            raise ValueError(
                f"--plan {args.plan} sets the backbones, methods, codebook sizes, seeds and steps itself; "
                f"drop {' '.join(given)}, or drop --plan to choose them"
            )
        plan = STUDY_PLANS[args.plan]
        return plan.parts, plan.eval_size, plan.curve_size
    arch = args.arch or "autoencoder"
    part = StudyPart(
        architectures=STUDY_ARCHITECTURES if arch == "all" else tuple(a.strip() for a in arch.split(",") if a.strip()),
        codebook_sizes=tuple(args.codebook_sizes or DEFAULT_CODEBOOK_SIZES),
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods else tuple(METHODS),
        seeds=tuple(args.seeds if args.seeds is not None else (0, 1, 2)),
        steps=args.steps if args.steps is not None else DEFAULT_STEPS[args.dataset],
        curve_points=args.curve_points if args.curve_points is not None else 4,
    )
    return (part,), None, 500


def _quick_part(part: StudyPart) -> StudyPart:
    return replace(
        part,
        codebook_sizes=QUICK_CODEBOOK_SIZES,
        seeds=part.seeds[:1],
        steps=min(part.steps, QUICK_STEPS),
        curve_points=1,
    )


def run_name(run: dict) -> str:
    return (
        f"{run['dataset']}_{run['architecture']}_K{run['nominal_codebook_size']}_{run['variant']}"
        f"_seed{run['seed']}_steps{run['steps']}.json"
    )


def build_jobs(args: argparse.Namespace) -> list[dict]:
    """One job per (part, backbone, codebook size, method, seed); a run named by two parts is run once."""
    jobs: dict[str, dict] = {}
    for part in args.parts:
        for arch in part.architectures:
            base = configure(arch, args.dataset, args.quick)
            for size in part.codebook_sizes:
                for method in part.methods:
                    defaults = method_defaults(method, replace(base, codebook_size=size))
                    for seed in part.seeds:
                        job = {
                            "architecture": arch,
                            "defaults": defaults,
                            "variant": method,
                            "seed": seed,
                            "dataset": args.dataset,
                            "steps": part.steps,
                            "curve_points": part.curve_points,
                            "curve_size": args.curve_size,
                            "eval_size": args.eval_size,
                            "device": args.device,
                            "nominal_codebook_size": size,
                        }
                        jobs.setdefault(run_name(job), job)
    # The slowest runs first, so that parallel workers finish together.
    return sorted(
        jobs.values(),
        key=lambda job: (-RELATIVE_COST[job["architecture"]] * job["steps"], -job["nominal_codebook_size"]),
    )


def run_study_job(job: dict) -> dict:
    return {**_run_job(job), "nominal_codebook_size": job["nominal_codebook_size"]}


def main(argv: list[str] | None = None) -> dict:
    """Run the study (or rebuild its report); returns {"runs": [...], "report": markdown, "plots": [...]} (the runs,
    report and plots of every step budget in the study, the reports joined)."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        jobs = build_jobs(args)
        if args.resume:
            jobs = [job for job in jobs if not (output_dir / run_name(job)).exists()]
        budgets = sorted({job["steps"] for job in jobs})
        print(f"{len(jobs)} runs ({', '.join(map(str, budgets)) or 'no'} steps), {args.workers} worker(s)", flush=True)
        done, start = [0], time.perf_counter()

        def record(run: dict) -> None:
            done[0] += 1
            (output_dir / run_name(run)).write_text(json.dumps(run, indent=2))
            metrics = {k: round(v, 4) for k, v in run["metrics"].items()}
            print(
                f"[{done[0]}/{len(jobs)} {time.perf_counter() - start:.0f}s] "
                f"{run['architecture']}/K{run['nominal_codebook_size']}/"
                f"{run['variant']}/seed{run['seed']}/{run['steps']} steps: {metrics}",
                flush=True,
            )

        run_jobs(jobs, args, record, job_function=run_study_job)
    results = [write_report(output_dir, args, argv, steps) for steps in sorted({part.steps for part in args.parts})]
    return {
        "runs": [run for result in results for run in result["runs"]],
        "report": "\n\n".join(r["report"] for r in results),
        "plots": [plot for result in results for plot in result["plots"]],
    }


def write_report(output_dir: Path, args: argparse.Namespace, argv: list[str], steps: int) -> dict:
    """The tables and plots of every run at `steps` steps in `output_dir` (also runs of earlier commands)."""
    runs = [json.loads(path.read_text()) for path in sorted(output_dir.glob(f"{args.dataset}_*_steps{steps}.json"))]
    report = markdown_report(runs, "python scripts/compare_quantizers.py " + shlex.join(argv), args.method_names)
    stem = output_dir / f"compare_{args.dataset}_steps{steps}"
    stem.with_suffix(".md").write_text(report + "\n")
    print(report)
    plots = write_plots(runs, args.method_names, stem)
    print("written: " + ", ".join(str(path) for path in [stem.with_suffix(".md"), *plots]))
    return {"runs": runs, "report": report, "plots": plots}


def group_study_runs(runs: list[dict], method_order: list[str]) -> dict[tuple[str, int], dict[str, list[dict]]]:
    """{(backbone, nominal codebook size): {method: [run per seed]}}, sorted by backbone and size; methods in
    `method_order`, then any others (runs in the folder from other commands) alphabetically."""
    groups: dict[tuple[str, int], dict[str, list[dict]]] = {}
    for run in runs:
        groups.setdefault((run["architecture"], run["nominal_codebook_size"]), {}).setdefault(
            run["variant"], []
        ).append(run)
    ordered = {}
    for key, by_method in sorted(groups.items()):
        order = [m for m in method_order if m in by_method] + sorted(m for m in by_method if m not in method_order)
        ordered[key] = {method: by_method[method] for method in order}
    return ordered


def write_plots(runs: list[dict], method_order: list[str], stem: Path) -> list[Path]:
    """One PNG per (backbone, codebook size) beside the Markdown report: `<stem>_<backbone>_K<size>.png`."""
    plots = []
    for (arch, size), by_method in group_study_runs(runs, method_order).items():
        first = next(iter(by_method.values()))[0]
        title = (
            f"{arch}, {size} codes, {first['steps']} steps ({first['dataset']}; bars: mean ± std over seeds, "
            "dots: seeds)"
        )
        plot = plot_methods(by_method, first["task"], title, f"{stem}_{arch}_K{size}.png")
        if plot is None:  # no matplotlib: plot_methods said so once, the other groups would say it again
            return []
        plots.append(plot)
    return plots


def _cpu_ms_per_step(run: dict) -> float:
    # Runs written before the step timings moved out of "metrics" (the first study runs) kept them there.
    return run.get("cpu_ms_per_step", run["metrics"].get("cpu_ms_per_step", float("nan")))


def markdown_report(runs: list[dict], command: str, method_order: list[str]) -> str:
    """One table per (backbone, nominal codebook size): methods as rows, mean ± std over seeds."""
    parts = [f"Command: `{command}`", ""]
    for (arch, size), by_method in group_study_runs(runs, method_order).items():
        task = next(iter(by_method.values()))[0]["task"]
        metrics = table_metrics(task)
        header = ["method", *(METRIC_LABELS[m] for m in metrics), "ms / step", "seeds"]
        rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method, method_runs in by_method.items():
            cells = [format_value(m, [r["metrics"][m] for r in method_runs]) for m in metrics]
            if len(method_runs) == 1:  # one seed: no spread to show
                cells = [cell.split(" ± ")[0] for cell in cells]
            step_ms = statistics.fmean(_cpu_ms_per_step(r) for r in method_runs)
            rows.append(f"| {method} | " + " | ".join(cells) + f" | {step_ms:.0f} | {len(method_runs)} |")
        steps = next(iter(by_method.values()))[0]["steps"]
        parts += [
            f"### {arch}, {size} codes, {steps} steps (mean ± std over seeds, a single value for one seed; "
            "ms / step: CPU time of a training step)",
            "",
            *rows,
            "",
        ]
    return "\n".join(parts)
