"""A tokenizer and the models built on it, pushed as one linked set through the loopback Hub (tests/hub_server.py),
then used as a Hub user would: in a fresh Python where `import hf_vq` fails, with only transformers (and diffusers)
and `trust_remote_code=True`, through the Auto classes, both pipelines and the cards' own snippets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from huggingface_hub import HfApi, ModelCard

from hf_vq import TokenViTForImageClassification, VQGANConfig, VQGANImageProcessor, VQGANModel
from hf_vq.hub import LocalTokenizerError, listed_dependents, push_model_set, push_to_hub
from hf_vq.hub.model_set import add_push_set_subcommand
from hf_vq.models.token_vit import save_image_processor

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer  # noqa: E402
from test_hub import ORG, TOKEN, USER, _act_as_online_user  # noqa: E402

LABELS = {0: "T-shirt/top", 1: "Trouser", 2: "Pullover"}
TOKENIZER_REPO, TOKEN_VIT_REPO, PIXEL_VIT_REPO = (
    f"{ORG}/fmnist-vqgan",
    f"{ORG}/fmnist-token-vit",
    f"{ORG}/fmnist-pixel-vit",
)
PRIOR_REPO = f"{ORG}/fmnist-prior"
ALL_REPOS = (TOKENIZER_REPO, TOKEN_VIT_REPO, PIXEL_VIT_REPO, PRIOR_REPO)
COLLECTION = "Fashion-MNIST tokenizer and the models built on it"
PRIOR_METRICS = {
    "conditional_accuracy": 0.5,
    "real_accuracy": 0.8,
    "relative_conditional_accuracy": 0.625,
    "classifier_fid": 12.0,
    "reconstruction_classifier_fid": 3.0,
    "classifier_fid_ratio": 4.0,
    "generated_usage": 0.4,
    "generated_perplexity": 9.5,
    "real_usage": 0.9,
    "real_perplexity": 20.1,
    "eval_images": 48,
    "num_classes": 3,
    "dataset": "fashion_mnist",
    "split": "test",
}


# ------------------------------------------------------------------------------------------- folders


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("training-machine")


@pytest.fixture(scope="module")
def folders(workdir) -> dict[str, Path]:
    """What the training commands leave: a grayscale tokenizer with attention, a token ViT and a pixel ViT trained on
    it, each with metrics.json and a training_config.json full of this machine's absolute paths."""
    torch.manual_seed(0)
    data_dir = workdir / "datasets" / "fashion-mnist"
    data_dir.mkdir(parents=True)
    config = VQGANConfig(
        num_channels=1,
        image_size=16,
        block_out_channels=[16, 32],
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=8,
        embed_dim=4,
        codebook_size=32,
        attention_resolutions=[8],
        sync_nu=0.2,
        affine="learned",
        alternating=True,
    )
    tokenizer_dir = workdir / "outputs" / "fmnist-vqgan"
    tokenizer = VQGANModel(config).eval()
    processor = VQGANImageProcessor.from_model_config(config)
    tokenizer.save_pretrained(tokenizer_dir, image_processor=processor)
    _run_files(
        tokenizer_dir,
        {
            "psnr": 21.5,
            "ssim": 0.7,
            "codebook_usage": 0.9,
            "perplexity": 25.0,
            "dataset": "fashion-mnist",
            "split": "test",
            "train_steps": 10,
            "hardware": "CPU",
        },
        {"train_data_dir": str(data_dir), "output_dir": str(tokenizer_dir), "max_train_steps": 10},
    )

    token_vit_dir = workdir / "outputs" / "fmnist-token-vit"
    model = TokenViTForImageClassification.from_tokenizer(
        str(tokenizer_dir),
        tokenizer=tokenizer,
        init_from_codebook=True,
        num_labels=3,
        id2label=LABELS,
        label2id={name: index for index, name in LABELS.items()},
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
    )
    model.save_pretrained(token_vit_dir, image_processor=processor)
    classifier_metrics = {
        "accuracy": 0.625,
        "top5_accuracy": 1.0,
        "dataset": "fashion_mnist",
        "split": "test",
        "eval_examples": 64,
        "tokenizer": str(tokenizer_dir),
    }
    _run_files(
        token_vit_dir,
        classifier_metrics,
        {
            "tokenizer_name_or_path": str(tokenizer_dir),
            "output_dir": str(token_vit_dir),
            "dataset_name": "fashion_mnist",
            "learning_rate": 0.001,
        },
    )

    from transformers import ViTConfig, ViTForImageClassification

    pixel_vit_dir = workdir / "outputs" / "fmnist-pixel-vit"
    vit_config = ViTConfig(
        image_size=16,
        patch_size=2,
        num_channels=1,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        id2label=LABELS,
        label2id={name: index for index, name in LABELS.items()},
    )
    ViTForImageClassification(vit_config).save_pretrained(pixel_vit_dir)
    save_image_processor(processor, pixel_vit_dir)
    _run_files(
        pixel_vit_dir,
        classifier_metrics | {"accuracy": 0.5},
        {"tokenizer_name_or_path": str(tokenizer_dir), "output_dir": str(pixel_vit_dir), "model_type": "pixel_vit"},
    )

    from hf_vq import MaskGITModel
    from hf_vq.training.prior_evaluation import build_pipeline

    prior_dir = workdir / "outputs" / "fmnist-prior"
    prior = MaskGITModel.from_tokenizer(
        str(tokenizer_dir),
        tokenizer=tokenizer,
        num_classes=3,
        id2label=LABELS,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    ).eval()
    build_pipeline(tokenizer, prior).save_pretrained(prior_dir)
    (prior_dir / "checkpoints" / "checkpoint_0").mkdir(parents=True)  # training state stays local
    (prior_dir / "checkpoints" / "checkpoint_0" / "prior_tokenizer.json").write_text(
        json.dumps({"tokenizer": str(tokenizer_dir)})
    )
    _run_files(
        prior_dir,
        PRIOR_METRICS | {"tokenizer": str(tokenizer_dir)},
        {"tokenizer_name_or_path": str(tokenizer_dir), "output_dir": str(prior_dir), "dataset_name": "fashion_mnist"},
    )
    return {
        "tokenizer": tokenizer_dir,
        "token_vit": token_vit_dir,
        "pixel_vit": pixel_vit_dir,
        "prior": prior_dir,
        "data": data_dir,
    }


def _run_files(folder: Path, metrics: dict, training_config: dict) -> None:
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "training_config.json").write_text(json.dumps(training_config))
    PIL.Image.new("L", (16, 16), color=100).save(folder / "samples.png")


def _image(seed: int = 0) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (20, 20), dtype=np.uint8), mode="L")


# ------------------------------------------------------------------------------------------- the pushed set


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = HubServer(tmp_path_factory.mktemp("hub"), tokens={TOKEN: USER}, orgs={USER: [ORG]}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pushed(hub, folders, tmp_path_factory):
    patch = pytest.MonkeyPatch()
    _act_as_online_user(patch, hub.url, tmp_path_factory.mktemp("push-user"))
    try:
        return push_model_set(
            str(folders["tokenizer"]),
            [str(folders["token_vit"]), str(folders["pixel_vit"])],
            [str(folders["prior"])],
            hub_namespace=ORG,
            collection_title=COLLECTION,
        )
    finally:
        patch.undo()


@pytest.fixture
def online(hub, tmp_path, monkeypatch):
    _act_as_online_user(monkeypatch, hub.url, tmp_path)
    return hub


def test_set_is_pushed_tokenizer_first_and_dependents_pin_its_commit(hub, pushed):
    commits = [path for method, path in hub.requests if method == "POST" and "/commit/" in path]
    assert ["/".join(path.split("/")[3:5]) for path in commits] == list(ALL_REPOS)
    tokenizer_commit = hub.store.commits_on(TOKENIZER_REPO)[0]
    assert pushed.tokenizer_repo == TOKENIZER_REPO and pushed.tokenizer_revision == tokenizer_commit["id"]
    assert len(hub.store.commits_on(TOKENIZER_REPO)) == 2, "the tokenizer card lists its dependents in the first push"
    config = _pushed_json(hub, TOKEN_VIT_REPO, "config.json")
    assert (
        config["tokenizer_name_or_path"] == TOKENIZER_REPO and config["tokenizer_revision"] == tokenizer_commit["id"]
    )
    prior_config = _pushed_json(hub, PRIOR_REPO, "transformer/config.json")
    assert (
        prior_config["tokenizer_name_or_path"] == TOKENIZER_REPO
        and prior_config["tokenizer_revision"] == tokenizer_commit["id"]
    )
    assert set(pushed.commits) == set(ALL_REPOS)
    files = set(hub.store.commits_on(TOKEN_VIT_REPO)[0]["files"])
    assert {
        "modeling_token_vit.py",
        "vqgan_token_vit.py",
        "modeling_vqgan.py",
        "image_processing_vqgan.py",
        "vector_quantizer.py",
        "preprocessor_config.json",
    } <= files
    prior_files = set(hub.store.commits_on(PRIOR_REPO)[0]["files"])
    assert {
        "model_index.json",
        "pipeline_maskgit.py",
        "transformer/config.json",
        "vqgan/model.safetensors",
        "scheduler/scheduler_config.json",
        "metrics.json",
        "samples.png",
        "README.md",
    } <= prior_files
    assert not any(path.startswith("checkpoints/") for path in prior_files)
    assert hub.unhandled == []


def test_cards_link_both_ways_and_the_collection_groups_the_set(online, pushed):
    tokenizer_card = ModelCard.load(TOKENIZER_REPO)
    assert listed_dependents(tokenizer_card.text) == [PRIOR_REPO, TOKEN_VIT_REPO], (
        "the pixel ViT does not read the tokenizer"
    )
    assert f"[{PRIOR_REPO}]({online.url}/{PRIOR_REPO}): class-conditional image generation" in tokenizer_card.text
    prior_card = ModelCard.load(PRIOR_REPO)
    assert prior_card.data.base_model == TOKENIZER_REPO and prior_card.data.library_name == "diffusers"
    # class-conditional: no Hub task fits, and "unconditional-image-generation" would be wrong (issue 24)
    assert prior_card.data.pipeline_tag is None and "class-conditional-image-generation" in prior_card.data.tags
    assert [r.metric_type for r in prior_card.data.eval_results][:3] == [
        "conditional_accuracy",
        "real_accuracy",
        "relative_conditional_accuracy",
    ]
    assert "Classes (the `class_labels` it takes, in order): T-shirt/top, Trouser, Pullover." in prior_card.text
    assert "48 images" in prior_card.text
    token_vit_card = ModelCard.load(TOKEN_VIT_REPO)
    assert token_vit_card.data.base_model == TOKENIZER_REPO and pushed.tokenizer_revision in token_vit_card.text
    assert ModelCard.load(PIXEL_VIT_REPO).data.base_model is None
    for card in (tokenizer_card, token_vit_card):
        assert card.data.datasets == ["zalando-datasets/fashion_mnist"]
        assert {(r.dataset_config, r.dataset_split) for r in card.data.eval_results} == {("fashion_mnist", "test")}
        assert "subset `fashion_mnist`, `test` split" in card.text
        assert "pip install" not in card.text and "import hf_vq" not in card.text
    assert "64 images" in token_vit_card.text
    # Snippets make images of the mode and size the models take (the classifier's config has no channels: its
    # processor's say grayscale).
    for card in (tokenizer_card, token_vit_card, ModelCard.load(PIXEL_VIT_REPO)):
        assert 'Image.new("L", (16, 16)' in card.text and 'Image.new("RGB"' not in card.text
    collection = HfApi().get_collection(pushed.collection_url.split("/collections/")[1])
    assert collection.title == COLLECTION and [item.item_id for item in collection.items] == list(ALL_REPOS)


def test_no_uploaded_file_carries_a_local_path(hub, pushed, folders, workdir):
    for repo in ALL_REPOS:
        for commit in hub.store.commits_on(repo):
            for path, blob in commit["files"].items():
                content = hub.store.blob(repo, blob)
                assert str(workdir).encode() not in content, f"{repo}/{path} names the training machine's folder"
    training_config = _pushed_json(hub, TOKEN_VIT_REPO, "training_config.json")
    assert (
        training_config["tokenizer_name_or_path"] == TOKENIZER_REPO and training_config["output_dir"] == TOKEN_VIT_REPO
    )
    assert _pushed_json(hub, TOKENIZER_REPO, "training_config.json")["train_data_dir"] == "fashion-mnist"
    assert _pushed_json(hub, PIXEL_VIT_REPO, "metrics.json")["tokenizer"] == TOKENIZER_REPO
    assert _pushed_json(hub, PRIOR_REPO, "training_config.json")["tokenizer_name_or_path"] == TOKENIZER_REPO
    assert str(folders["tokenizer"]) in (folders["token_vit"] / "config.json").read_text(), (
        "the user's folder is untouched"
    )


# ------------------------------------------------------------------------------------------- a Hub user without hf_vq

USER_SCRIPT = textwrap.dedent(
    """
    import json, re, sys
    sys.modules["hf_vq"] = None  # `import hf_vq` raises ImportError: everything must come from the Hub repos
    import numpy as np, PIL.Image, torch
    from huggingface_hub import ModelCard
    from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline

    tokenizer_repo, token_vit_repo, pixel_vit_repo, prior_repo, out = sys.argv[1:6]
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 20), dtype=np.uint8), mode="L")
    results, modules = {}, {}

    tokenizer = AutoModel.from_pretrained(tokenizer_repo, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(tokenizer_repo, trust_remote_code=True)
    pixel_values = processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        results["tokens"] = tokenizer.encode(pixel_values).image_tokens
    results["features"] = pipeline("image-feature-extraction", model=tokenizer_repo, trust_remote_code=True)(
        image, return_tensors=True
    )
    modules["tokenizer"] = type(tokenizer).__module__

    for name, repo in (("token_vit", token_vit_repo), ("pixel_vit", pixel_vit_repo)):
        model = AutoModelForImageClassification.from_pretrained(repo, trust_remote_code=True).eval()
        pixels = AutoImageProcessor.from_pretrained(repo, trust_remote_code=True)(
            images=image, return_tensors="pt"
        )["pixel_values"]
        with torch.no_grad():
            results[name + "_logits"] = model(pixel_values=pixels).logits
        scores = pipeline("image-classification", model=repo, trust_remote_code=True)(image, top_k=3)
        results[name + "_scores"] = {entry["label"]: entry["score"] for entry in scores}
        modules[name] = type(model).__module__
        if name == "token_vit":
            modules["token_vit_tokenizer"] = type(model.tokenizer).__module__

    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(prior_repo, trust_remote_code=True)
    results["generated"] = pipe(
        class_labels=[0, 2], generator=torch.Generator().manual_seed(0), output_type="pt"
    ).images
    modules["prior"] = type(pipe.transformer).__module__
    modules["prior_vqgan"] = type(pipe.vqgan).__module__

    for repo in (tokenizer_repo, token_vit_repo, pixel_vit_repo, prior_repo):
        for block in re.findall(r"```python\\n(.*?)```", ModelCard.load(repo).text, re.S):
            exec(block, {})  # each card's usage snippet runs as written
    torch.save(results, out)
    print("MODULES" + json.dumps(modules))
    """
)


def test_a_hub_user_without_hf_vq_gets_the_same_outputs(hub, pushed, folders, tmp_path):
    (tmp_path / "user.py").write_text(USER_SCRIPT)
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_TOKEN": TOKEN,
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "PYTHONPATH": "",
    }
    before = len(hub.requests)
    result = subprocess.run(
        [sys.executable, "user.py", *ALL_REPOS, "out.pt"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    modules = json.loads(result.stdout.split("MODULES", 1)[1])
    assert all(
        modules[name].startswith("transformers_modules") for name in ("tokenizer", "token_vit", "token_vit_tokenizer")
    )
    assert modules["pixel_vit"].startswith("transformers.models.vit")
    assert modules["prior"].startswith("hf_vq_components.") and modules["prior_vqgan"].startswith("hf_vq_components.")
    # The classifier fetched its tokenizer's weights at the pinned commit.
    assert ("GET", f"/{TOKENIZER_REPO}/resolve/{pushed.tokenizer_revision}/model.safetensors") in hub.requests[before:]

    remote = torch.load(tmp_path / "out.pt")
    image = _image()
    processor = VQGANImageProcessor.from_pretrained(folders["tokenizer"])
    pixel_values = processor(images=image, return_tensors="pt")["pixel_values"]
    tokenizer = VQGANModel.from_pretrained(folders["tokenizer"]).eval()
    token_vit = TokenViTForImageClassification.from_pretrained(folders["token_vit"]).eval()
    from transformers import ViTForImageClassification

    pixel_vit = ViTForImageClassification.from_pretrained(folders["pixel_vit"]).eval()
    with torch.no_grad():
        assert torch.equal(remote["tokens"], tokenizer.encode(pixel_values).image_tokens)
        torch.testing.assert_close(remote["features"], tokenizer(pixel_values).last_hidden_state)
        assert remote["features"].shape == (1, 64, 4)
        for name, model in (("token_vit", token_vit), ("pixel_vit", pixel_vit)):
            logits = model(pixel_values=pixel_values).logits
            torch.testing.assert_close(remote[name + "_logits"], logits)
            probabilities = logits.softmax(-1)[0]
            assert remote[name + "_scores"] == pytest.approx(
                {LABELS[i]: float(probabilities[i]) for i in range(3)}, abs=1e-5
            )
    from diffusers import DiffusionPipeline

    local_pipe = DiffusionPipeline.from_pretrained(folders["prior"], trust_remote_code=True)
    generated = local_pipe(class_labels=[0, 2], generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert remote["generated"].shape == (2, 1, 16, 16)
    torch.testing.assert_close(remote["generated"], generated)


# ------------------------------------------------------------------------------------------- refusals and fallbacks


def test_a_dependent_with_a_local_only_tokenizer_is_refused_before_any_upload(online, folders):
    before = len(online.requests)
    with pytest.raises(LocalTokenizerError) as error:
        push_to_hub(folders["token_vit"], f"{ORG}/alone")
    message = str(error.value)
    assert f"hf-vq push-set --tokenizer_dir {folders['tokenizer']} --classifier_dirs {folders['token_vit']}" in message
    assert "--tokenizer_hub_id" in message
    assert online.requests[before:] == [] and not online.store.exists(f"{ORG}/alone")


def test_a_set_whose_classifier_reads_another_tokenizer_is_refused_before_any_upload(online, folders, tmp_path):
    other = tmp_path / "other-tokenizer"
    VQGANModel(VQGANConfig.from_pretrained(folders["tokenizer"])).save_pretrained(other)
    before = len(online.requests)
    with pytest.raises(LocalTokenizerError, match="not the tokenizer of this push"):
        push_model_set(str(other), [str(folders["token_vit"])], hub_namespace=ORG)
    assert online.requests[before:] == []


def test_dependents_pushed_later_against_a_hub_tokenizer_are_pinned_and_listed(online, pushed, folders, tmp_path):
    later = tmp_path / "later-vit"
    later.mkdir()
    for file in folders["token_vit"].iterdir():
        (later / file.name).write_bytes(file.read_bytes())
    head = online.store.commits_on(TOKENIZER_REPO)[0]["id"]
    result = push_model_set(
        tokenizer_hub_id=TOKENIZER_REPO, classifier_dirs=[f"{later}=token-vit-v2"], hub_namespace=ORG
    )
    assert result.tokenizer_revision == head, "pinned to the tokenizer's commit at push time"
    assert online.store.commits_on(TOKENIZER_REPO)[0]["message"] == f"List {ORG}/token-vit-v2 on the card"
    assert (
        _pushed_json(online, f"{ORG}/token-vit-v2", "config.json")["tokenizer_revision"] == result.tokenizer_revision
    )
    assert f"{ORG}/token-vit-v2" in listed_dependents(ModelCard.load(TOKENIZER_REPO).text)


def test_a_hub_without_collections_still_gets_the_set(folders, tmp_path, monkeypatch, capsys):
    with HubServer(tmp_path / "hub", tokens={TOKEN: USER}, orgs={USER: [ORG]}, collections=False) as server:
        _act_as_online_user(monkeypatch, server.url, tmp_path)
        result = push_model_set(
            str(folders["tokenizer"]), [str(folders["token_vit"])], hub_namespace=ORG, collection_title="x"
        )
        assert result.collection_url is None and server.store.exists(TOKEN_VIT_REPO)
    assert "the models are pushed, but the collection 'x' could not be made" in capsys.readouterr().out


def test_push_set_command(online, folders, capsys):
    import argparse

    parser = argparse.ArgumentParser(prog="hf-vq")
    add_push_set_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "push-set",
            "--tokenizer_dir",
            f"{folders['tokenizer']}=cli-vqgan",
            "--classifier_dirs",
            f"{folders['token_vit']}=cli-token-vit",
            "--hub_namespace",
            ORG,
        ]
    )
    args.handler(args)
    out = capsys.readouterr().out
    assert f"pushed {ORG}/cli-vqgan" in out and f"pushed {ORG}/cli-token-vit" in out
    assert _pushed_json(online, f"{ORG}/cli-token-vit", "config.json")["tokenizer_name_or_path"] == f"{ORG}/cli-vqgan"
    missing = parser.parse_args(["push-set", "--classifier_dirs", str(folders["token_vit"])])
    with pytest.raises(SystemExit, match="needs --tokenizer_dir"):
        missing.handler(missing)
    from hf_vq.cli import build_parser

    assert (
        build_parser().parse_args(["push-set", "--tokenizer_dir", "t", "--hub_namespace", "o"]).handler.__name__
        == "run_push_set"
    )


def _pushed_json(hub: HubServer, repo: str, path: str) -> dict:
    return json.loads(hub.store.blob(repo, hub.store.commits_on(repo)[0]["files"][path]))


def test_training_with_push_to_hub_refuses_a_local_tokenizer_before_training(folders):
    from argparse import Namespace

    from hf_vq.hub import check_tokenizer_for_push

    local = {"push_to_hub": True, "tokenizer_name_or_path": str(folders["tokenizer"]), "tokenizer_hub_id": None}
    with pytest.raises(LocalTokenizerError, match="pass --tokenizer_hub_id"):
        check_tokenizer_for_push(Namespace(**local))
    check_tokenizer_for_push(Namespace(**local), reads_tokenizer=False)  # a pixel ViT names no tokenizer
    check_tokenizer_for_push(Namespace(**{**local, "tokenizer_hub_id": TOKENIZER_REPO}))
    check_tokenizer_for_push(Namespace(**{**local, "tokenizer_name_or_path": TOKENIZER_REPO}))
    check_tokenizer_for_push(Namespace(**{**local, "push_to_hub": False}))


def test_a_classifier_trained_at_a_tokenizer_revision_keeps_it_when_pushed(online, pushed, folders, tmp_path):
    """Trained on the Hub tokenizer at an older commit (`--revision`): the push pins that commit, not the newest."""
    trained = tmp_path / "trained-at-revision"
    trained.mkdir()
    for file in folders["token_vit"].iterdir():
        (trained / file.name).write_bytes(file.read_bytes())
    older = online.store.commits_on(TOKENIZER_REPO)[-1]["id"]
    config = json.loads((trained / "config.json").read_text())
    (trained / "config.json").write_text(
        json.dumps(config | {"tokenizer_name_or_path": TOKENIZER_REPO, "tokenizer_revision": older})
    )
    push_to_hub(trained, f"{ORG}/vit-at-revision")
    assert older != online.store.commits_on(TOKENIZER_REPO)[0]["id"]
    assert _pushed_json(online, f"{ORG}/vit-at-revision", "config.json")["tokenizer_revision"] == older


OFFLINE_SCRIPT = textwrap.dedent(
    """
    import re, sys
    sys.modules["hf_vq"] = None
    from huggingface_hub import ModelCard, constants
    prior_repo = sys.argv[1]
    snippet = re.search(r"```python\\n(.*?)```", ModelCard.load(prior_repo).text if not constants.HF_HUB_OFFLINE
                        else open(sys.argv[2]).read(), re.S).group(1)
    if not constants.HF_HUB_OFFLINE:
        open(sys.argv[2], "w").write(ModelCard.load(prior_repo).text)
    exec(snippet, {})
    print("SNIPPET OK", constants.HF_HUB_OFFLINE)
    """
)


def test_the_prior_card_snippet_runs_offline_from_a_warm_cache(hub, pushed, tmp_path):
    """diffusers asks the Hub for model info even offline; the card resolves a snapshot first, so it works."""
    (tmp_path / "offline.py").write_text(OFFLINE_SCRIPT)
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "home"),
        "TRANSFORMERS_OFFLINE": "0",
        "HF_TOKEN": TOKEN,
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "PYTHONPATH": "",
    }
    for offline in ("0", "1"):  # once online to fill the cache, then offline
        before = len(hub.requests)
        result = subprocess.run(
            [sys.executable, "offline.py", PRIOR_REPO, "card.md"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env | {"HF_HUB_OFFLINE": offline, "TRANSFORMERS_OFFLINE": offline},
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        assert "SNIPPET OK" in result.stdout
    assert hub.requests[before:] == [], "the offline run made no request"


def test_a_prior_is_checked_against_the_tokenizer_copy_it_carries(online, pushed, folders):
    from hf_vq.hub import load_model_folder
    from hf_vq.hub.errors import TokenizerMismatchError
    from hf_vq.hub.identity import check_same_tokenizer, local_tokenizer_of

    prior = load_model_folder(folders["prior"])
    assert local_tokenizer_of(prior) == folders["prior"] / "vqgan", "the tokenizer component, not the transformer"
    head = online.store.commits_on(TOKENIZER_REPO)[0]["id"]
    check_same_tokenizer(HfApi(), prior, TOKENIZER_REPO, head, TOKEN)
    with pytest.raises(TokenizerMismatchError, match="the config and weights differ"):
        check_same_tokenizer(HfApi(), prior, TOKEN_VIT_REPO, online.store.commits_on(TOKEN_VIT_REPO)[0]["id"], TOKEN)
