"""What a push uploads and how it reports (issue 24), through the loopback Hub (tests/hub_server.py): the allow-list
(no links, hidden files or folders, stray configs), the tokenizer identity check of `--tokenizer_hub_id`, local paths
in uploaded records, a tokenizer card's list of dependents across re-pushes, `hf-vq push`'s flags and errors, card
details and quiet logs.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file

from hf_vq.hub import IncompleteModelFolderError, listed_dependents, load_model_folder, push_to_hub, render_model_card
from hf_vq.hub.errors import TokenizerMismatchError
from hf_vq.hub.local_paths import is_local_path, without_local_paths
from hf_vq.logs import quiet_third_party_logs
from hf_vq.hub.model_card import dependent_entries, list_dependent_in_card

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer  # noqa: E402
from test_hub import ORG, TOKEN, USER, _act_as_online_user, _tokenizer_folder, _vit_folder  # noqa: E402


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = HubServer(tmp_path_factory.mktemp("hub"), tokens={TOKEN: USER}, orgs={USER: [ORG]}).start()
    yield server
    server.stop()


@pytest.fixture
def online(hub, tmp_path, monkeypatch):
    _act_as_online_user(monkeypatch, hub.url, tmp_path)
    return hub


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A remote-code tokenizer, a second tokenizer with other weights, a ViT classifier reading the first."""
    root = tmp_path_factory.mktemp("uploads")
    tokenizer = _tokenizer_folder(root)
    other = Path(shutil.copytree(tokenizer, root / "other-tokenizer"))
    weights = {name: tensor + 1.0 for name, tensor in load_file(other / "model.safetensors").items()}
    save_file(weights, other / "model.safetensors", metadata={"format": "pt"})
    classifier = _vit_folder(root / "vit-on-tokens", tokenizer_name_or_path=str(tokenizer))
    return {"root": root, "tokenizer": tokenizer, "other": other, "classifier": classifier}


def _copy(folder: Path, target: Path) -> Path:
    return Path(shutil.copytree(folder, target, symlinks=True))


def _files_of(hub: HubServer, repo: str) -> set[str]:
    return set(hub.store.commits_on(repo)[0]["files"])


def _pushed_json(hub: HubServer, repo: str, path: str) -> dict:
    return json.loads(hub.store.blob(repo, hub.store.commits_on(repo)[0]["files"][path]))


def _pipeline_folder(folder: Path, num_classes: int = 3) -> Path:
    """A minimal diffusers-layout folder: model_index.json, a transformer component with weights, a scheduler."""
    (folder / "transformer").mkdir(parents=True)
    (folder / "scheduler").mkdir()
    labels = {str(i): f"class {i}" for i in range(num_classes)}
    index = {
        "_class_name": "TinyPipeline",
        "transformer": ["tiny", "TinyModel"],
        "scheduler": ["diffusers", "DDPMScheduler"],
    }
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "transformer" / "config.json").write_text(
        json.dumps({"model_type": "tiny", "num_classes": num_classes, "id2label": labels, "hidden_size": 4})
    )
    save_file({"weight": torch.zeros(2, 2)}, folder / "transformer" / "model.safetensors")
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDPMScheduler"}))
    (folder / "metrics.json").write_text(json.dumps({"conditional_accuracy": 0.5, "top5_accuracy": 1.0}))
    return folder


# ------------------------------------------------------------------------------------------- the allow-list


def test_push_uploads_the_allow_list_only_and_prints_it(online, models, tmp_path, capsys):
    folder = _copy(models["classifier"], tmp_path / "vit")
    secret = tmp_path / "secret.txt"
    secret.write_text("the machine's private key")
    (folder / "linked.safetensors").symlink_to(secret)  # a link to any file: never followed
    (folder / "linked_dir").symlink_to(tmp_path, target_is_directory=True)
    (folder / ".ipynb_checkpoints").mkdir()
    (folder / ".ipynb_checkpoints" / "config-checkpoint.json").write_text("{}")
    (folder / ".env").write_text("HF_TOKEN=hf_secret")
    (folder / "credentials.yaml").write_text("aws_secret_access_key: abc")
    (folder / "notes.txt").write_text("private notes")
    (folder / "wandb-summary.json").write_text("{}")
    config = json.loads((folder / "config.json").read_text())
    config.pop("tokenizer_name_or_path")  # a plain classifier: no tokenizer to push against
    (folder / "config.json").write_text(json.dumps(config))

    push_to_hub(folder, f"{ORG}/allow-list")
    assert _files_of(online, f"{ORG}/allow-list") == {
        ".gitattributes",
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "metrics.json",
        "training_config.json",
        "samples.png",
    }
    for blob in online.store.commits_on(f"{ORG}/allow-list")[0]["files"].values():
        assert b"private key" not in online.store.blob(f"{ORG}/allow-list", blob)
    out = capsys.readouterr().out
    assert f"{ORG}/allow-list: uploaded 7 files: README.md, config.json, metrics.json, model.safetensors" in out
    left_out = out.split("not uploaded")[1]
    for name in (
        ".env",
        ".ipynb_checkpoints/",
        "checkpoints/",
        "credentials.yaml",
        "linked.safetensors",
        "linked_dir",
        "notes.txt",
    ):
        assert name in left_out


def test_hidden_folders_and_stray_files_inside_pipeline_components_stay_local(online, tmp_path):
    folder = _pipeline_folder(tmp_path / "pipeline")
    hidden = folder / "transformer" / ".ipynb_checkpoints"
    hidden.mkdir()
    (hidden / "config-checkpoint.json").write_text("{}")
    (folder / "transformer" / ".secret.py").write_text("TOKEN = 'x'")
    (folder / "transformer" / "notes.yaml").write_text("a: 1")
    (folder / "transformer" / "link.py").symlink_to(tmp_path / "pipeline" / "model_index.json")
    (folder / "pipeline_tiny.py").write_text("class TinyPipeline: ...\n")
    with pytest.raises(IncompleteModelFolderError, match=r"transformer/link.py is a symbolic link"):
        push_to_hub(folder, f"{ORG}/pipeline")  # a link named as code the pipeline may need: refused, not dropped
    (folder / "transformer" / "link.py").unlink()
    push_to_hub(folder, f"{ORG}/pipeline")
    assert _files_of(online, f"{ORG}/pipeline") == {
        ".gitattributes",
        "README.md",
        "model_index.json",
        "pipeline_tiny.py",
        "metrics.json",
        "transformer/config.json",
        "transformer/model.safetensors",
        "scheduler/scheduler_config.json",
    }


def test_a_needed_file_that_is_a_link_is_refused_before_any_request(online, models, tmp_path):
    folder = _copy(models["tokenizer"], tmp_path / "linked-weights")
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").symlink_to(models["tokenizer"] / "model.safetensors")
    before = len(online.requests)
    with pytest.raises(IncompleteModelFolderError, match="model.safetensors is a symbolic link.*copy"):
        push_to_hub(folder, f"{ORG}/linked-weights")
    assert online.requests[before:] == []


# ------------------------------------------------------------------------------------------- tokenizer identity


def test_tokenizer_hub_id_must_be_the_tokenizer_the_classifier_was_trained_on(online, models, tmp_path):
    push_to_hub(models["tokenizer"], f"{ORG}/right-tokenizer")
    push_to_hub(models["other"], f"{ORG}/wrong-tokenizer")
    with pytest.raises(TokenizerMismatchError, match="is not the tokenizer .* the weights differ"):
        push_to_hub(models["classifier"], f"{ORG}/vit-wrong", tokenizer_hub_id=f"{ORG}/wrong-tokenizer")
    assert not online.store.exists(f"{ORG}/vit-wrong"), "refused before anything was uploaded"

    push_to_hub(models["classifier"], f"{ORG}/vit-right", tokenizer_hub_id=f"{ORG}/right-tokenizer")
    pushed_config = _pushed_json(online, f"{ORG}/vit-right", "config.json")
    assert pushed_config["tokenizer_name_or_path"] == f"{ORG}/right-tokenizer"


def test_a_classifier_whose_tokenizer_folder_is_gone_cannot_be_checked(online, models, tmp_path):
    folder = _copy(models["classifier"], tmp_path / "orphan")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"tokenizer_name_or_path": str(tmp_path / "deleted")}))
    push_to_hub(models["tokenizer"], f"{ORG}/some-tokenizer")
    with pytest.raises(TokenizerMismatchError, match="no longer on this machine"):
        push_to_hub(folder, f"{ORG}/orphan", tokenizer_hub_id=f"{ORG}/some-tokenizer")
    assert not online.store.exists(f"{ORG}/orphan")


# ------------------------------------------------------------------------------------------- local paths


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("tokenizer", "out/tok", "org/tok"),  # relative, exists here: the Hub id it was pushed as
        ("tokenizer_name_or_path", "./out/tok", "org/tok"),
        ("train_data_dir", "data/fashion-mnist", "fashion-mnist"),  # a path-only field: reduced, existing or not
        ("output_dir", "runs", "runs"),
        ("cache_dir", "C:\\Users\\me\\cache", "cache"),
        ("logging_dir", "~/logs/run1", "run1"),
        ("anything", "../elsewhere/data", "data"),
        ("anything", "a/b/c", "c"),
        ("tokenizer_name_or_path", "org/some-tokenizer", "org/some-tokenizer"),  # a Hub id: kept
        ("affine", "learned", "learned"),
        ("resume_from_checkpoint", "latest", "latest"),
        ("url", "https://example.org/a/b", "https://example.org/a/b"),
    ],
)
def test_local_paths_of_every_form_are_mapped_or_reduced(tmp_path, monkeypatch, key, value, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out" / "tok").mkdir(parents=True)
    hub_ids = {(tmp_path / "out" / "tok").resolve(): "org/tok"}
    assert without_local_paths({key: value}, hub_ids) == {key: expected}
    nested = without_local_paths({"runs": [{key: value}], "sources": {key: [value]}}, hub_ids)
    assert nested == {"runs": [{key: expected}], "sources": {key: [expected]}}
    assert is_local_path(value, key) == (value != expected or value == "runs")


def test_relative_paths_in_uploaded_records_are_mapped_or_dropped(online, models, tmp_path, monkeypatch):
    folder = _copy(models["classifier"], tmp_path / "relative")
    monkeypatch.chdir(models["root"])
    records = {
        "tokenizer_name_or_path": "tokenizer",
        "train_data_dir": "data/fmnist",
        "logging_dir": "logs",
        "sources": [{"cache_dir": "C:\\Users\\me\\hf"}, "../training-machine/runs/a"],
    }
    (folder / "training_config.json").write_text(json.dumps(records))
    (folder / "metrics.json").write_text(json.dumps({"accuracy": 0.5, "tokenizer": "./tokenizer"}))
    push_to_hub(models["tokenizer"], f"{ORG}/relative-tokenizer")
    push_to_hub(folder, f"{ORG}/relative-vit", tokenizer_hub_id=f"{ORG}/relative-tokenizer")
    assert _pushed_json(online, f"{ORG}/relative-vit", "training_config.json") == {
        "tokenizer_name_or_path": f"{ORG}/relative-tokenizer",
        "train_data_dir": "fmnist",
        "logging_dir": "logs",
        "sources": [{"cache_dir": "hf"}, "a"],
    }
    assert _pushed_json(online, f"{ORG}/relative-vit", "metrics.json")["tokenizer"] == f"{ORG}/relative-tokenizer"


# ------------------------------------------------------------------------------------------- the tokenizer card's list


def test_pushing_a_new_tokenizer_version_keeps_its_list_of_models(online, models, tmp_path):
    tokenizer = _copy(models["tokenizer"], tmp_path / "tokenizer-v1")
    repo = f"{ORG}/versioned-tokenizer"
    push_to_hub(tokenizer, repo)
    first = online.store.commits_on(repo)[0]["id"]
    push_to_hub(models["classifier"], f"{ORG}/vit-on-v1", tokenizer_hub_id=repo)
    # new weights in the same repo: the card must still list the classifier, as trained on the first revision
    weights = {name: tensor * 2 for name, tensor in load_file(tokenizer / "model.safetensors").items()}
    save_file(weights, tokenizer / "model.safetensors", metadata={"format": "pt"})
    push_to_hub(tokenizer, repo, commit_message="v2 weights")
    history = online.store.commits_on(repo)
    assert history[0]["message"] == "v2 weights" and history[0]["id"] != first
    card = ModelCard.load(repo).text
    assert listed_dependents(card) == [f"{ORG}/vit-on-v1"]
    assert f"image classifier, trained on revision `{first}`" in card
    assert "None published yet" not in card


def test_entries_written_with_the_tokenizer_name_its_revision_once_it_moves(models):
    folder = load_model_folder(models["tokenizer"])
    card = render_model_card(folder, "org/t", dependents=[("org/vit", "classifier")]).content
    assert "- [org/vit](https://huggingface.co/org/vit): image classifier, trained on this revision" in card
    assert dependent_entries(card, current_revision="abc123") == [
        "- [org/vit](https://huggingface.co/org/vit): image classifier, trained on revision `abc123`"
    ]
    relisted = list_dependent_in_card(card, "org/vit", revision="def456")
    assert listed_dependents(relisted) == ["org/vit"] and "trained on revision `def456`" in relisted


# ------------------------------------------------------------------------------------------- the command


def test_push_command_takes_hub_token_and_reports_errors_in_the_readme_form(online, models, monkeypatch):
    from hf_vq.cli import main

    monkeypatch.delenv("HF_TOKEN")
    assert (
        main(
            [
                "push",
                "--model_dir",
                str(models["tokenizer"]),
                "--hub_model_id",
                f"{ORG}/with-token",
                "--hub_token",
                TOKEN,
            ]
        )
        == 0
    )
    assert online.store.exists(f"{ORG}/with-token")
    with pytest.raises(SystemExit, match="^hf-vq push: error: The Hub at .* rejected the token"):
        main(["push", "--model_dir", str(models["tokenizer"]), "--hub_model_id", f"{ORG}/x", "--hub_token", "hf_bad"])
    with pytest.raises(SystemExit, match="^hf-vq push: error: Model folder .* does not exist"):
        main(["push", "--model_dir", "/no/such/folder", "--hub_model_id", f"{ORG}/x", "--hub_token", TOKEN])
    monkeypatch.setenv("HF_VQ_DEBUG", "0")  # restored after the test: --debug sets it for the command's depths
    with pytest.raises(IncompleteModelFolderError):  # --debug: the exception itself, with its traceback
        main(["push", "--model_dir", "/no/such/folder", "--hub_model_id", f"{ORG}/x", "--hub_token", TOKEN, "--debug"])


def test_push_set_errors_have_the_same_form(online):
    from hf_vq.cli import main

    with pytest.raises(SystemExit, match="^hf-vq push-set: error: push-set needs --tokenizer_dir"):
        main(["push-set", "--classifier_dirs", "x"])


def test_push_hides_other_libraries_info_logs_unless_debugging(online, models, caplog, monkeypatch):
    caplog.set_level(logging.INFO)  # as a training run's logging.basicConfig(level=INFO) does
    push_to_hub(models["tokenizer"], f"{ORG}/quiet")
    noisy = [r for r in caplog.records if r.levelno < logging.WARNING and not r.name.startswith("hf_vq")]
    assert noisy == [], [f"{r.name}: {r.getMessage()}" for r in noisy][:5]
    assert logging.getLogger("httpx").level == logging.NOTSET, "levels are restored after the push"
    monkeypatch.setenv("HF_VQ_DEBUG", "1")
    with quiet_third_party_logs():
        assert logging.getLogger("httpx").isEnabledFor(logging.INFO)


# ------------------------------------------------------------------------------------------- card details


def test_class_conditional_prior_card_is_not_tagged_unconditional(tmp_path):
    conditional = render_model_card(load_model_folder(_pipeline_folder(tmp_path / "conditional")), "org/prior")
    assert conditional.data.pipeline_tag is None
    assert "class-conditional-image-generation" in conditional.data.tags
    assert "unconditional-image-generation" not in conditional.content
    free = load_model_folder(_pipeline_folder(tmp_path / "free", num_classes=0))
    unconditional = render_model_card(free, "org/free")
    assert unconditional.data.pipeline_tag == "unconditional-image-generation"
    assert "class-conditional-image-generation" not in unconditional.data.tags


def test_top5_accuracy_is_reported_only_with_more_than_five_classes(models, tmp_path):
    three = _copy(models["classifier"], tmp_path / "three")
    (three / "metrics.json").write_text(json.dumps({"accuracy": 0.5, "top5_accuracy": 1.0, "dataset": "org/data"}))
    card = render_model_card(load_model_folder(three), "org/three")
    assert "Top-5" not in card.text and [r.metric_type for r in card.data.eval_results] == ["accuracy"]
    ten = _copy(three, tmp_path / "ten")
    config = json.loads((ten / "config.json").read_text())
    config["id2label"] = {str(i): f"c{i}" for i in range(10)}
    config["label2id"] = {f"c{i}": i for i in range(10)}
    (ten / "config.json").write_text(json.dumps(config))
    card = render_model_card(load_model_folder(ten), "org/ten")
    assert "Top-5" in card.text and [r.metric_type for r in card.data.eval_results] == ["accuracy", "top5_accuracy"]


def test_a_classifier_started_from_a_hub_model_names_it_as_base_model(tmp_path):
    folder = _vit_folder(tmp_path / "pixel-vit")
    (folder / "training_config.json").write_text(json.dumps({"pretrained_model_name_or_path": "google/vit-base"}))
    assert render_model_card(load_model_folder(folder), "org/pixel-vit").data.base_model == "google/vit-base"


def test_pipeline_snippets_resolve_a_snapshot_first_so_they_work_offline(tmp_path):
    card = render_model_card(load_model_folder(_pipeline_folder(tmp_path / "prior")), "org/prior")
    assert 'DiffusionPipeline.from_pretrained(snapshot_download("org/prior"), trust_remote_code=True)' in card.text
    assert "HF_HUB_OFFLINE=1" in card.text


def test_a_held_out_slice_of_train_is_not_called_test():
    import datasets

    from hf_vq.training.classifier_loop import evaluated_split_name

    args = argparse.Namespace(train_split="train")
    train = datasets.Dataset.from_dict({"label": list(range(20))}, split="train")
    held_out = train.train_test_split(test_size=2, seed=0)["test"].map(lambda row: row)  # as the loop encodes it
    assert evaluated_split_name(args, held_out.with_format("torch")) == "train (held-out part)"
    assert evaluated_split_name(args, datasets.Dataset.from_dict({"label": [0]}, split="validation")) == "validation"
    assert evaluated_split_name(args, None) is None
