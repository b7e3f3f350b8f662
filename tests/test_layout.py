"""Guards of the package's shape (issue 21): commands read typed configs, never probe a flag namespace, and no module
imports a layer above its own (docs: /work/shared/DESIGN.md's layers; the README's "Layout")."""

import ast
from pathlib import Path

import hf_vq

PACKAGE = Path(hf_vq.__file__).parent
# Entry points and the study sit on top: nothing below them may import them, not even inside a function.
TOP_LAYER = ("hf_vq.cli", "hf_vq.demo", "hf_vq.experiments")
LOWER_LAYERS = ("quantization", "models", "pipelines", "schedulers", "data", "training", "evaluation", "hub")


def _python_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (PACKAGE / folder).rglob("*.py"))


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module `path` imports (absolute name), at any depth of the file."""
    package = ".".join(("hf_vq", *path.relative_to(PACKAGE).parent.parts))
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            module = f"{base}.{node.module}" if node.level and node.module else (node.module or base)
            found += [(node.lineno, module)] + [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def test_no_module_imports_the_entry_points_or_the_study():
    upward = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
        for path in _python_files(*LOWER_LAYERS)
        for line, module in _imported_modules(path)
        if module in TOP_LAYER or module.startswith(tuple(f"{top}." for top in TOP_LAYER))
    ]
    assert not upward, upward


def test_the_quantizer_imports_no_hugging_face_library():
    hugging_face = ("transformers", "diffusers", "accelerate", "huggingface_hub", "datasets")
    found = [
        f"{path.name}:{line} imports {module}"
        for path in _python_files("quantization")
        for line, module in _imported_modules(path)
        if module.split(".")[0] in hugging_face
    ]
    assert not found, found


def test_commands_read_typed_configs_without_probing_for_flags():
    """`getattr(args, "flag", default)` / `hasattr(config, "flag")` hide which command has a flag: a command's config
    is a dataclass whose fields are known (isinstance on its flag group says whether it has one)."""
    probes = []
    for path in _python_files("training", "hub", "evaluation"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and (node.func.id == "hasattr" or (node.func.id == "getattr" and len(node.args) == 3))
                and isinstance(node.args[0], ast.Name)
                and node.args[0].id in ("args", "config")
                and isinstance(node.args[1], ast.Constant)
            ):
                probes.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {ast.unparse(node)}")
    assert not probes, probes
