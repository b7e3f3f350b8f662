"""Named plans of the comparison study: each a list of parts (backbones x codebook sizes x methods x seeds at one
step budget), so that every table of docs/results.md comes from one command.

`cpu` is the study as run on the 2-core CPU machine: every method at 400 steps on the autoencoder (512 codes), the
leaders at 4,096 and 16,384 codes, the VQGAN tokenizer and the three classifiers with seven methods, the nu sweep,
and the leaders and the paper's methods alone at 1,000 steps. `full` is the issue's whole grid (every backbone,
method and codebook size, 1,000 steps, 3 seeds: about 60 CPU hours), for a larger machine.

Example:
    >>> plan = STUDY_PLANS["cpu"]
    >>> sum(part.num_runs for part in plan.parts) > 100
    True
    >>> StudyPart(("autoencoder",), (512,), ("baseline", "fsq"), seeds=(0,)).num_runs
    2
"""

from __future__ import annotations

from dataclasses import dataclass

from .defaults import STUDY_ARCHITECTURES
from .methods import METHODS, NU_SWEEP

# The seven methods run on every backbone: STE, Huh et al.'s four together, and the successors.
CORE_METHODS = ("baseline", "all", "simvq", "rotation_replace", "ema", "l2_lowdim", "fsq")
NU_METHODS = tuple(f"sync_nu{nu:g}" for nu in NU_SWEEP)
SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class StudyPart:
    """One block of runs: every (backbone, codebook size, method, seed) at `steps` steps, with `curve_points`
    evaluations of the test metric during training."""

    architectures: tuple[str, ...]
    codebook_sizes: tuple[int, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...] = SEEDS
    steps: int = 400
    curve_points: int = 6

    def __post_init__(self):
        for names, known, what in (
            (self.architectures, STUDY_ARCHITECTURES, "backbone"),
            (self.methods, METHODS, "method"),
        ):
            unknown = [name for name in names if name not in known]
            if unknown:
                raise ValueError(f"unknown {what}(s) {unknown} in a study part; choose from {list(known)}")
        if self.steps < 1 or self.curve_points < 1 or not self.seeds or not self.codebook_sizes:
            raise ValueError(f"a study part needs steps >= 1, curve_points >= 1, seeds and codebook sizes; got {self}")

    @property
    def num_runs(self) -> int:
        return len(self.architectures) * len(self.codebook_sizes) * len(self.methods) * len(self.seeds)


@dataclass(frozen=True)
class StudyPlan:
    """Parts plus the evaluation sizes they share (test images for the final metrics and for the curves)."""

    description: str
    parts: tuple[StudyPart, ...]
    eval_size: int | None = 3000
    curve_size: int = 500


CPU_PLAN = StudyPlan(
    "the study of docs/results.md, sized for a 2-core CPU",
    (
        # The autoencoder: every method at 512 codes, the leaders at 4,096 and 16,384.
        StudyPart(("autoencoder",), (512,), (*CORE_METHODS[:3], "rotation", *CORE_METHODS[3:], "alternating_sgd")),
        StudyPart(("autoencoder",), (512,), ("all_sgd", "simvq_replace", "affine_rotation"), seeds=(0,)),
        StudyPart(("autoencoder",), (512,), NU_METHODS),
        StudyPart(("autoencoder",), (4096,), ("baseline", "all", "simvq", "ema", "l2_lowdim", "fsq")),
        StudyPart(("autoencoder",), (16384,), ("baseline", "all", "simvq", "ema", "l2_lowdim", "fsq")),
        # The demo's VQGAN tokenizer and the classifiers (their reproduction's 1,024 codes).
        StudyPart(("vqgan",), (512,), CORE_METHODS),
        StudyPart(("vqgan",), (512,), ("affine", "sync", *NU_METHODS), seeds=(0,)),
        StudyPart(("alexnet", "vit", "resnet18"), (1024,), CORE_METHODS),
        # The longer budget: is "no effect at 400 steps" no effect at all?
        StudyPart(
            ("autoencoder",),
            (512,),
            ("baseline", "affine", "sync", "all", "fsq", "l2_lowdim"),
            steps=1000,
            curve_points=5,
        ),
        StudyPart(
            ("vqgan",),
            (512,),
            ("baseline", "affine", "sync", "all", "fsq", "ema", "rotation_replace"),
            steps=1000,
            curve_points=5,
        ),
    ),
)

FULL_PLAN = StudyPlan(
    "the issue's whole grid: every backbone, method and codebook size at 1,000 steps (about 60 CPU hours)",
    (StudyPart(STUDY_ARCHITECTURES, (512, 4096, 16384), tuple(METHODS), steps=1000, curve_points=5),),
    eval_size=None,
)

STUDY_PLANS: dict[str, StudyPlan] = {"cpu": CPU_PLAN, "full": FULL_PLAN}
