"""transformers' own common tests (`ModelTesterMixin`, `ConfigTester`) run against the token ViT, as transformers runs
them against its models: the measure of "behaves like a transformers model" (issue 27).

Their code is not committed here: it comes from transformers' source distribution of the installed version, which
ships `tests/test_modeling_common.py` and `tests/test_configuration_common.py` (but not the three helper modules they
import; small stand-ins replace those, see `install_stand_ins`). Fetch and unpack it once, then run:

    pip download --no-deps --no-binary :all: \\
        transformers==$(python -c 'import transformers;print(transformers.__version__)') -d /tmp/tf_sdist
    tar xzf /tmp/tf_sdist/transformers-*.tar.gz -C /tmp/tf_sdist
    pip install parameterized   # imported by test_modeling_common.py
    python -m pytest -m slow tests/test_transformers_common.py

`HF_VQ_TRANSFORMERS_TESTS` names another unpacked source tree. Without one the module is skipped, saying so. What
applies, what passes and each opt-out with its reason: docs/transformers_common_tests.md.
"""

import os
import sys
import types
import unittest
import unittest.mock
from pathlib import Path

import pytest
import torch
import transformers

from hf_vq import TokenViTConfig, TokenViTForImageClassification, VQGANConfig, VQGANModel

pytestmark = pytest.mark.slow

SOURCE_TREE = Path(
    os.environ.get("HF_VQ_TRANSFORMERS_TESTS", f"/tmp/tf_sdist/transformers-{transformers.__version__}")
)
if not (SOURCE_TREE / "tests" / "test_modeling_common.py").is_file():
    pytest.skip(
        f"transformers' common tests not found under {SOURCE_TREE}: unpack the source distribution of transformers "
        f"{transformers.__version__} there (or set HF_VQ_TRANSFORMERS_TESTS); see this module's docstring",
        allow_module_level=True,
    )
pytest.importorskip(
    "parameterized", reason="transformers' test_modeling_common.py imports parameterized: pip install it"
)


def install_stand_ins() -> None:
    """The source distribution lacks three modules that the common test files import. Stand in for them, only where
    absent: the export mixin and the generation mixin (the token ViT does not generate; its export is tested in
    tests/test_model_graphs.py) as empty mixins, and the common config kwargs as a few non-default values of
    `PreTrainedConfig`'s own fields, which `ConfigTester.check_config_arguments_init` round-trips."""
    stand_ins = {
        "tests.exporters.test_export": {"ExportTesterMixin": type("ExportTesterMixin", (), {})},
        "tests.generation.test_utils": {"GenerationTesterMixin": type("GenerationTesterMixin", (), {})},
        "tests.utils.test_configuration_utils": {
            "config_common_kwargs": {
                "return_dict": False,
                "output_hidden_states": True,
                "output_attentions": True,
                "dtype": "float16",
                "id2label": {0: "label"},
                "label2id": {"label": "0"},
                "problem_type": "regression",
                "architectures": ["TokenViTForImageClassification"],
            }
        },
    }
    for name, attributes in stand_ins.items():
        if (SOURCE_TREE / (name.replace(".", "/") + ".py")).is_file():
            continue
        for level in range(2, name.count(".") + 2):  # the parent packages, then the module
            partial = ".".join(name.split(".")[:level])
            module = sys.modules.setdefault(partial, types.ModuleType(partial))
            module.__path__ = getattr(module, "__path__", [])
        sys.modules[name].__dict__.update(attributes)


# The imports of transformers' test modules below must come after the source tree joins sys.path (and, for
# test_modeling_common, after install_stand_ins()): hence their noqa E402.
sys.path.insert(0, str(SOURCE_TREE))
import tests  # noqa: E402  (a namespace package: the source tree's tests/ has no __init__.py, nor has ours)

if str(SOURCE_TREE / "tests") not in list(tests.__path__):  # imported before the source tree joined sys.path
    tests.__path__.append(str(SOURCE_TREE / "tests"))
install_stand_ins()
# test_configuration_common.py imports transformers "directly" from its folder's __init__.py (which the source
# distribution lacks) into a name it never uses: give it the installed transformers instead.
with unittest.mock.patch("transformers.utils.direct_transformers_import", lambda path: transformers):
    from tests.test_configuration_common import ConfigTester
from tests.test_modeling_common import ModelTesterMixin, ids_tensor  # noqa: E402


class TokenViTModelTester:
    """Tiny configs and inputs, as transformers' `ViTModelTester` makes them for ViT."""

    def __init__(
        self,
        parent,
        batch_size=13,
        grid_size=(4, 4),
        codebook_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        num_labels=3,
        is_training=True,
    ):
        self.parent = parent
        self.batch_size = batch_size
        self.grid_size = list(grid_size)
        self.codebook_size = codebook_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.num_labels = num_labels
        self.is_training = is_training
        self.seq_length = grid_size[0] * grid_size[1] + 1  # the class token, then the grid
        self.expected_num_hidden_layers = num_hidden_layers + 1  # the embeddings, then each layer

    def get_config(self) -> TokenViTConfig:
        return TokenViTConfig(
            codebook_size=self.codebook_size,
            grid_size=self.grid_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            num_labels=self.num_labels,
        )

    def prepare_config_and_inputs(self):
        image_tokens = ids_tensor([self.batch_size, *self.grid_size], self.codebook_size)
        labels = ids_tensor([self.batch_size], self.num_labels)
        return self.get_config(), image_tokens, labels

    def prepare_config_and_inputs_for_common(self):
        config, image_tokens, _ = self.prepare_config_and_inputs()
        return config, {"image_tokens": image_tokens}

    def create_and_check_for_image_classification(self, config, image_tokens, labels):
        model = TokenViTForImageClassification(config).eval()
        result = model(image_tokens=image_tokens, labels=labels)
        self.parent.assertEqual(result.logits.shape, (self.batch_size, self.num_labels))


class TokenViTModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (TokenViTForImageClassification,)
    test_resize_embeddings = True
    test_torch_exportable = True
    has_attentions = True
    # The mixin skips this check for files without a copyright year of 2023 or later (its older models); ours must
    # pass it: every tensor comes out of `_init_weights` as it comes out of `__init__`.
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        self.model_tester = TokenViTModelTester(self)
        self.config_tester = ConfigTester(self, config_class=TokenViTConfig, has_text_modality=False, hidden_size=36)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        """The mixin adds labels for the classifiers named in transformers' own auto mappings; the token ViT is
        registered at run time, so add them as it does for `MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES`."""
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels:
            inputs_dict["labels"] = torch.zeros(self.model_tester.batch_size, dtype=torch.long)
        return inputs_dict

    def test_resize_tokens_embeddings(self):
        """The mixin's test writes ids past the old vocabulary into `inputs_dict["input_ids"]`, a text model's input
        name; run it with the token grid under that name, renamed back to `image_tokens` for the forward."""
        tester, prepare = self.model_tester, self._prepare_for_class

        def config_and_ids():
            config, inputs = TokenViTModelTester.prepare_config_and_inputs_for_common(tester)
            return config, {"input_ids": inputs["image_tokens"]}

        def renamed(inputs_dict, model_class, return_labels=False):
            inputs_dict = {
                ("image_tokens" if key == "input_ids" else key): value for key, value in inputs_dict.items()
            }
            return prepare(inputs_dict, model_class, return_labels)

        with (
            unittest.mock.patch.object(tester, "prepare_config_and_inputs_for_common", config_and_ids),
            unittest.mock.patch.object(self, "_prepare_for_class", renamed),
        ):
            super().test_resize_tokens_embeddings()

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_for_image_classification(self):
        self.model_tester.create_and_check_for_image_classification(*self.model_tester.prepare_config_and_inputs())


class VQGANModelTester:
    """The tokenizer of configs/vqgan_tiny.yaml, smaller: 16x16 RGB images -> an 8x8 grid of 32 codes."""

    def __init__(self, parent, batch_size=4, image_size=16, num_channels=3, is_training=True):
        self.parent = parent
        self.batch_size = batch_size
        self.image_size = image_size
        self.num_channels = num_channels
        self.is_training = is_training
        self.num_hidden_layers = 2  # block_out_channels has two stages

    def get_config(self) -> VQGANConfig:
        return VQGANConfig(
            num_channels=self.num_channels,
            image_size=self.image_size,
            block_out_channels=[16, 32],
            layers_per_block=1,
            norm_num_groups=8,
            latent_channels=8,
            embed_dim=4,
            codebook_size=32,
        )

    def prepare_config_and_inputs_for_common(self):
        pixel_values = torch.rand(self.batch_size, self.num_channels, self.image_size, self.image_size) * 2 - 1
        return self.get_config(), {"pixel_values": pixel_values}


class VQGANModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (VQGANModel,)
    has_attentions = False  # its attention blocks are single-head over a feature map; it returns no attentions
    test_resize_embeddings = False  # a pixel model: no token embedding
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        self.model_tester = VQGANModelTester(self)
        # A convolutional tokenizer has no hidden_size / num_attention_heads / num_hidden_layers, the properties
        # the tester checks by default (transformers' own conv models pass their own list too).
        self.config_tester = ConfigTester(
            self,
            config_class=VQGANConfig,
            has_text_modality=False,
            common_properties=["codebook_size", "embed_dim", "image_size"],
        )

    def test_config(self):
        self.config_tester.run_common_tests()

    # transformers' own pixel models (ViT, BEiT, CLIP's vision tower, ConvNext...) override the next two tests: the
    # mixin's versions assume a text model (an `nn.Embedding` input layer; hidden states of shape (seq, hidden)).

    def test_model_get_set_embeddings(self):
        """As ViT's override, plus the setter: the input layer is the encoder's `conv_in` (a pixel model has no token
        embedding), and `set_input_embeddings` replaces it."""
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIs(model.get_input_embeddings(), model.encoder.conv_in)
            replacement = torch.nn.Conv2d(config.num_channels, config.block_out_channels[0], kernel_size=3, padding=1)
            model.set_input_embeddings(replacement)
            self.assertIs(model.get_input_embeddings(), replacement)
            self.assertIsNone(model.get_output_embeddings())

    def test_hidden_states_output(self):
        """As ConvNext's override: the hidden states are feature maps (batch, channels, height, width), the encoder's
        (after `conv_in`, each level, the mid block) then the decoder's (after `conv_in`, the mid block, each level),
        asked for by argument or by the config."""
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        size, stages = self.model_tester.image_size, len(config.block_out_channels)
        low = size // config.downsampling_factor

        def check(inputs: dict, config: VQGANConfig) -> None:
            model = VQGANModel(config).eval()
            with torch.no_grad():
                hidden_states = model(**inputs).hidden_states
            self.assertEqual(len(hidden_states), 2 * stages + 4)
            self.assertTrue(all(h.ndim == 4 and h.shape[0] == self.model_tester.batch_size for h in hidden_states))
            self.assertEqual(tuple(hidden_states[0].shape[1:]), (config.block_out_channels[0], size, size))
            self.assertEqual(tuple(hidden_states[stages + 1].shape[-2:]), (low, low))  # the encoder's mid block
            self.assertEqual(tuple(hidden_states[-1].shape[-2:]), (size, size))  # the decoder's last level

        check({**inputs_dict, "output_hidden_states": True}, config)
        config.output_hidden_states = True
        check(inputs_dict, config)
