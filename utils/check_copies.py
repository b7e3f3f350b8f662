"""Keep the `# Copied from` blocks of hf_vq honest, as transformers' `utils/check_copies.py` keeps its own.

Why copies at all: a model file that `register_for_auto_class` copies into a saved folder must run there on its own
(`trust_remote_code=True` without hf_vq installed), importing only the files saved beside it. The MaskGIT prior's
folder carries `modeling_maskgit.py` and `configuration_maskgit.py`, not the token ViT's files, so the transformer
block both models use is written in both files; a marker on the copy names the original and the renames:

    # Copied from hf_vq.models.token_vit.modeling_token_vit.TokenViTLayer with TokenViT->MaskGIT
    class MaskGITLayer(GradientCheckpointingLayer):

This check compares each marked class or function with its original (renames applied) and fails on any difference;
`--fix_and_overwrite` rewrites the copies from their originals.

Usage (from the repository root):

    python utils/check_copies.py                      # exit status 1 and a list of the stale copies
    python utils/check_copies.py --fix_and_overwrite  # bring every copy up to date
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "hf_vq"
MARKER = re.compile(
    rf"^(?P<indent>\s*)# Copied from (?P<target>{PACKAGE}(?:\.\w+)+)(?:\s+with\s+(?P<renames>.+?))?\s*$"
)
RENAME = re.compile(r"^\s*(?P<old>\w+)->(?P<new>\w+)\s*$")


@dataclass
class Copy:
    """One marked block: where it sits, what it copies, and the renames that turn the original into it."""

    path: Path
    start: int  # index of the block's first line (the one after the marker)
    end: int  # index one past its last line
    target: str
    renames: list[tuple[str, str]]


def block_end(lines: list[str], start: int) -> int:
    """One past the last line of the `def`/`class` block (with its decorators) that starts at `lines[start]`."""
    indent = len(lines[start]) - len(lines[start].lstrip())
    index = start
    while lines[index].lstrip().startswith("@"):  # decorators belong to the block
        index += 1
    index += 1
    end = index
    while index < len(lines):
        line = lines[index]
        if line.strip() and len(line) - len(line.lstrip()) <= indent and not line.lstrip().startswith(")"):
            break
        if line.strip():
            end = index + 1
        index += 1
    return end


def shown(path: Path) -> str:
    """`path` relative to the repository when it lies inside it (the messages name files as a reader finds them)."""
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def parse_renames(text: str | None, where: str) -> list[tuple[str, str]]:
    if not text:
        return []
    renames = []
    for part in text.split(","):
        match = RENAME.match(part)
        if match is None:
            raise ValueError(f"{where}: cannot read the rename {part.strip()!r}; write `with Old->New[, Old2->New2]`")
        renames.append((match["old"], match["new"]))
    return renames


def find_copies(path: Path) -> list[Copy]:
    lines = path.read_text(encoding="utf-8").splitlines()
    copies = []
    for index, line in enumerate(lines):
        match = MARKER.match(line)
        if match is None:
            continue
        where = f"{shown(path)}:{index + 1}"
        start = index + 1
        if start >= len(lines) or not re.match(r"\s*(@|def |class )", lines[start]):
            raise ValueError(f"{where}: a `# Copied from` marker must sit right above a def or class")
        copies.append(
            Copy(path, start, block_end(lines, start), match["target"], parse_renames(match["renames"], where))
        )
    return copies


def original_source(target: str) -> list[str]:
    """Lines of the object `target` (`hf_vq.pkg.module.Name` or `...module.Class.method`), read from its file."""
    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_path = REPO_ROOT.joinpath(*parts[:split]).with_suffix(".py")
        if module_path.is_file():
            break
    else:
        raise ValueError(f"`# Copied from {target}`: no module of that name under {REPO_ROOT}")
    lines = module_path.read_text(encoding="utf-8").splitlines()
    start, indent = 0, ""
    for name in parts[split:]:
        pattern = re.compile(rf"^{indent}(?:async\s+)?(?:def|class)\s+{name}\b")
        found = next((i for i in range(start, len(lines)) if pattern.match(lines[i])), None)
        if found is None:
            raise ValueError(f"`# Copied from {target}`: {name} is not defined in {shown(module_path)}")
        while found > 0 and lines[found - 1].strip().startswith("@"):
            found -= 1
        start, indent = found, indent + "    "
    return lines[start : block_end(lines, start)]


def expected_source(copy: Copy, indent: str) -> list[str]:
    """The original, renamed and re-indented to where the copy sits."""
    original = original_source(copy.target)
    original_indent = len(original[0]) - len(original[0].lstrip())
    text = "\n".join(line[original_indent:] if line.strip() else "" for line in original)
    for old, new in copy.renames:
        text = text.replace(old, new)
    return [indent + line if line else "" for line in text.split("\n")]


def check_file(path: Path, overwrite: bool) -> list[str]:
    """The stale copies of one file, as messages; with `overwrite`, rewrite them (from the last, so that the line
    numbers of the earlier ones stay valid)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    stale = []
    for copy in reversed(find_copies(path)):
        indent = lines[copy.start][: len(lines[copy.start]) - len(lines[copy.start].lstrip())]
        expected = expected_source(copy, indent)
        if lines[copy.start : copy.end] != expected:
            stale.append(f"{shown(path)}:{copy.start} differs from {copy.target}")
            lines[copy.start : copy.end] = expected
    if stale and overwrite:
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return stale[::-1]


def check_copies(overwrite: bool = False) -> list[str]:
    """Every stale `# Copied from` block of the package (empty when all are up to date)."""
    return [message for path in sorted((REPO_ROOT / PACKAGE).rglob("*.py")) for message in check_file(path, overwrite)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fix_and_overwrite", action="store_true", help="rewrite stale copies from their originals")
    args = parser.parse_args(argv)
    stale = check_copies(overwrite=args.fix_and_overwrite)
    if stale and not args.fix_and_overwrite:
        print(
            "These `# Copied from` blocks differ from their originals; run "
            "`python utils/check_copies.py --fix_and_overwrite` (or change the original instead):",
            file=sys.stderr,
        )
        print("\n".join(f"  {message}" for message in stale), file=sys.stderr)
        return 1
    for message in stale:
        print(f"rewrote {message.split(' differs')[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
