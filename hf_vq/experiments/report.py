"""Tables and plots of the ablation: mean and spread over seeds per (architecture, variant).

Markdown tables, one per architecture (variants as rows) plus a paper-style summary (architectures as
rows, "metric / perplexity" per variant, like Table 2 of Huh et al.), and a PNG with the test metric
over training steps per variant; for the comparison study, a PNG of bars per method (`plot_methods`).
Matplotlib is optional: without it the plot is skipped with a message.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from .defaults import VARIANT_METHODS

METRIC_LABELS = {
    "accuracy": "test accuracy (%)",
    "mse": "test MSE",
    "psnr": "PSNR (dB)",
    "perplexity": "perplexity",
    "usage": "codebook usage (%)",
}
PERCENT_METRICS = ("accuracy", "usage")


def group_runs(runs: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """{architecture: {variant: [run, ...]}} in the order the runs were given (variants in table order)."""
    grouped: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        grouped[run["architecture"]][run["variant"]].append(run)
    order = list(VARIANT_METHODS)
    return {
        arch: dict(sorted(by_variant.items(), key=lambda item: order.index(item[0])))
        for arch, by_variant in grouped.items()
    }


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single seed)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def format_value(metric: str, values: list[float]) -> str:
    scale = 100.0 if metric in PERCENT_METRICS else 1.0
    mean, spread = mean_and_spread([v * scale for v in values])
    digits = 4 if metric == "mse" else 1
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def table_metrics(task: str) -> tuple[str, ...]:
    return ("accuracy", "perplexity", "usage") if task == "classification" else ("mse", "psnr", "perplexity", "usage")


def architecture_table(task: str, by_variant: dict[str, list[dict]], codebook_size: int) -> str:
    """Markdown table for one architecture: one row per variant, mean ± std over its seeds."""
    metrics = table_metrics(task)
    header = [
        "variant",
        *(METRIC_LABELS[m] + (f" (of {codebook_size})" if m == "perplexity" else "") for m in metrics),
        "seeds",
        "CPU s / run",
    ]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, runs in by_variant.items():
        cells = [format_value(m, [r["metrics"][m] for r in runs]) for m in metrics]
        cpu = statistics.fmean(r["cpu_seconds"] for r in runs)
        rows.append(f"| {variant} | " + " | ".join(cells) + f" | {len(runs)} | {cpu:.0f} |")
    return "\n".join(rows)


def summary_table(task: str, grouped: dict[str, dict[str, list[dict]]]) -> str:
    """Paper-style table (Huh et al. Table 2): architectures as rows, "metric / perplexity" means per variant."""
    metric = "accuracy" if task == "classification" else "mse"
    variants = [v for v in VARIANT_METHODS if any(v in by_variant for by_variant in grouped.values())]
    rows = ["| model | " + " | ".join(variants) + " |", "|" + "---|" * (len(variants) + 1)]
    for arch, by_variant in grouped.items():
        cells = []
        for variant in variants:
            runs = by_variant.get(variant, [])
            if not runs:
                cells.append("-")
                continue
            scale = 100.0 if metric in PERCENT_METRICS else 1.0
            value = statistics.fmean(r["metrics"][metric] * scale for r in runs)  # as in format_value: same rounding
            perplexity = statistics.fmean(r["metrics"]["perplexity"] for r in runs)
            cells.append(f"{value:.{4 if metric == 'mse' else 1}f} / {perplexity:.1f}")
        rows.append(f"| {arch} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def markdown_report(runs: list[dict], command: str, codebook_sizes: dict[str, int], tasks: dict[str, str]) -> str:
    """The whole Markdown report: the command, the summary tables and one detailed table per architecture."""
    grouped = group_runs(runs)
    parts = [f"Command: `{command}`", ""]
    for task in dict.fromkeys(tasks[arch] for arch in grouped):
        archs = {arch: by_variant for arch, by_variant in grouped.items() if tasks[arch] == task}
        label = "test accuracy (%) / perplexity" if task == "classification" else "test MSE / perplexity"
        parts += [f"### {task}: {label} (mean over seeds)", "", summary_table(task, archs), ""]
    for arch, by_variant in grouped.items():
        parts += [
            f"### {arch} ({tasks[arch]}, mean ± std over seeds)",
            "",
            architecture_table(tasks[arch], by_variant, codebook_sizes[arch]),
            "",
        ]
    return "\n".join(parts)


def _pyplot():
    """matplotlib.pyplot on the file-only backend, or None (with a message) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the plot (pip install matplotlib to get it)")
        return None
    return plt


def _save(plt, figure, path: str | Path) -> Path:
    """Write the figure as a PNG (creating its folder) and free it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_curves(runs: list[dict], tasks: dict[str, str], path: str | Path) -> Path | None:
    """Test metric over training steps, one panel per architecture, one line per variant (mean over
    seeds, shaded min-max). Returns the PNG's path, or None (with a message) without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    grouped = group_runs(runs)
    figure, axes = plt.subplots(1, len(grouped), figsize=(4.2 * len(grouped), 3.6), squeeze=False)
    for axis, (arch, by_variant) in zip(axes[0], grouped.items()):
        metric = "accuracy" if tasks[arch] == "classification" else "mse"
        for variant, variant_runs in by_variant.items():
            _plot_variant(axis, variant, variant_runs, 100.0 if metric == "accuracy" else 1.0)
        axis.set_title(arch)
        axis.set_xlabel("training step")
        axis.set_ylabel(METRIC_LABELS[metric] + " (test subset)")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    return _save(plt, figure, path)


def plot_methods(by_method: dict[str, list[dict]], task: str, title: str, path: str | Path) -> Path | None:
    """One backbone and codebook size of the comparison study: the headline metric (the table's first column) and
    the perplexity per method as bars (mean over seeds, ± std as error bars, each seed a dot), methods in the
    table's order from the top; and, when the runs recorded curves of several points, the metric over training
    steps as in `plot_curves`. Returns the PNG's path, or None (with a message) without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    metric = table_metrics(task)[0]
    scale = 100.0 if metric in PERCENT_METRICS else 1.0
    with_curves = all(len(run["curve"]) > 1 for runs in by_method.values() for run in runs)
    panels = 3 if with_curves else 2
    figure, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 1.4 + 0.3 * len(by_method)), squeeze=False)
    for axis, (name, factor) in zip(axes[0], ((metric, scale), ("perplexity", 1.0))):
        _method_bars(
            axis, {method: [run["metrics"][name] * factor for run in runs] for method, runs in by_method.items()}
        )
        axis.set_xlabel(METRIC_LABELS[name])
    if with_curves:
        for method, runs in by_method.items():
            _plot_variant(axes[0][2], method, runs, scale)
        axes[0][2].set_xlabel("training step")
        axes[0][2].set_ylabel(METRIC_LABELS[metric] + " (test subset)")
        axes[0][2].grid(alpha=0.3)
        axes[0][2].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return _save(plt, figure, path)


def _method_bars(axis, values: dict[str, list[float]]) -> None:
    """Horizontal bars of the mean per method, error bars of the seeds' std, a dot per seed; the first on top."""
    positions = range(len(values))
    means, spreads = zip(*(mean_and_spread(seed_values) for seed_values in values.values()))
    axis.barh(positions, means, xerr=spreads, color="tab:blue", alpha=0.6, capsize=2)
    for position, seed_values in zip(positions, values.values()):
        axis.plot(seed_values, [position] * len(seed_values), "k.", markersize=3)
    axis.set_yticks(list(positions), list(values), fontsize=7)
    axis.invert_yaxis()
    axis.grid(axis="x", alpha=0.3)


def _plot_variant(axis, variant: str, runs: list[dict], scale: float) -> None:
    steps = [point["step"] for point in runs[0]["curve"]]
    per_step = list(zip(*([point["metric"] * scale for point in run["curve"]] for run in runs)))
    means = [statistics.fmean(values) for values in per_step]
    line = axis.plot(steps, means, label=variant, linewidth=2.2 if variant in ("baseline", "all") else 1.2)[0]
    if len(runs) > 1:
        axis.fill_between(
            steps, [min(v) for v in per_step], [max(v) for v in per_step], color=line.get_color(), alpha=0.15
        )
