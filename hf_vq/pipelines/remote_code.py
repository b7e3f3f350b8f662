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
trust_remote_code=True)`) and imports them as one package. It copies the pipeline file and its helpers (this file and
`pipeline_inputs.py`) to the root, and uploads with huggingface_hub's public `upload_folder`. Nothing depends on hf_vq
being importable, from a folder or from the Hub, online or offline. Where hf_vq is installed,
`from_pretrained_with_installed_components` loads such a folder through the pipeline's own class with hf_vq's
component classes, without `trust_remote_code`.

Two workarounds remain, each for a limitation of diffusers 0.42 / transformers 5.x that their public API does not
cover:

- The entry file writes the embedded sources into the dynamic-modules cache (`HF_MODULES_CACHE`, where transformers
  and diffusers put remote code too), under a package named after their hash, and imports them from there. diffusers'
  `get_class_from_dynamic_module` fetches one file per component and no package, and the component classes need real
  source files on disk: transformers' `custom_object_save` (called by `save_pretrained` under
  `register_for_auto_class`) copies a class's module file and its relative imports, so that a pipeline loaded from
  remote code saves a complete folder again.
- Importing this file (the pipeline files do) puts a stand-in module under the entry file's name in `sys.modules`.
  diffusers resolves `[library, class]` of a component that is passed to `from_pretrained(..., vqgan=...)`, or whose
  folder is missing, through `sys.modules[library]` (`_get_library_or_raise`) and checks the passed object with
  `issubclass` against the library's base classes found there. Classes that ship in a folder are in no importable
  library, so the stand-in answers every class name with a class whose metaclass accepts any `issubclass` check
  (the pipeline's constructor checks what it needs), and whose `from_pretrained` says which component folder is
  missing instead of diffusers' "has not been imported".

This file imports only the standard library, transformers and diffusers (hf_vq only by name, in the branch that runs
where the pipeline class is hf_vq's own): it is itself copied into saved folders, so that a pipeline loaded from
remote code saves a complete folder again.
"""

from __future__ import annotations

import importlib
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
# Files beside this one that every pipeline file imports relatively and that travel with it to the folder's root.
PIPELINE_HELPER_FILES = ("remote_code.py", "pipeline_inputs.py")

ENTRY_TEMPLATE = '''\
"""Code of the `{component}` component of this pipeline, for `DiffusionPipeline.from_pretrained(...,
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
    """diffusers checks a component passed to `from_pretrained` (`vqgan=...`) with `issubclass` against the base
    classes it finds in `sys.modules[ENTRY_MODULE]`; classes that ship in the folder are not there, so every class
    passes this check (the pipeline's constructor checks what it needs). `isinstance` is left as it is."""

    def __subclasscheck__(cls, subclass: type) -> bool:
        return True


class _ComponentStandIn(metaclass=_AcceptsAnyComponent):
    """What diffusers finds for a component whose folder has no entry file: loading it says what is missing."""

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any) -> Any:
        raise ValueError(
            f"the pipeline folder {os.fspath(path)} lacks the folder of its {cls.__name__} component "
            f"(model_index.json names it; its code is <component>/{ENTRY_MODULE}.py beside its config and weights): "
            "the folder is incomplete. Download or save the whole pipeline again, or pass the component to "
            "from_pretrained(...)"
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
    `model_index.json` pointing at them. With `push_to_hub`, the complete folder is uploaded afterwards (diffusers
    would upload before the code is written)."""
    hub_kwargs = {
        key: kwargs.pop(key) for key in ("repo_id", "commit_message", "private", "token", "create_pr") if key in kwargs
    }
    save(save_directory, **kwargs)
    save_directory = Path(save_directory)
    index_path = save_directory / "model_index.json"
    index = json.loads(index_path.read_text(encoding="utf-8"))
    for name, component in pipeline.components.items():
        if component is not None and type(component).__module__.split(".")[0] not in NATIVE_LIBRARIES:
            index[name] = [ENTRY_MODULE, write_component_code(component, save_directory / name, name)]
    pipeline_file = Path(pipeline_file)
    helpers = [Path(__file__).with_name(name) for name in PIPELINE_HELPER_FILES]
    for source in (pipeline_file, *helpers):
        target = save_directory / source.name
        if source.resolve() != target.resolve():
            shutil.copyfile(source, target)
    index["_class_name"] = [pipeline_file.stem, type(pipeline).__name__]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if push_to_hub:
        _upload(pipeline, save_directory, hub_kwargs)


def _upload(pipeline: Any, save_directory: Path, hub_kwargs: dict[str, Any]) -> None:
    """One commit of the complete folder, through huggingface_hub's public `create_repo` and `upload_folder`."""
    from huggingface_hub import create_repo, upload_folder

    token = hub_kwargs.get("token")
    repo_id = hub_kwargs.get("repo_id") or save_directory.name
    repo_id = create_repo(repo_id, exist_ok=True, private=hub_kwargs.get("private"), token=token).repo_id
    upload_folder(
        repo_id=repo_id,
        folder_path=save_directory,
        token=token,
        commit_message=hub_kwargs.get("commit_message") or f"Upload {type(pipeline).__name__}",
        create_pr=hub_kwargs.get("create_pr", False),
    )


# `from_pretrained` options that the loading with installed classes honours (or that do not apply to it).
INSTALLED_LOADING_OPTIONS = (
    "dtype",
    "torch_dtype",
    "variant",
    "cache_dir",
    "revision",
    "token",
    "local_files_only",
    "force_download",
    "proxies",
    "use_safetensors",
    "low_cpu_mem_usage",
    "trust_remote_code",
    "device_map",
)


def from_pretrained_with_installed_components(
    pipeline_class: type, load: Callable[..., Any], pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
) -> Any:
    """`load` (diffusers' `from_pretrained`, bound to `pipeline_class`) a pipeline folder or Hub repo.

    Where `pipeline_class` is hf_vq's own (hf_vq is installed) and `trust_remote_code` is not set, the folder's code
    is not run: every component is loaded with hf_vq's class of the name model_index.json gives it (or diffusers' or
    transformers' class, for theirs), honouring `variant`, `dtype` and `device_map`, and the pipeline is built from
    them. diffusers' own `from_pretrained` cannot do that: it loads a folder's `pipeline_*.py` as custom code whenever
    model_index.json names it, even when called on the class that wrote it. Otherwise (remote code, or
    `trust_remote_code=True`) this is diffusers' loading unchanged."""
    if kwargs.get("trust_remote_code") or not pipeline_class.__module__.startswith("hf_vq."):
        return load(pretrained_model_name_or_path, **kwargs)
    from diffusers.utils import logging

    # diffusers' own loader logs each component on this logger; so does this one, for code that reads those lines.
    logger = logging.get_logger("diffusers.pipelines.pipeline_utils")
    folder = _pipeline_folder(pretrained_model_name_or_path, kwargs)
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    entries = {name: value for name, value in index.items() if not name.startswith("_") and isinstance(value, list)}
    _check_variant_saved(folder, [name for name in entries if name not in kwargs], kwargs.get("variant"))
    components = {}
    for name, value in entries.items():
        if name in kwargs:
            components[name] = kwargs.pop(name)
        elif value[0] is None:
            components[name] = None
        else:
            components[name] = _load_installed_component(_installed_class(*value, folder / name), folder, name, kwargs)
            logger.info(f"Loaded {name} as {value[1]} from `{name}` subfolder of {pretrained_model_name_or_path}.")
    unknown = sorted(set(kwargs) - set(INSTALLED_LOADING_OPTIONS))
    if unknown:
        raise ValueError(
            f"{pipeline_class.__name__}.from_pretrained does not take {unknown} when it loads with hf_vq's classes; "
            "pass trust_remote_code=True for diffusers' own loading of the folder's code, which does"
        )
    pipeline = pipeline_class(**components)
    pipeline.register_to_config(_name_or_path=os.fspath(pretrained_model_name_or_path))
    return pipeline


def _check_variant_saved(folder: Path, component_names: list[str], variant: str | None) -> None:
    """diffusers' rule: loading a `variant` that no component folder holds is an error (with diffusers' message),
    rather than a silent fall-back to the plain weights or a missing-file error from one component."""
    if variant is None:
        return
    for name in component_names:
        if (folder / name).is_dir() and any(variant in path.name.split(".")[1:] for path in (folder / name).iterdir()):
            return
    raise ValueError(
        f"You are trying to load the model files of the `variant={variant}`, but no such modeling files are "
        f"available. {folder} was saved without it: load it without variant=..., or save it with "
        f"save_pretrained(..., variant={variant!r})"
    )


def _installed_class(library: str, class_name: str, folder: Path) -> type:
    """The installed class a component entry `[library, class_name]` of model_index.json names."""
    module = importlib.import_module("hf_vq" if library == ENTRY_MODULE else library)
    component_class = getattr(module, class_name, None)
    if component_class is None:
        raise ValueError(
            f"{folder} holds a {class_name} ({library}), which {module.__name__} does not have; load the folder with "
            "DiffusionPipeline.from_pretrained(..., trust_remote_code=True) to run the code it carries"
        )
    return component_class


def _pipeline_folder(pretrained_model_name_or_path: str | os.PathLike, kwargs: dict[str, Any]) -> Path:
    """The local folder of a pipeline: the path itself, or the snapshot of a Hub repo (from the cache when offline)."""
    if os.path.isdir(pretrained_model_name_or_path):
        return Path(pretrained_model_name_or_path)
    from huggingface_hub import snapshot_download

    options = ("cache_dir", "revision", "token", "local_files_only", "force_download", "proxies")
    hub_options = {key: kwargs[key] for key in options if key in kwargs}
    return Path(snapshot_download(os.fspath(pretrained_model_name_or_path), **hub_options))


def _load_installed_component(component_class: type, folder: Path, name: str, kwargs: dict[str, Any]) -> Any:
    """One component with hf_vq's class: models with the requested variant and dtype, others from their config."""
    from diffusers.schedulers.scheduling_utils import SchedulerMixin
    from transformers import PreTrainedModel

    if issubclass(component_class, SchedulerMixin):
        return component_class.from_pretrained(folder, subfolder=name)
    if not issubclass(component_class, PreTrainedModel):
        return component_class.from_pretrained(folder / name)
    dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
    if isinstance(dtype, dict):
        dtype = dtype.get(name, dtype.get("default"))
    options = {"variant": kwargs.get("variant"), "dtype": dtype, "device_map": kwargs.get("device_map")}
    options = {key: value for key, value in options.items() if value is not None}
    return component_class.from_pretrained(folder / name, **options)


def write_component_code(component: Any, folder: Path, component_name: str) -> str:
    """Write the entry file of `component` (saved in `folder`) and the source files it embeds; return the class
    name."""
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

    Taken from `folder` when `save_pretrained` wrote the module there (transformers' `register_for_auto_class` copies
    a model's files, and `VQGANModel` its quantizer's, in the form that runs without hf_vq); otherwise from where the
    class was imported (a scheduler; or a component that itself came from remote code, whose files are complete)."""
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
        raise RuntimeError(
            f"{cls.__name__} is defined in {cls.__module__}, which has no source file to save with the pipeline"
        )
    return module.__file__


__all__ = [
    "ENTRY_MODULE",
    "component_sources",
    "from_pretrained_with_installed_components",
    "save_pretrained_with_code",
    "write_component_code",
]
