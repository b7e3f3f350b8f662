"""Mutation smoke check: do the fast tests catch small, plausible bugs?

Each mutant of `scripts/mutants.toml` replaces one snippet of one file (it must occur exactly once) in a temporary
copy of the repository - never in the working tree - and runs the test files that guard that code (`-m "not slow"`,
`-x`, optionally `-k`) with a timeout. A failing test run means the mutant was caught; a passing one means the tests
let the bug through. Before the mutants, the same test selections run on the unmutated copy: they must pass, or
every mutant would look caught.

    nice -n 10 python scripts/mutation_check.py                      # all mutants, table on stdout
    nice -n 10 python scripts/mutation_check.py --json outputs/mutation.json --only alternating
    python scripts/mutation_check.py --list

Exit status: 0 when every mutant was caught, 1 when one was missed (or a snippet no longer matches its file), so the
check can run in CI. How to add mutants for new code: docs/mutation.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MUTANTS = REPO / "scripts" / "mutants.toml"
# What the tests need from the repository; the copy holds only these.
COPIED = ("hf_vq", "tests", "configs", "model_cards", "scripts", "setup.cfg", "pyproject.toml")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")


@dataclass
class Mutant:
    name: str
    file: str
    original: str
    mutated: str
    tests: list[str]
    keyword: str | None = None

    def pytest_args(self) -> list[str]:
        return [*self.tests, *(["-k", self.keyword] if self.keyword else [])]


@dataclass
class Outcome:
    name: str
    file: str
    status: str  # caught | missed | timeout | error | stale
    seconds: float
    detail: str = ""
    tests: list[str] = field(default_factory=list)


def load_mutants(path: Path) -> list[Mutant]:
    entries = tomllib.loads(path.read_text()).get("mutant", [])
    mutants = []
    for number, entry in enumerate(entries, start=1):
        unknown = set(entry) - set(Mutant.__dataclass_fields__)
        missing = {"name", "file", "original", "mutated", "tests"} - set(entry)
        if unknown or missing:
            raise SystemExit(
                f"{path}: mutant #{number} ({entry.get('name', '?')}): unknown keys {sorted(unknown)}, "
                f"missing keys {sorted(missing)}"
            )
        mutants.append(Mutant(**entry))
    return mutants


def make_copy(destination: Path) -> Path:
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=IGNORED)
        elif source.is_file():
            shutil.copy2(source, destination / name)
    return destination


def child_environment(copy: Path, threads: int) -> dict[str, str]:
    """The copy first on the path (ahead of an editable install of the working tree), few threads."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy), str(copy / "tests"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_imports_from_copy(copy: Path, env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import hf_vq; print(hf_vq.__file__)"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    location = Path(result.stdout.strip() or "?").resolve()
    if result.returncode != 0 or copy.resolve() not in location.parents:
        raise SystemExit(
            f"the test processes would import hf_vq from {location}, not from the copy {copy}: {result.stderr[-2000:]}"
        )


def run_tests(copy: Path, env: dict[str, str], args: list[str], timeout: float) -> tuple[str, float, str]:
    """('passed' | 'failed' | 'timeout' | 'error', seconds, last lines of output)."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow", *args]
    start = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start, f"no result after {timeout:.0f} s"
    seconds = time.perf_counter() - start
    tail = " | ".join((result.stdout + result.stderr).strip().splitlines()[-3:])
    # pytest: 0 all passed, 1 some failed, 2 interrupted (e.g. an import error while collecting), 5 nothing collected.
    status = {0: "passed", 1: "failed", 2: "failed"}.get(result.returncode, "error")
    return status, seconds, tail


def baseline_selections(mutants: list[Mutant]) -> list[list[str]]:
    """One unmutated run per set of test files, selecting every test that some mutant selects there."""
    keywords: dict[tuple[str, ...], set[str] | None] = {}
    for mutant in mutants:
        files = tuple(mutant.tests)
        if mutant.keyword is None or (files in keywords and keywords[files] is None):
            keywords[files] = None
        else:
            keywords.setdefault(files, set()).add(f"({mutant.keyword})")
    return [
        [*files, *(["-k", " or ".join(sorted(words))] if words else [])] for files, words in sorted(keywords.items())
    ]


def apply(copy: Path, mutant: Mutant) -> str | None:
    """Write the mutated file into the copy; returns the original text, or None when the snippet does not occur
    exactly once (the mutant list is stale)."""
    path = copy / mutant.file
    text = path.read_text()
    if text.count(mutant.original) != 1:
        return None
    path.write_text(text.replace(mutant.original, mutant.mutated))
    return text


def check(mutants: list[Mutant], timeout: float, threads: int) -> list[Outcome]:
    with tempfile.TemporaryDirectory(prefix="hf_vq_mutation_") as scratch:
        copy = make_copy(Path(scratch) / "repo")
        env = child_environment(copy, threads)
        check_imports_from_copy(copy, env)
        for args in baseline_selections(mutants):
            status, seconds, tail = run_tests(copy, env, args, timeout)
            print(f"baseline  {status:7s} {seconds:6.1f}s  {' '.join(args)}", flush=True)
            if status != "passed":
                raise SystemExit(f"the unmutated tests do not pass ({' '.join(args)}): {tail}")
        outcomes = []
        for mutant in mutants:
            original = apply(copy, mutant)
            if original is None:
                outcome = Outcome(
                    mutant.name,
                    mutant.file,
                    "stale",
                    0.0,
                    "the original snippet does not occur exactly once: update scripts/mutants.toml",
                    mutant.tests,
                )
            else:
                try:
                    status, seconds, tail = run_tests(copy, env, mutant.pytest_args(), timeout)
                finally:
                    (copy / mutant.file).write_text(original)
                verdict = {"failed": "caught", "passed": "missed"}.get(status, status)
                outcome = Outcome(mutant.name, mutant.file, verdict, round(seconds, 1), tail, mutant.tests)
            print(f"{outcome.status:7s} {outcome.seconds:6.1f}s  {mutant.name}", flush=True)
            outcomes.append(outcome)
    return outcomes


def table(outcomes: list[Outcome]) -> str:
    rows = ["| mutant | file | result | seconds |", "|---|---|---|---|"]
    rows += [f"| {o.name} | `{o.file}` | {o.status} | {o.seconds:.0f} |" for o in outcomes]
    caught = sum(o.status == "caught" for o in outcomes)
    rows.append(f"\n{caught} of {len(outcomes)} mutants caught")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=Path, default=DEFAULT_MUTANTS, help="TOML list of mutants")
    parser.add_argument("--only", default=None, help="run the mutants whose name contains this text")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per test run (one mutant)")
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads of the test processes")
    parser.add_argument("--json", type=Path, default=None, help="also write the outcomes to this JSON file")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)

    mutants = load_mutants(args.mutants)
    if args.only:
        mutants = [m for m in mutants if args.only in m.name]
    if args.list or not mutants:
        print("\n".join(f"{m.name}  ({m.file})" for m in mutants) or "no mutant matches")
        return 0
    outcomes = check(mutants, args.timeout, args.threads)
    print()
    print(table(outcomes))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=2))
    return 0 if all(o.status == "caught" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
