"""`# Copied from` blocks (the MaskGIT prior's copies of the token ViT's transformer block) match their originals;
utils/check_copies.py finds a stale copy and rewrites it."""

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def load_checker():
    spec = importlib.util.spec_from_file_location("check_copies", REPO_ROOT / "utils" / "check_copies.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_every_copy_in_the_package_matches_its_original():
    checker = load_checker()
    assert checker.check_copies() == [], "run `python utils/check_copies.py --fix_and_overwrite`"
    copies = checker.find_copies(REPO_ROOT / "hf_vq/models/maskgit/modeling_maskgit.py")
    assert {copy.target.rsplit(".", 1)[-1] for copy in copies} >= {"TokenViTAttention", "TokenViTLayer"}


def test_a_stale_copy_is_found_and_rewritten(tmp_path):
    checker = load_checker()
    copied = tmp_path / "modeling_maskgit.py"
    shutil.copy(REPO_ROOT / "hf_vq/models/maskgit/modeling_maskgit.py", copied)
    source = copied.read_text()
    edited = source.replace("hidden_states + self.dropout(attended)", "hidden_states + 2 * self.dropout(attended)", 1)
    assert edited != source
    copied.write_text(edited)
    stale = checker.check_file(copied, overwrite=False)
    assert len(stale) == 1 and "differs from hf_vq.models.token_vit.modeling_token_vit.TokenViTLayer" in stale[0]
    assert checker.check_file(copied, overwrite=True) == stale
    assert copied.read_text() == source and checker.check_file(copied, overwrite=False) == []


def test_bad_markers_get_clear_errors(tmp_path):
    checker = load_checker()
    module = tmp_path / "module.py"
    module.write_text("# Copied from hf_vq.models.token_vit.modeling_token_vit.TokenViTLayer\nx = 1\n")
    with pytest.raises(ValueError, match="must sit right above a def or class"):
        checker.check_file(module, overwrite=False)
    module.write_text(
        "# Copied from hf_vq.models.token_vit.modeling_token_vit.TokenViTLayer with TokenViT=>X\nclass A:\n    pass\n"
    )
    with pytest.raises(ValueError, match=r"cannot read the rename 'TokenViT=>X'; write `with Old->New"):
        checker.check_file(module, overwrite=False)
    module.write_text("# Copied from hf_vq.models.token_vit.modeling_token_vit.NoSuchLayer\nclass A:\n    pass\n")
    with pytest.raises(ValueError, match="NoSuchLayer is not defined in hf_vq/models/token_vit/modeling_token_vit.py"):
        checker.check_file(module, overwrite=False)
    module.write_text("# Copied from hf_vq.models.no_such_module.Layer\nclass A:\n    pass\n")
    with pytest.raises(ValueError, match="no module of that name"):
        checker.check_file(module, overwrite=False)
