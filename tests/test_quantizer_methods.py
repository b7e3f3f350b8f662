"""The successors of Huh et al. as quantizer options: SimVQ, the rotation trick, EMA codebooks, the authors' SGD
alternating step and finite scalar quantization. Expected values and gradients are derived from each paper's
formula here, independently of the implementation."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError

from hf_vq import (
    FiniteScalarQuantizer,
    GroupedVectorQuantizer,
    ResidualVectorQuantizer,
    VectorQuantizer,
    VQGANConfig,
    VQGANModel,
)
from hf_vq.quantization import build_quantizer, rotation_trick


def channels_last(tensor):
    return tensor.movedim(1, -1).reshape(-1, tensor.shape[1])


def nearest(vectors, codebook):
    return torch.cdist(vectors, codebook).argmin(dim=1)


# --- the rotation trick (Fifty et al. 2024) --------------------------------------------------------


def test_rotation_trick_on_a_hand_computed_2d_example():
    # e = (2, 0), q = (0, 1): e^ = (1, 0), q^ = (0, 1), r = (1, 1) / sqrt(2).
    # R = I - 2 r r^T + 2 q^ e^T = [[1, 0], [0, 1]] - [[1, 1], [1, 1]] + [[0, 0], [2, 0]] = [[0, -1], [1, 0]]
    # (a quarter turn), lambda = ||q|| / ||e|| = 1/2. Gradient to e of <g, out> = lambda R^T g;
    # g = (1, 0): R^T g = (0, -1) -> (0, -0.5); g = (0, 1): R^T g = (1, 0) -> (0.5, 0).
    e = torch.tensor([[2.0, 0.0], [2.0, 0.0]], requires_grad=True)
    q = torch.tensor([[0.0, 1.0], [0.0, 1.0]], requires_grad=True)
    out = rotation_trick(e, q)
    assert torch.equal(out, q.detach())
    (out * torch.tensor([[1.0, 0.0], [0.0, 1.0]])).sum().backward()
    torch.testing.assert_close(e.grad, torch.tensor([[0.0, -0.5], [0.5, 0.0]]))
    assert q.grad is None  # lambda R is a constant: the code gets nothing from this path


def test_rotation_trick_gradient_equals_lambda_r_transpose_g_from_the_householder_formula():
    e = torch.randn(6, 5, requires_grad=True)
    q = torch.randn(6, 5)
    g = torch.randn(6, 5)
    (rotation_trick(e, q) * g).sum().backward()
    for i in range(6):
        e_hat, q_hat = e[i].detach() / e[i].detach().norm(), q[i] / q[i].norm()
        r = (e_hat + q_hat) / (e_hat + q_hat).norm()
        rotation = torch.eye(5) - 2 * torch.outer(r, r) + 2 * torch.outer(q_hat, e_hat)
        assert torch.allclose(rotation @ e_hat, q_hat, atol=1e-5)  # R maps e^ onto q^
        assert torch.allclose(rotation.T @ rotation, torch.eye(5), atol=1e-5)  # and is a rotation
        expected = q[i].norm() / e[i].detach().norm() * rotation.T @ g[i]
        torch.testing.assert_close(e.grad[i], expected, rtol=1e-4, atol=1e-5)


def test_vector_quantizer_with_rotation_sends_the_rotated_gradient_to_the_encoder():
    vq = VectorQuantizer(embed_dim=3, codebook_size=4, gradient_estimator="rotation")
    z = torch.randn(1, 3, 2, 2, requires_grad=True)
    upstream = torch.randn(1, 3, 2, 2)
    out = vq(z)
    torch.testing.assert_close(out.quantized, vq.get_codebook_entry(out.indices))
    (out.quantized * upstream).sum().backward()
    codes, vectors, g = channels_last(out.quantized.detach()), channels_last(z.detach()), channels_last(upstream)
    for i in range(4):
        e_hat, q_hat = vectors[i] / vectors[i].norm(), codes[i] / codes[i].norm()
        r = (e_hat + q_hat) / (e_hat + q_hat).norm()
        rotation = torch.eye(3) - 2 * torch.outer(r, r) + 2 * torch.outer(q_hat, e_hat)
        expected = codes[i].norm() / vectors[i].norm() * rotation.T @ g[i]
        torch.testing.assert_close(channels_last(z.grad)[i], expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(z.grad, upstream)  # not straight-through


def test_rotation_trick_with_the_synchronized_update_gives_the_codes_nu_times_the_task_gradient():
    torch.manual_seed(0)
    z = torch.randn(1, 3, 2, 2)
    upstream = torch.randn(1, 3, 2, 2)
    grads = {}
    for nu in (0.0, 0.5):
        vq = VectorQuantizer(embed_dim=3, codebook_size=4, gradient_estimator="rotation", sync_nu=nu)
        vq.embedding.weight.data = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
        inputs = z.clone().requires_grad_(True)
        out = vq(inputs)
        (out.quantized * upstream).sum().backward()  # the task gradient only: no quantizer loss
        grads[nu] = (inputs.grad, vq.embedding.weight.grad, out.indices.flatten())
    torch.testing.assert_close(grads[0.5][0], grads[0.0][0])  # the encoder's rotated gradient is unchanged by nu
    assert grads[0.0][1] is None or not grads[0.0][1].any()  # no synchronized update: no codebook gradient here
    expected = 0.5 * torch.zeros(4, 3).index_add_(0, grads[0.5][2], channels_last(upstream))
    torch.testing.assert_close(grads[0.5][1], expected)


# --- SimVQ (Zhu et al. 2024) -------------------------------------------------------------------------


def test_simvq_codebook_is_frozen_codes_times_learned_matrix_transposed():
    vq = VectorQuantizer(embed_dim=4, codebook_size=16, affine="linear", sync_nu=1.0)
    with torch.no_grad():
        vq.embedding.affine.weight.copy_(torch.randn(4, 4))
    raw, matrix = vq.embedding.weight.detach().clone(), vq.embedding.affine.weight.detach().clone()
    torch.testing.assert_close(vq.codebook, raw @ matrix.T)
    optimizer = torch.optim.SGD(vq.parameters(), lr=0.1)
    out = vq(torch.randn(2, 4, 3, 3))
    (out.quantized.sum() + out.loss).backward()
    assert vq.embedding.weight.grad is None and not vq.embedding.weight.requires_grad  # C is frozen
    assert vq.embedding.affine.weight.grad.abs().sum() > 0  # W is trained
    optimizer.step()
    assert torch.equal(vq.embedding.weight, raw)
    assert not torch.equal(vq.embedding.affine.weight, matrix)
    torch.testing.assert_close(vq.codebook, raw @ vq.embedding.affine.weight.detach().T)


def test_simvq_identity_at_initialisation_and_writes_land_in_the_effective_space():
    vq = VectorQuantizer(embed_dim=4, codebook_size=8, affine="linear")
    torch.testing.assert_close(vq.embedding.affine.weight, torch.eye(4))
    with torch.no_grad():
        vq.embedding.affine.weight.copy_(torch.eye(4) * 2 + 0.3 * torch.randn(4, 4))
    targets = torch.randn(3, 4)
    vq.embedding.set_effective_codes(torch.tensor([1, 4, 6]), targets)
    torch.testing.assert_close(vq.codebook[[1, 4, 6]], targets, rtol=1e-5, atol=1e-5)


def test_simvq_rejects_affine_groups():
    with pytest.raises(ValueError, match="affine_groups must be 1"):
        VectorQuantizer(embed_dim=4, codebook_size=8, affine="linear", affine_groups=2)


# --- EMA codebook updates ----------------------------------------------------------------------------


def test_ema_update_matches_the_closed_form_with_laplace_smoothing():
    decay, eps = 0.9, 1e-5
    vq = VectorQuantizer(embed_dim=2, codebook_size=3, codebook_update="ema", ema_decay=decay, channel_dim=-1).train()
    with torch.no_grad():
        vq.embedding.weight.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]))
    vq.embedding.ema.reset_codes(torch.arange(3), vq.embedding.weight.detach())
    codebook0 = vq.codebook
    vectors = torch.tensor([[1.0, 1.0], [-1.0, 2.0], [9.0, 1.0], [0.5, 0.5]])  # -> codes 0, 0, 1, 0
    out = vq(vectors)
    assert out.indices.tolist() == [0, 0, 1, 0]
    # N_k = decay * 1 + (1 - decay) * n_k; m_k = decay * c_k + (1 - decay) * s_k; c_k = m_k / N~_k.
    counts = torch.tensor([3.0, 1.0, 0.0])
    sums = torch.tensor([[0.5, 3.5], [9.0, 1.0], [0.0, 0.0]])
    sizes = decay * 1.0 + (1 - decay) * counts
    cluster_sums = decay * codebook0 + (1 - decay) * sums
    smoothed = (sizes + eps) / (sizes.sum() + 3 * eps) * sizes.sum()
    torch.testing.assert_close(vq.codebook, cluster_sums / smoothed[:, None])
    # The output of this step used the codes from before the update.
    torch.testing.assert_close(out.quantized, codebook0[[0, 0, 1, 0]])


def test_ema_codes_take_no_gradient_and_repeated_steps_converge_to_the_cluster_mean():
    vq = VectorQuantizer(embed_dim=2, codebook_size=1, codebook_update="ema", ema_decay=0.5, channel_dim=-1).train()
    vectors = torch.tensor([[1.0, 3.0], [3.0, 5.0]], requires_grad=True)  # mean (2, 4)
    for _ in range(40):
        out = vq(vectors)
    assert not vq.embedding.weight.requires_grad
    torch.testing.assert_close(vq.codebook, torch.tensor([[2.0, 4.0]]), rtol=1e-4, atol=1e-4)
    out.loss.backward()  # commitment part only: nothing reaches the codes
    assert vq.embedding.weight.grad is None


def test_ema_restart_resets_the_statistics_of_a_revived_code():
    vq = VectorQuantizer(embed_dim=2, codebook_size=4, codebook_update="ema", replace_freq=1, channel_dim=-1).train()
    with torch.no_grad():
        vq.embedding.weight.copy_(torch.tensor([[0.0, 0.0], [100.0, 100.0], [-100.0, 100.0], [100.0, -100.0]]))
    vq.embedding.ema.reset_codes(torch.arange(4), vq.embedding.weight.detach())
    vectors = torch.randn(32, 2) * 0.1
    vq(vectors)  # only code 0 is used: codes 1-3 are dead after this step
    vq(vectors)  # ...and restarted onto encoder vectors at the start of this one
    stats = vq.embedding.ema
    assert vq.codebook[1:].abs().max() < 1.0
    # A restarted code has N = decay * 1 + (1 - decay) * n and m = decay * c + (1 - decay) * s after its update.
    assert torch.all(stats.cluster_size[1:] <= 1.0 + 32)


def test_ema_rejects_options_that_would_fight_it():
    with pytest.raises(ValueError, match="affine"):
        VectorQuantizer(embed_dim=2, codebook_size=4, codebook_update="ema", affine="learned")
    with pytest.raises(ValueError, match="alternating"):
        VectorQuantizer(embed_dim=2, codebook_size=4, codebook_update="ema", alternating="sgd")
    with pytest.raises(ValueError, match="ema_decay"):
        VectorQuantizer(embed_dim=2, codebook_size=4, codebook_update="ema", ema_decay=1.0)
    with pytest.raises(ValueError, match="codebook_update"):
        VectorQuantizer(embed_dim=2, codebook_size=4, codebook_update="kmeans")


# --- alternating: the authors' SGD step beside the mean step -------------------------------------------


def test_sgd_alternating_is_one_sgd_step_of_the_codebook_loss():
    lr = 7.0
    vq = VectorQuantizer(embed_dim=3, codebook_size=5, alternating="sgd", alternating_lr=lr, channel_dim=-1).train()
    codebook0 = vq.codebook
    vectors = torch.randn(20, 3)
    indices = nearest(vectors, codebook0)
    out = vq(vectors)
    assert torch.equal(out.indices, indices)  # assignments kept
    # d/dc_k mean((c_{k(i)} - z_i)^2) = 2 / (N D) * sum_{i: k(i)=k} (c_k - z_i)
    gradient = torch.zeros(5, 3).index_add_(0, indices, codebook0[indices] - vectors) * 2 / vectors.numel()
    torch.testing.assert_close(vq.codebook, codebook0 - lr * gradient)
    torch.testing.assert_close(out.quantized, (codebook0 - lr * gradient)[indices])  # looked up after the step


def test_sgd_alternating_trains_the_simvq_matrix_not_the_frozen_codes():
    vq = VectorQuantizer(
        embed_dim=3, codebook_size=5, affine="linear", alternating="sgd", alternating_lr=1.0, channel_dim=-1
    ).train()
    raw = vq.embedding.weight.detach().clone()
    vectors = torch.randn(20, 3)
    indices = nearest(vectors, vq.codebook)
    vq(vectors)
    # dL/dW for codes C W^T: 2 / (N D) * sum_i (c_{k(i)} - z_i) c'_{k(i)}^T with W = I at the start.
    residual = raw[indices] - vectors
    expected = torch.eye(3) - 2 / vectors.numel() * residual.T @ raw[indices]
    assert torch.equal(vq.embedding.weight, raw)
    torch.testing.assert_close(vq.embedding.affine.weight, expected)


def test_sgd_alternating_steps_the_raw_codes_through_the_affine_transform_and_leaves_scale_and_shift():
    lr = 3.0
    vq = VectorQuantizer(
        embed_dim=3,
        codebook_size=5,
        affine="learned",
        affine_lr=1.0,
        alternating="sgd",
        alternating_lr=lr,
        channel_dim=-1,
    ).train()
    with torch.no_grad():
        vq.embedding.affine.scale.fill_(0.5)  # effective codes = 1.5 * raw + shift
        vq.embedding.affine.shift.fill_(0.2)
    raw, codebook0 = vq.embedding.weight.detach().clone(), vq.codebook
    vectors = torch.randn(20, 3)
    indices = nearest(vectors, codebook0)
    vq(vectors)
    # Chain rule: dL/dc'_k = 1.5 * dL/dc_k, with dL/dc_k = 2 / (N D) * sum_{i: k(i)=k} (c_k - z_i).
    gradient = torch.zeros(5, 3).index_add_(0, indices, codebook0[indices] - vectors) * 2 / vectors.numel()
    torch.testing.assert_close(vq.embedding.weight, raw - lr * 1.5 * gradient)
    assert torch.all(vq.embedding.affine.scale == 0.5) and torch.all(vq.embedding.affine.shift == 0.2)


def test_alternating_true_is_the_mean_step():
    vectors = torch.randn(30, 4)
    results = []
    for alternating in (True, "mean"):
        torch.manual_seed(3)
        vq = VectorQuantizer(embed_dim=4, codebook_size=6, alternating=alternating, channel_dim=-1).train()
        vq(vectors)
        results.append(vq.codebook)
    assert torch.equal(*results)
    with pytest.raises(ValueError, match="alternating mode"):
        VectorQuantizer(embed_dim=4, codebook_size=6, alternating="adam")


# --- finite scalar quantization (Mentzer et al. 2023) ---------------------------------------------------


def test_fsq_values_lie_on_the_grid_of_each_channel():
    fsq = FiniteScalarQuantizer(levels=[8, 5, 3], channel_dim=-1)
    out = fsq(torch.randn(500, 3) * 5)
    # L = 8: floor(L/2) = 4, values {-4..3} / 4; L = 5: {-2..2} / 2; L = 3: {-1, 0, 1}.
    grids = [torch.arange(-4, 4) / 4, torch.arange(-2, 3) / 2, torch.arange(-1, 2) / 1]
    for channel, grid in enumerate(grids):
        values = out.quantized[:, channel].unique()
        assert set(values.tolist()) <= set(grid.tolist())
        assert set(values.tolist()) == set(grid.tolist())  # large inputs reach every level
    assert float(out.loss) == 0.0


def test_fsq_rounds_the_tanh_bound_and_passes_its_derivative_straight_through():
    levels = [8, 5]
    fsq = FiniteScalarQuantizer(levels=levels, channel_dim=-1)
    z = torch.randn(50, 2, requires_grad=True)
    out = fsq(z)
    for channel, level in enumerate(levels):
        half = (level - 1) * (1 + 1e-3) / 2
        offset = 0.5 if level % 2 == 0 else 0.0
        shift = math.atanh(offset / half)
        bounded = torch.tanh(z.detach()[:, channel] + shift) * half - offset
        torch.testing.assert_close(out.quantized[:, channel].detach(), torch.round(bounded) / (level // 2))
    out.quantized.sum().backward()
    for channel, level in enumerate(levels):
        half = (level - 1) * (1 + 1e-3) / 2
        shift = math.atanh((0.5 if level % 2 == 0 else 0.0) / half)
        derivative = (1 - torch.tanh(z.detach()[:, channel] + shift) ** 2) * half / (level // 2)
        torch.testing.assert_close(z.grad[:, channel], derivative)


def test_fsq_indices_and_codes_are_a_bijection():
    fsq = FiniteScalarQuantizer(levels=[4, 3, 2])
    codebook = fsq.codebook
    assert codebook.shape == (24, 3) and fsq.codebook_size == 24
    assert torch.unique(codebook, dim=0).shape[0] == 24
    # Re-quantizing a grid point returns it and its index (the mixed-radix number of its digits). The input that
    # lands on level b of a channel inverts the bound: z = atanh((b + offset) / half) - shift.
    levels, half_width = torch.tensor([4.0, 3.0, 2.0]), torch.tensor([2.0, 1.0, 1.0])
    half = (levels - 1) * (1 + 1e-3) / 2
    offset = torch.tensor([0.5, 0.0, 0.5])
    z = torch.atanh((codebook * half_width + offset) / half) - torch.atanh(offset / half)
    out = fsq.eval()(z.reshape(24, 3, 1))
    digits = torch.round(codebook * half_width + half_width)
    expected_indices = (digits * torch.tensor([1.0, 4.0, 12.0])).sum(dim=1).long()
    assert torch.equal(expected_indices, torch.arange(24))
    assert torch.equal(out.indices.flatten(), expected_indices)
    torch.testing.assert_close(fsq.get_codebook_entry(out.indices), out.quantized)


def test_fsq_output_fields_and_bad_levels():
    fsq = build_quantizer("fsq", levels=[5, 5, 5])
    out = fsq(torch.randn(2, 3, 4, 4))
    assert out.indices.shape == (2, 4, 4) and out.quantized.shape == (2, 3, 4, 4)
    assert 1.0 <= float(out.perplexity) <= 125 and 0 < float(out.usage) <= 1
    assert fsq.state_dict() == {}  # no learned state
    with pytest.raises(ValueError, match="levels"):
        FiniteScalarQuantizer(levels=[8, 1])
    with pytest.raises(ValueError, match="embed_dim=3"):
        fsq(torch.randn(2, 4, 4, 4))


# --- every option in the grouped and residual quantizers ------------------------------------------------

OPTIONS = [
    dict(affine="linear"),
    dict(gradient_estimator="rotation", sync_nu=0.5),
    dict(codebook_update="ema", replace_freq=2),
    dict(alternating="sgd", alternating_lr=10.0, affine="learned"),
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("kind", ["vector", "grouped", "residual"])
def test_options_train_in_every_quantizer_type(kind, options):
    quantizer = {
        "vector": lambda: VectorQuantizer(8, 16, **options),
        "grouped": lambda: GroupedVectorQuantizer(8, 16, num_groups=2, **options),
        "residual": lambda: ResidualVectorQuantizer(8, 16, num_quantizers=2, **options),
    }[kind]().train()
    before = quantizer.codebook.clone()
    optimizer = torch.optim.SGD(quantizer.parameters(), lr=0.1)
    z = torch.randn(4, 8, 3, 3, requires_grad=True)
    for _ in range(3):
        out = quantizer(z)
        optimizer.zero_grad()
        (out.quantized.square().mean() + out.loss).backward()
        optimizer.step()
    assert torch.isfinite(out.quantized).all() and z.grad.abs().sum() > 0
    assert not torch.allclose(quantizer.codebook, before)
    torch.testing.assert_close(quantizer.eval().get_codebook_entry(quantizer(z).indices), quantizer(z).quantized)


# --- the tokenizer: config, export to diffusers, remote code ---------------------------------------------

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TOKENIZER_OPTIONS = {
    "simvq-rotation-sgd": dict(
        affine="linear", affine_lr=1.0, gradient_estimator="rotation", alternating="sgd", alternating_lr=20.0
    ),
    "ema": dict(affine=None, sync_nu=0.0, alternating=False, codebook_update="ema", ema_decay=0.9),
    "fsq": dict(
        quantizer_type="fsq", fsq_levels=[5, 4, 3, 2], embed_dim=4, codebook_size=120, affine=None, alternating=False
    ),
}


def tokenizer(name: str) -> VQGANModel:
    """The tiny tokenizer with one of the successor methods, after two training steps (so W, EMA stats moved)."""
    model = VQGANModel(VQGANConfig.from_yaml(CONFIGS / "vqgan_tiny.yaml", **TOKENIZER_OPTIONS[name]))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(2):
        optimizer.zero_grad()
        model.train()(torch.rand(4, 3, 16, 16) * 2 - 1).loss.backward()
        optimizer.step()
    return model.eval()


def test_tokenizer_config_builds_each_method():
    assert isinstance(tokenizer("fsq").quantize, FiniteScalarQuantizer)
    simvq = tokenizer("simvq-rotation-sgd").quantize
    assert (simvq.gradient_estimator, simvq.alternating_mode) == ("rotation", "sgd")
    assert not torch.allclose(simvq.embedding.affine.weight, torch.eye(4))  # W was trained
    ema = tokenizer("ema").quantize
    assert ema.codebook_update == "ema" and not ema.embedding.weight.requires_grad
    torch.testing.assert_close(
        VQGANModel(
            VQGANConfig.from_yaml(CONFIGS / "vqgan_tiny.yaml", affine="linear")
        ).quantize.embedding.affine.weight,
        torch.eye(4),
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(quantizer_type="fsq", fsq_levels=[8, 5, 5, 5], embed_dim=4), "codebook_size=1000"),
        (dict(quantizer_type="fsq", fsq_levels=[8, 1], embed_dim=2, codebook_size=8), "integers >= 2"),
        (dict(fsq_levels=[8, 5]), "only applies to quantizer_type='fsq'"),
        (dict(codebook_update="ema"), "codebook_update='ema'"),
        (dict(affine="linear", affine_groups=2), "affine_groups=1"),
        (dict(gradient_estimator="straight"), "gradient_estimator"),
        (dict(alternating="adam"), "alternating"),
    ],
)
def test_tokenizer_config_rejects_inconsistent_method_options(overrides, message):
    with pytest.raises((StrictDataclassClassValidationError, StrictDataclassFieldValidationError), match=message):
        VQGANConfig.from_yaml(CONFIGS / "vqgan_tiny.yaml", **overrides)


@pytest.mark.parametrize("name", ["simvq-rotation-sgd", "ema"])
def test_to_diffusers_exports_the_effective_codebook(name):
    model = tokenizer(name)
    vq_model = model.to_diffusers()
    pixel_values = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        ours = model.encode(pixel_values)
        quantized, _, (_, _, ids) = vq_model.quantize(vq_model.encode(pixel_values).latents)
        assert torch.equal(ids.reshape(ours.image_tokens.shape), ours.image_tokens)
        torch.testing.assert_close(quantized, ours.quantized, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            vq_model(pixel_values).sample, model(pixel_values).reconstruction, rtol=1e-4, atol=1e-4
        )


def test_to_diffusers_refuses_fsq():
    # diffusers' quantizer takes the nearest code of the raw latent; FSQ rounds tanh(latent), so even its implicit
    # codebook would give other ids: refusing is the only exact answer.
    with pytest.raises(NotImplementedError, match="fsq"):
        tokenizer("fsq").to_diffusers()


REMOTE_SCRIPT = """
import sys
sys.modules["hf_vq"] = None  # the checkpoint must bring its own quantizer code
import torch
from transformers import AutoModel
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
pixel_values = torch.load(sys.argv[2])
with torch.no_grad():
    output = model(pixel_values)
assert type(model.quantize).__module__.startswith("transformers_modules"), type(model.quantize).__module__
torch.save({"tokens": output.image_tokens, "reconstruction": output.reconstruction}, sys.argv[3])
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fsq", "simvq-rotation-sgd"])
def test_remote_code_checkpoint_of_each_method_loads_without_hf_vq(tmp_path, name):
    model = tokenizer(name)
    model.save_pretrained(tmp_path / "checkpoint")
    pixel_values = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.save(pixel_values, tmp_path / "in.pt")
    (tmp_path / "remote.py").write_text(REMOTE_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    result = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "remote.py"),
            str(tmp_path / "checkpoint"),
            str(tmp_path / "in.pt"),
            str(tmp_path / "out.pt"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        output = model(pixel_values)
    assert torch.equal(remote["tokens"], output.image_tokens)
    # Loaded weights may sit at any offset of the safetensors buffer (here 28 bytes past a 64-byte boundary), and
    # the CPU GEMM rounds differently for unaligned operands: the same codes, decoded, can differ in the last bit.
    torch.testing.assert_close(remote["reconstruction"], output.reconstruction, rtol=1e-5, atol=1e-5)
