"""hf_vq.hub against a loopback Hub (tests/hub_server.py): push through huggingface_hub's real client,
then `from_pretrained("org/name")` and `ModelCard.load` through HF_ENDPOINT.

huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE / HF_HUB_CACHE at import time and conftest.py sets
offline mode, so in this process the tests patch `huggingface_hub.constants`; the loading side runs in a
subprocess with a real environment, as a user would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard, constants
from huggingface_hub.utils import disable_progress_bars

from hf_vq.hub import (
    HubUnreachableError,
    IncompleteModelFolderError,
    InvalidCardMetadataError,
    InvalidRepoIdError,
    MissingTokenError,
    OfflineModeError,
    add_hub_arguments,
    add_push_subcommand,
    check_push_arguments,
    listed_dependents,
    load_model_folder,
    push_to_hub,
    render_model_card,
)
from hf_vq.hub.model_card import list_dependent_in_card, measured_metrics

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer  # noqa: E402

TOKEN, USER, ORG = "hf_test_alice", "alice", "org"
TOKENIZER_REPO, CLASSIFIER_REPO, LINKED_CLASSIFIER_REPO = (
    f"{ORG}/tiny-codebook",
    f"{ORG}/tiny-vit",
    f"{ORG}/tiny-vit-on-tokens",
)

# A model shared as remote code: config and model in one file, as `register_for_auto_class` copies it.
REMOTE_CODE_MODULE = """
from types import SimpleNamespace

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel


class TinyCodebookConfig(PreTrainedConfig):
    model_type = "tiny_codebook"

    def __init__(self, codebook_size=8, embed_dim=4, num_channels=1, image_size=8, **kwargs):
        self.codebook_size, self.embed_dim = codebook_size, embed_dim
        self.num_channels, self.image_size = num_channels, image_size
        super().__init__(**kwargs)


class TinyCodebookModel(PreTrainedModel):
    config_class = TinyCodebookConfig
    main_input_name = "pixel_values"

    def __init__(self, config):
        super().__init__(config)
        self.encoder = nn.Conv2d(config.num_channels, config.embed_dim, 1)
        self.codebook = nn.Embedding(config.codebook_size, config.embed_dim)
        self.post_init()

    def encode(self, pixel_values):
        latents = self.encoder(pixel_values).movedim(1, -1)
        distances = torch.cdist(latents.flatten(0, -2), self.codebook.weight)
        return SimpleNamespace(image_tokens=distances.argmin(-1).reshape(latents.shape[:-1]))

    def decode(self, image_tokens):
        return SimpleNamespace(reconstruction=self.codebook(image_tokens).movedim(-1, 1).mean(1, keepdim=True))

    def forward(self, pixel_values):
        return self.encode(pixel_values)
"""
TOKENIZER_METRICS = {
    "psnr": 24.5,
    "ssim": 0.81,
    "rfid": None,
    "codebook_usage": 0.75,
    "perplexity": 5.9,
    "dataset": "zalando-datasets/fashion_mnist",
    "split": "test",
    "train_steps": 50,
    "hardware": "CPU",
}
TOKENIZER_TRAINING = {
    "learning_rate": 0.0002,
    "max_train_steps": 50,
    "sync_nu": 0.2,
    "affine": "learned",
    "alternating": True,
    "replace_freq": 20,
    "beta": 0.95,
    "hub_token": "never-shown",
}
CLASSIFIER_METRICS = {"accuracy": 0.8125, "dataset": "zalando-datasets/fashion_mnist", "split": "test"}


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = HubServer(tmp_path_factory.mktemp("hub"), tokens={TOKEN: USER}, orgs={USER: [ORG]}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Model folders as training runs leave them: a remote-code tokenizer, a ViT classifier, and a ViT on tokens."""
    root = tmp_path_factory.mktemp("models")
    return {
        "tokenizer": _tokenizer_folder(root),
        "classifier": _vit_folder(root / "vit"),
        "linked": _vit_folder(root / "vit_on_tokens", tokenizer_name_or_path=str(root / "tokenizer")),
    }


@pytest.fixture
def online(hub, tmp_path, monkeypatch):
    """This process as a user's with HF_ENDPOINT=<test hub>, a token in HF_TOKEN and an empty cache."""
    _act_as_online_user(monkeypatch, hub.url, tmp_path)
    return hub


@pytest.fixture(scope="module")
def pushed(hub, folders, tmp_path_factory) -> dict[str, str]:
    """The three models pushed once (the tokenizer first, as a user would), commit URLs by name."""
    patch = pytest.MonkeyPatch()
    _act_as_online_user(patch, hub.url, tmp_path_factory.mktemp("push-user"))
    try:
        return {
            "tokenizer": push_to_hub(folders["tokenizer"], TOKENIZER_REPO, commit_message="Add tokenizer"),
            "classifier": push_to_hub(folders["classifier"], CLASSIFIER_REPO),
            "linked": push_to_hub(folders["linked"], LINKED_CLASSIFIER_REPO, tokenizer_hub_id=TOKENIZER_REPO),
        }
    finally:
        patch.undo()


def _act_as_online_user(patch: pytest.MonkeyPatch, endpoint: str, home: Path) -> None:
    """What setting HF_ENDPOINT, HF_HUB_CACHE and HF_TOKEN before importing huggingface_hub would have done."""
    patch.setattr(constants, "ENDPOINT", endpoint)
    patch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    patch.setattr(constants, "HF_HUB_OFFLINE", False)
    patch.setattr(constants, "HF_HUB_CACHE", str(home / "cache"))
    patch.setattr(constants, "HF_TOKEN_PATH", str(home / "no-token-file"))
    patch.setenv("HF_TOKEN", TOKEN)
    disable_progress_bars()


def _tokenizer_folder(root: Path) -> Path:
    module_dir = root / "remote_code"
    module_dir.mkdir()
    (module_dir / "modeling_tiny_codebook.py").write_text(REMOTE_CODE_MODULE)
    sys.path.insert(0, str(module_dir))
    try:
        from modeling_tiny_codebook import TinyCodebookConfig, TinyCodebookModel
    finally:
        sys.path.remove(str(module_dir))
    TinyCodebookConfig.register_for_auto_class()
    TinyCodebookModel.register_for_auto_class("AutoModel")
    folder = root / "tokenizer"
    TinyCodebookModel(TinyCodebookConfig()).save_pretrained(folder)
    _write_run_files(folder, TOKENIZER_METRICS, TOKENIZER_TRAINING)
    return folder


def _vit_folder(folder: Path, **config_extra) -> Path:
    from transformers import ViTConfig, ViTForImageClassification
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    labels = ["T-shirt/top", "Trouser", "Pullover"]
    config = ViTConfig(
        image_size=16,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
        **config_extra,
    )
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 16, "width": 16}).save_pretrained(folder)
    _write_run_files(folder, CLASSIFIER_METRICS, {"learning_rate": 0.001, "train_batch_size": 8})
    return folder


def _write_run_files(folder: Path, metrics: dict, training_config: dict) -> None:
    from PIL import Image

    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "training_config.json").write_text(json.dumps(training_config))
    Image.new("L", (8, 8), color=128).save(folder / "samples.png")
    (folder / "checkpoints" / "checkpoint_0").mkdir(parents=True)  # local training state: must stay local
    (folder / "checkpoints" / "checkpoint_0" / "optimizer.bin").write_bytes(b"\0" * 64)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


# ------------------------------------------------------------------------------------------- push


def test_push_makes_one_commit_with_model_card_code_and_samples(hub, pushed, folders):
    history = hub.store.commits_on(TOKENIZER_REPO)
    # initial commit, the push, then the card update that lists the classifier trained on it
    assert [c["message"] for c in history] == [
        f"List {LINKED_CLASSIFIER_REPO} on the card",
        "Add tokenizer",
        "initial commit",
    ]
    pushed_files = set(history[1]["files"])
    assert pushed_files == {
        ".gitattributes",
        "README.md",
        "config.json",
        "model.safetensors",
        "modeling_tiny_codebook.py",
        "metrics.json",
        "training_config.json",
        "samples.png",
    }
    assert pushed["tokenizer"] == f"{hub.url}/{TOKENIZER_REPO}/commit/{history[1]['id']}"
    assert not (folders["tokenizer"] / "README.md").exists(), "the user's folder is left as it was"
    assert hub.unhandled == []


def test_classifier_push_is_one_commit_with_processor(hub, pushed):
    history = hub.store.commits_on(CLASSIFIER_REPO)
    assert [c["message"] for c in history] == ["Upload classifier with hf_vq", "initial commit"]
    assert {"preprocessor_config.json", "model.safetensors", "README.md"} <= set(history[0]["files"])
    assert not any(path.startswith("checkpoints/") for path in history[0]["files"])


def test_round_trip_from_pretrained_through_hf_endpoint(hub, pushed, folders, tmp_path):
    """A fresh process with HF_ENDPOINT set loads what was pushed, bit for bit, and runs the card's snippets."""
    script = textwrap.dedent(f"""
        import json, re, torch
        from huggingface_hub import ModelCard
        from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification

        report = {{}}
        hub_vit = AutoModelForImageClassification.from_pretrained("{CLASSIFIER_REPO}")
        local_vit = AutoModelForImageClassification.from_pretrained(r"{folders["classifier"]}")
        report["vit_equal"] = all(
            torch.equal(a, b) for a, b in zip(hub_vit.state_dict().values(), local_vit.state_dict().values())
        )
        report["processor"] = type(AutoImageProcessor.from_pretrained("{CLASSIFIER_REPO}")).__name__
        hub_codebook = AutoModel.from_pretrained("{TOKENIZER_REPO}", trust_remote_code=True)
        report["remote_class"] = type(hub_codebook).__name__
        report["codebook_size"] = hub_codebook.config.codebook_size
        for name in ("{CLASSIFIER_REPO}", "{TOKENIZER_REPO}"):
            card = ModelCard.load(name)
            report[name] = [(r.metric_type, r.metric_value) for r in card.data.eval_results]
            snippet = re.search(r"```python\\n(.*?)```", card.text, re.S).group(1)
            exec(snippet, {{}})  # the usage snippet runs as written
        print("REPORT" + json.dumps(report))
    """)
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_TOKEN": TOKEN,
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("REPORT", 1)[1])
    assert report["vit_equal"] is True
    assert report["processor"].startswith("ViTImageProcessor")
    assert report["remote_class"] == "TinyCodebookModel" and report["codebook_size"] == 8
    assert report[CLASSIFIER_REPO] == [["accuracy", 0.8125]]
    assert report[TOKENIZER_REPO] == [["psnr", 24.5], ["ssim", 0.81], ["codebook_usage", 0.75], ["perplexity", 5.9]]
    downloads = [
        path for method, path in hub.requests if method == "GET" and path.startswith(f"/{CLASSIFIER_REPO}/resolve/")
    ]
    assert any(path.endswith("/model.safetensors") for path in downloads), "weights came from the test Hub"


def test_cards_carry_the_metadata_and_only_measured_metrics(online, pushed):
    card = ModelCard.load(TOKENIZER_REPO)
    assert card.data.library_name == "transformers"
    assert card.data.license == "apache-2.0"
    assert card.data.pipeline_tag == "image-feature-extraction"
    assert card.data.datasets == ["zalando-datasets/fashion_mnist"]
    assert {"hf_vq", "image-tokenizer", "custom_code"} <= set(card.data.tags)
    assert [r.metric_type for r in card.data.eval_results] == ["psnr", "ssim", "codebook_usage", "perplexity"]
    assert all(r.dataset_split == "test" for r in card.data.eval_results)
    assert "rFID" not in card.text, "rfid was not measured (null), so it is not shown"
    assert "Synchronized update (nu = 0.2)" in card.text and "Alternating optimisation" in card.text
    assert "trust_remote_code=True" in card.text
    assert "![Originals and reconstructions](samples.png)" in card.text
    assert "learning_rate: 0.0002" in card.text and "never-shown" not in card.text
    info = HfApi().model_info(TOKENIZER_REPO)
    assert info.pipeline_tag == "image-feature-extraction" and info.card_data.license == "apache-2.0"


def test_classifier_card_links_tokenizer_and_tokenizer_card_lists_it(online, pushed):
    linked = ModelCard.load(LINKED_CLASSIFIER_REPO)
    assert linked.data.base_model == TOKENIZER_REPO
    assert f"[{TOKENIZER_REPO}]({online.url}/{TOKENIZER_REPO})" in linked.text
    assert listed_dependents(ModelCard.load(TOKENIZER_REPO).text) == [LINKED_CLASSIFIER_REPO]
    # the uploaded config names the tokenizer's Hub repo, not the local folder it was trained with
    config = json.loads(Path(HfApi().hf_hub_download(LINKED_CLASSIFIER_REPO, "config.json")).read_text())
    assert config["tokenizer_name_or_path"] == TOKENIZER_REPO
    plain = ModelCard.load(CLASSIFIER_REPO)
    assert plain.data.base_model is None and plain.data.pipeline_tag == "image-classification"


def test_push_to_a_new_branch_of_a_private_repo(online, folders):
    url = push_to_hub(
        folders["classifier"], f"{USER}/private-vit", private=True, revision="v1", commit_message="v1 weights"
    )
    store = online.store
    assert store.meta(f"{USER}/private-vit")["private"] is True
    assert [c["message"] for c in store.commits_on(f"{USER}/private-vit", "v1")] == ["v1 weights", "initial commit"]
    assert [c["message"] for c in store.commits_on(f"{USER}/private-vit", "main")] == ["initial commit"]
    assert url.endswith(store.branch_head(f"{USER}/private-vit", "v1"))
    from huggingface_hub.errors import RepositoryNotFoundError

    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info(f"{USER}/private-vit", token=False)


def test_pushing_again_the_same_folder_adds_no_commit(online, folders):
    push_to_hub(folders["classifier"], f"{ORG}/again")
    push_to_hub(folders["classifier"], f"{ORG}/again")
    assert len(online.store.commits_on(f"{ORG}/again")) == 2


# ------------------------------------------------------------------------------------------- errors


def test_no_token_is_a_clear_error(online, folders, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(MissingTokenError, match="hf auth login"):
        push_to_hub(folders["classifier"], f"{ORG}/no-token")
    assert not online.store.exists(f"{ORG}/no-token")


def test_rejected_token_and_foreign_namespace_are_clear_errors(online, folders):
    with pytest.raises(MissingTokenError, match=r"rejected the token \(401\) given in --hub_token: pass a valid"):
        push_to_hub(folders["classifier"], f"{ORG}/bad-token", token="hf_wrong")
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("HF_TOKEN", "hf_wrong")
        with pytest.raises(MissingTokenError, match=r"rejected the token \(401\) found: run `hf auth login"):
            push_to_hub(folders["classifier"], f"{ORG}/bad-token")
    with pytest.raises(MissingTokenError, match="cannot write to 'someone-else'"):
        push_to_hub(folders["classifier"], "someone-else/model")


@pytest.mark.parametrize("repo_id", ["no-namespace", "org/a/b", "org/name--x", "org/", "-org/name", "org/na me"])
def test_malformed_repo_id_fails_before_any_request(online, folders, repo_id):
    before = len(online.requests)
    with pytest.raises(InvalidRepoIdError, match="namespace/name"):
        push_to_hub(folders["classifier"], repo_id)
    assert len(online.requests) == before


def test_incomplete_folders_name_what_is_missing(folders, tmp_path):
    no_weights = _copy(folders["classifier"], tmp_path / "a")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(IncompleteModelFolderError, match="missing model.safetensors"):
        load_model_folder(no_weights)

    no_code = _copy(folders["tokenizer"], tmp_path / "b")
    (no_code / "modeling_tiny_codebook.py").unlink()
    with pytest.raises(IncompleteModelFolderError, match="missing modeling_tiny_codebook.py, named in auto_map"):
        load_model_folder(no_code)

    broken = _copy(folders["classifier"], tmp_path / "c")
    weights = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    (broken / "metrics.json").write_text(json.dumps({"accuracy": {"top1": 0.5}}))
    (broken / "config.json").unlink()
    with pytest.raises(IncompleteModelFolderError) as error:
        load_model_folder(broken)
    message = str(error.value)  # all problems at once
    assert "missing config.json" in message and "truncated" in message and "must be flat" in message

    with pytest.raises(IncompleteModelFolderError, match="does not exist"):
        load_model_folder(tmp_path / "nowhere")


def test_offline_mode_is_a_clear_error(online, folders, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = len(online.requests)
    with pytest.raises(OfflineModeError, match="HF_HUB_OFFLINE"):
        push_to_hub(folders["classifier"], f"{ORG}/offline")
    assert len(online.requests) == before


def test_network_down_is_a_clear_error(online, folders, monkeypatch):
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(HubUnreachableError, match="Cannot reach the Hub"):
        push_to_hub(folders["classifier"], f"{ORG}/unreachable")


def test_invalid_card_metadata_fails_before_any_request(online, folders):
    before = len(online.requests)
    with pytest.raises(InvalidCardMetadataError, match="license 'Apache 2' is not a Hub license id"):
        push_to_hub(folders["classifier"], f"{ORG}/bad-card", license="Apache 2")
    assert len(online.requests) == before
    with pytest.raises(InvalidCardMetadataError, match="license 'other' needs license_name and license_link"):
        render_model_card(load_model_folder(folders["classifier"]), f"{ORG}/x", license="other")
    with pytest.raises(InvalidRepoIdError, match="--tokenizer_hub_id"):
        push_to_hub(folders["linked"], f"{ORG}/x", tokenizer_hub_id="org/a/b")


# ------------------------------------------------------------------------------------------- cards and CLI


def test_metrics_not_measured_are_not_shown(folders, tmp_path):
    assert [
        m["key"] for m in measured_metrics({"psnr": None, "ssim": float("nan"), "rfid": True, "accuracy": 0.5})
    ] == ["accuracy"]
    bare = _copy(folders["classifier"], tmp_path / "bare")
    for name in ("metrics.json", "training_config.json", "samples.png"):
        (bare / name).unlink()
    card = render_model_card(load_model_folder(bare), f"{ORG}/bare")
    assert card.data.eval_results is None and card.data.metrics is None
    assert "No evaluation metrics were recorded" in card.text and "%" not in card.text.split("## Evaluation")[1]
    assert "samples.png" not in card.text and "training configuration was not recorded" in card.text


def _evaluation_table(card_text: str) -> list[tuple[str, str]]:
    """(metric, value) of every row of the card's Evaluation table, as a reader sees it."""
    section = card_text.split("## Evaluation", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("|")]
    assert rows[0][0].strip() == "Metric" and set(rows[1][0]) == {"-"}, "the table header is missing"
    return [(cells[0].strip(), cells[1].strip()) for cells in rows[2:]]


def test_card_evaluation_table_shows_every_measured_metric(folders):
    tokenizer_card = render_model_card(load_model_folder(folders["tokenizer"]), TOKENIZER_REPO)
    assert _evaluation_table(tokenizer_card.text) == [
        ("PSNR (dB)", "24.5"),
        ("SSIM", "0.81"),
        ("Codebook usage", "75.00%"),
        ("Codebook perplexity", "5.9"),
    ]
    classifier_card = render_model_card(load_model_folder(folders["classifier"]), CLASSIFIER_REPO)
    assert _evaluation_table(classifier_card.text) == [("Accuracy", "81.25%")]


def test_listing_a_classifier_twice_keeps_one_entry(folders):
    card = render_model_card(load_model_folder(folders["tokenizer"]), TOKENIZER_REPO).content
    assert listed_dependents(card) == []
    once = list_dependent_in_card(card, "org/b")
    twice = list_dependent_in_card(list_dependent_in_card(once, "org/a"), "org/b")
    assert listed_dependents(twice) == ["org/a", "org/b"]
    assert ModelCard(twice).data.to_dict() == ModelCard(card).data.to_dict()
    foreign = list_dependent_in_card("---\nlicense: mit\n---\n# A card\n", "org/a")
    assert listed_dependents(foreign) == ["org/a"]


def test_cli_push_subcommand(online, folders, capsys):
    import argparse

    parser = argparse.ArgumentParser(prog="hf-vq")
    add_push_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "push",
            "--model_dir",
            str(folders["classifier"]),
            "--hub_model_id",
            f"{ORG}/from-cli",
            "--commit_message",
            "from the CLI",
        ]
    )
    url = args.handler(args)
    assert f"{ORG}/from-cli" in capsys.readouterr().out
    assert online.store.commits_on(f"{ORG}/from-cli")[0]["message"] == "from the CLI" and url
    bad = parser.parse_args(["push", "--model_dir", str(folders["classifier"]), "--hub_model_id", "nope"])
    with pytest.raises(SystemExit, match="hf-vq push: error: Invalid --hub_model_id 'nope'"):  # the README's form
        bad.handler(bad)


def test_training_flags_are_checked_before_training(online, monkeypatch):
    import argparse

    parser = argparse.ArgumentParser()
    add_hub_arguments(parser)
    check_push_arguments(parser.parse_args([]))  # no --push_to_hub: nothing to check
    with pytest.raises(InvalidRepoIdError, match="needs --hub_model_id"):
        check_push_arguments(parser.parse_args(["--push_to_hub"]))
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(MissingTokenError):
        check_push_arguments(parser.parse_args(["--push_to_hub", "--hub_model_id", f"{ORG}/m"]))


def test_hf_vq_cli_has_the_push_command():
    from hf_vq.cli import build_parser

    args = build_parser().parse_args(["push", "--model_dir", "d", "--hub_model_id", "org/m", "--private"])
    assert args.private and args.hub_model_id == "org/m" and re.search("run_push", args.handler.__name__)


# ------------------------------------------------------------------------------------------- VQGAN


@pytest.fixture(scope="module")
def vqgan_folder(tmp_path_factory) -> Path:
    from hf_vq.models import vqgan

    config = vqgan.VQGANConfig(
        block_out_channels=[8, 16],
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=8,
        image_size=8,
        attention_resolutions=[],
        codebook_size=16,
        embed_dim=4,
        num_channels=1,
        sync_nu=0.2,
        affine="learned",
        alternating=True,
    )
    folder = tmp_path_factory.mktemp("vqgan") / "vqgan"
    vqgan.VQGANModel(config).save_pretrained(folder)
    vqgan.VQGANImageProcessor.from_model_config(config).save_pretrained(folder)
    _write_run_files(folder, {**TOKENIZER_METRICS, "rfid": 12.5}, {"max_train_steps": 50, "train_batch_size": 4})
    return folder


def test_vqgan_round_trip_with_remote_code(online, vqgan_folder, tmp_path):
    """The real tokenizer: pushed, then loaded by `trust_remote_code=True` and by its card's snippet."""
    push_to_hub(vqgan_folder, f"{ORG}/vqgan")
    pushed_files = set(online.store.commits_on(f"{ORG}/vqgan")[0]["files"])
    assert {"modeling_vqgan.py", "configuration_vqgan.py", "preprocessor_config.json", "README.md"} <= pushed_files
    card = ModelCard.load(f"{ORG}/vqgan")
    assert [r.metric_type for r in card.data.eval_results] == ["psnr", "ssim", "rfid", "codebook_usage", "perplexity"]
    assert (
        "Synchronized update (nu = 0.2)" in card.text and "Affine re-parameterised codes (mode: learned)" in card.text
    )
    script = textwrap.dedent(f"""
        import sys

        class NoHfVq:  # the model must load from the pushed code alone, as where hf_vq is not installed
            def find_spec(self, name, path=None, target=None):
                if name == "hf_vq" or name.startswith("hf_vq."):
                    raise ImportError("hf_vq is blocked in this test")

        sys.meta_path.insert(0, NoHfVq())
        import re, torch
        from huggingface_hub import ModelCard
        from transformers import AutoModel
        hub_model = AutoModel.from_pretrained("{ORG}/vqgan", trust_remote_code=True).eval()
        local = AutoModel.from_pretrained(r"{vqgan_folder}", trust_remote_code=True).eval()
        pixels = torch.rand(2, 1, 8, 8) * 2 - 1
        assert torch.equal(hub_model.encode(pixels).image_tokens, local.encode(pixels).image_tokens)
        exec(re.search(r"```python\\n(.*?)```", ModelCard.load("{ORG}/vqgan").text, re.S).group(1), {{}})
        print("ROUND TRIP OK")
    """)
    env = {
        **os.environ,
        "HF_ENDPOINT": online.url,
        "HF_HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_TOKEN": TOKEN,
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ROUND TRIP OK" in result.stdout
