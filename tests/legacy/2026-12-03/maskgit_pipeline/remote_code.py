"""Make a saved diffusers pipeline folder load where hf_vq is not installed: every component's code travels with it.

`DiffusionPipeline.from_pretrained(folder_or_repo, trust_remote_code=True)` finds code in two places only:

- the pipeline class in a `<module>.py` at the root, named by `_class_name: [module, class]` in `model_index.json`
  (its relative imports are copied beside it: one level from a folder, recursively from the Hub);
- a component's class in `<component>/<module>.py`, named by `<component>: [module, class]`. Of a folder with weights,
  diffusers downloads only the weights, `config.json` and that one file, and copies only that file's direct relative
  imports, into a namespace all local components share.

A model needs more than one file (the VQGAN's modeling file imports its config, image processor and the quantizer's
six files). So `save_pretrained_with_code` writes, into each component folder whose class is not diffusers' or
transformers' own, an entry file `hf_vq_component.py` that embeds the component's source files (the ones
`register_for_auto_class` already wrote beside it, so the folder also loads with `AutoModel.from_pretrained(...,
trust_remote_code=True)`) and imports them as one package from the dynamic-modules cache (`HF_MODULES_CACHE`, where
transformers and diffusers put remote code too), under a name derived from their hash. It copies the pipeline file and
this file to the root. Nothing depends on hf_vq being importable, from a folder or from the Hub, online or offline.

Importing this file (the pipeline files do) also puts a stand-in module under the entry file's name in `sys.modules`,
where diffusers looks for a component class it does not find in the component's folder: a missing component folder
then fails with an error that names it, and a component passed to `from_pretrained(..., vqgan=...)` is accepted.

This file imports only the standard library, transformers and diffusers: it is itself copied into saved folders, so
that a pipeline loaded from remote code saves a complete folder again.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import types
from pathlib import Path
from typing import Any, Callable

from transformers.dynamic_module_utils import get_relative_import_files

ENTRY_MODULE = "hf_vq_component"
# Components of these libraries load through diffusers' own tables and need no code in the folder.
NATIVE_LIBRARIES = ("diffusers", "transformers")

ENTRY_TEMPLATE = '''"""Code of the `{component}` component of this pipeline, for `DiffusionPipeline.from_pretrained(...,
trust_remote_code=True)` where hf_vq is not installed. Written by hf_vq when the pipeline was saved.

diffusers downloads and imports only this file of a component folder (besides weights and config), so the component's
source files, the same as the .py files beside this one, are embedded below and imported as one package from the
dynamic-modules cache, named after their hash. Files: {files}.
"""

import hashlib
import importlib
import os
import sys
import types
from pathlib import Path

SOURCES = {sources}
MODULE, CLASS_NAME = {module!r}, {class_name!r}


def _import_component_class():
    from diffusers.utils.constants import HF_MODULES_CACHE

    digest = hashlib.sha256(repr(sorted(SOURCES.items())).encode("utf-8")).hexdigest()[:16]
    root = Path(HF_MODULES_CACHE)
    package = root / "hf_vq_components" / ("c" + digest)
    package.mkdir(parents=True, exist_ok=True)
    files = {{"__init__.py": "", **SOURCES}}
    (root / "hf_vq_components" / "__init__.py").touch()
    for name, source in files.items():
        path = package / name
        if not path.is_file() or path.read_text(encoding="utf-8") != source:
            # Write then rename, so that a process importing concurrently never reads half a file.
            partial = path.with_name(name + "." + str(os.getpid()) + ".partial")
            partial.write_text(source, encoding="utf-8")
            os.replace(partial, path)
    if str(root) not in sys.path:
        sys.path.append(str(root))
    importlib.invalidate_caches()
    module = importlib.import_module("hf_vq_components.c" + digest + "." + MODULE)
    return getattr(module, CLASS_NAME)


{class_name} = _import_component_class()
'''


class _AcceptsAnyComponent(type):
    """diffusers checks a component passed to `from_pretrained` (`vqgan=...`) against the class that model_index.json
    names, looked up in `sys.modules[ENTRY_MODULE]`; classes that ship in the folder are not there, so every object
    passes this check (the pipeline's constructor checks what it needs)."""

    def __subclasscheck__(cls, subclass: type) -> bool:
        return True

    def __instancecheck__(cls, instance: Any) -> bool:
        return True


class _ComponentStandIn(metaclass=_AcceptsAnyComponent):
    """What diffusers finds for a component whose folder has no entry file: loading it says what is missing."""

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any) -> Any:
        raise ValueError(
            f"the pipeline folder {os.fspath(path)} lacks the folder of its {cls.__name__} component (model_index.json "
            f"names it; its code is <component>/{ENTRY_MODULE}.py beside its config and weights): the folder is "
            "incomplete. Download or save the whole pipeline again, or pass the component to from_pretrained(...)"
        )


class _EntryModuleStandIn(types.ModuleType):
    """`sys.modules[ENTRY_MODULE]`, where diffusers looks up a component class that is not in the component's folder
    (because the folder is missing, or because the caller passed the component): answers with `_ComponentStandIn`."""

    def __getattr__(self, class_name: str) -> type:
        if class_name.startswith("__"):
            raise AttributeError(class_name)
        return type(class_name, (_ComponentStandIn,), {"__module__": ENTRY_MODULE})


sys.modules.setdefault(ENTRY_MODULE, _EntryModuleStandIn(ENTRY_MODULE))


def save_pretrained_with_code(
    pipeline: Any,
    save_directory: str | os.PathLike,
    save: Callable[..., None],
    pipeline_file: str | os.PathLike,
    push_to_hub: bool = False,
    **kwargs: Any,
) -> None:
    """`save` (diffusers' `DiffusionPipeline.save_pretrained`, bound to `pipeline`) into `save_directory`, then the
    code: `pipeline_file` and this helper at the root, an entry file in every component folder that needs one, and
    `model_index.json` pointing at them. With `push_to_hub`, the complete folder is uploaded afterwards (diffusers would
    upload before the code is written)."""
    hub_kwargs = {key: kwargs.pop(key) for key in ("repo_id", "commit_message", "private", "token", "create_pr") if key in kwargs}
    save(save_directory, **kwargs)
    save_directory = Path(save_directory)
    index_path = save_directory / "model_index.json"
    index = json.loads(index_path.read_text(encoding="utf-8"))
    for name, component in pipeline.components.items():
        if component is not None and type(component).__module__.split(".")[0] not in NATIVE_LIBRARIES:
            index[name] = [ENTRY_MODULE, write_component_code(component, save_directory / name, name)]
    pipeline_file = Path(pipeline_file)
    for source in (pipeline_file, Path(__file__)):
        target = save_directory / source.name
        if source.resolve() != target.resolve():
            shutil.copyfile(source, target)
    index["_class_name"] = [pipeline_file.stem, type(pipeline).__name__]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if push_to_hub:
        from huggingface_hub import create_repo

        repo_id = hub_kwargs.pop("repo_id", None) or save_directory.name
        repo_id = create_repo(repo_id, exist_ok=True, private=hub_kwargs.pop("private", None), token=hub_kwargs.get("token")).repo_id
        pipeline._upload_folder(save_directory, repo_id, **hub_kwargs)


def write_component_code(component: Any, folder: Path, component_name: str) -> str:
    """Write the entry file of `component` (saved in `folder`) and the source files it embeds; return the class name."""
    cls = type(component)
    sources = component_sources(cls, folder)
    for name, source in sources.items():
        (folder / name).write_text(source, encoding="utf-8")
    entry = ENTRY_TEMPLATE.format(
        component=component_name,
        files=", ".join(sorted(sources)),
        sources=repr(dict(sorted(sources.items()))),
        module=Path(_module_file(cls)).stem,
        class_name=cls.__name__,
    )
    (folder / f"{ENTRY_MODULE}.py").write_text(entry, encoding="utf-8")
    return cls.__name__


def component_sources(cls: type, folder: Path) -> dict[str, str]:
    """File name -> source of the module defining `cls` and of everything it imports relatively (recursively).

    Taken from `folder` when `save_pretrained` wrote the module there (transformers' `register_for_auto_class` copies a
    model's files, and `VQGANModel` its quantizer's, in the form that runs without hf_vq); otherwise from where the class
    was imported (a scheduler; or a component that itself came from remote code, whose files are complete)."""
    module_file = Path(_module_file(cls))
    saved = folder / module_file.name
    entry = saved if saved.is_file() else module_file
    files = [entry, *map(Path, get_relative_import_files(str(entry)))]
    sources = {path.name: path.read_text(encoding="utf-8") for path in files}
    for name, source in sources.items():
        if any(line.lstrip().startswith(("import hf_vq", "from hf_vq")) for line in source.splitlines()):
            raise RuntimeError(
                f"{name}, part of the code of {cls.__name__}, imports hf_vq, so a saved pipeline could not load "
                "where hf_vq is not installed; import the files beside it relatively instead"
            )
    return sources


def _module_file(cls: type) -> str:
    module = sys.modules[cls.__module__]
    if getattr(module, "__file__", None) is None:
        raise RuntimeError(f"{cls.__name__} is defined in {cls.__module__}, which has no source file to save with the pipeline")
    return module.__file__


__all__ = ["ENTRY_MODULE", "component_sources", "save_pretrained_with_code", "write_component_code"]
