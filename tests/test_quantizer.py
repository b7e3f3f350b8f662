"""The vector quantizer: the paper's methods, the helpers, state handling and bad inputs."""

import pytest
import torch
import torch.nn.functional as F

from hf_vq import GroupedVectorQuantizer, ResidualVectorQuantizer, VectorQuantizer
from hf_vq.quantization import (
    NonFiniteInputError,
    beta_commitment_loss,
    beta_from_vqvae_weight,
    kmeans_plus_plus_init,
    nearest_code_indices,
    replace_dead_codes,
)


def channels_last(tensor):
    return tensor.movedim(1, -1).reshape(-1, tensor.shape[1])


# --- synchronized update and straight-through gradients ------------------------------------------


@pytest.mark.parametrize("nu", [0.0, 0.5, 2.0])
def test_encoder_gets_upstream_gradient_and_codebook_gets_nu_times_it(nu):
    vq = VectorQuantizer(embed_dim=4, codebook_size=8, sync_nu=nu)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    upstream = torch.randn(2, 4, 3, 3)
    out = vq(z)
    (out.quantized * upstream).sum().backward()  # the loss is excluded on purpose

    assert torch.equal(z.grad, upstream)
    if nu == 0:
        assert vq.embedding.weight.grad is None
        return
    expected = torch.zeros(8, 4).index_add_(0, out.indices.flatten(), channels_last(upstream)) * nu
    torch.testing.assert_close(vq.embedding.weight.grad, expected)


def test_sync_update_reaches_learned_affine_parameters_with_nu_times_the_task_gradient():
    # Effective code c = (1 + lr * s) * c' + lr * b, so d<g, nu * q>/db = nu * lr * sum(g) and
    # d<g, nu * q>/ds = nu * lr * sum(g * c'): the sign and size of the synchronized update, not just "non-zero".
    nu, lr = 0.7, 2.0
    vq = VectorQuantizer(embed_dim=4, codebook_size=8, sync_nu=nu, affine="learned", affine_lr=lr)
    upstream = torch.randn(2, 4, 3, 3)
    out = vq(torch.randn(2, 4, 3, 3))
    (out.quantized * upstream).sum().backward()
    flat_upstream = channels_last(upstream)
    raw_codes = vq.embedding.weight.detach()[out.indices.flatten()]
    affine = vq.embedding.affine
    torch.testing.assert_close(affine.shift.grad, nu * lr * flat_upstream.sum(0, keepdim=True))
    torch.testing.assert_close(affine.scale.grad, nu * lr * (flat_upstream * raw_codes).sum(0, keepdim=True))


def test_quantized_value_is_the_selected_effective_code():
    vq = VectorQuantizer(embed_dim=4, codebook_size=8, affine="learned", sync_nu=0.3)
    with torch.no_grad():
        vq.embedding.affine.scale.fill_(0.5)
        vq.embedding.affine.shift.fill_(0.25)
    out = vq(torch.randn(2, 4, 3, 3))
    torch.testing.assert_close(channels_last(out.quantized), vq.codebook[out.indices.flatten()])
    torch.testing.assert_close(vq.get_codebook_entry(out.indices), out.quantized)


# --- beta commitment loss ---------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.8, 0.95, 1.0])
def test_beta_loss_matches_its_formula(beta):
    vq = VectorQuantizer(embed_dim=4, codebook_size=8, beta=beta)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = vq(z)
    q = channels_last(out.quantized).detach()
    diff = ((channels_last(z) - q) ** 2).mean()
    torch.testing.assert_close(out.commitment_loss, diff)
    torch.testing.assert_close(out.codebook_loss, diff)
    torch.testing.assert_close(out.loss, (1 - beta) * diff + beta * diff)
    # Both parts have the same value, so only the gradients show which part carries which weight:
    # (1 - beta) of ||z - sg(q)||^2 reaches the encoder, beta of ||sg(z) - q||^2 reaches the codebook.
    z_grad, codebook_grad = torch.autograd.grad(out.loss, [z, vq.embedding.weight])
    residual = 2 * (channels_last(z).detach() - q) / z.numel()
    torch.testing.assert_close(channels_last(z_grad), (1 - beta) * residual)
    expected_codebook_grad = torch.zeros(8, 4).index_add_(0, out.indices.flatten(), -residual) * beta
    torch.testing.assert_close(codebook_grad, expected_codebook_grad)


def test_classic_vqvae_weight_maps_to_the_equivalent_beta():
    # ||sg(z)-q||^2 + b||z-sg(q)||^2 = (1 + b) * [beta||sg(z)-q||^2 + (1-beta)||z-sg(q)||^2] with beta = 1/(1+b)
    assert beta_from_vqvae_weight(0.25) == pytest.approx(0.8)
    z, codes = torch.randn(10, 4), torch.randn(10, 4)
    beta = beta_from_vqvae_weight(0.25)
    ours, commitment, codebook = beta_commitment_loss(z, codes, beta)
    torch.testing.assert_close((1 + 0.25) * ours, codebook + 0.25 * commitment)
    # The values of the two parts are equal; their gradients are not, and must match the classic loss's too.
    z, codes = z.requires_grad_(), codes.requires_grad_()
    ours, commitment, codebook = beta_commitment_loss(z, codes, beta)
    ours_grads = torch.autograd.grad((1 + 0.25) * ours, [z, codes], retain_graph=True)
    classic_grads = torch.autograd.grad(codebook + 0.25 * commitment, [z, codes])
    for ours_grad, classic_grad in zip(ours_grads, classic_grads):
        torch.testing.assert_close(ours_grad, classic_grad)


def test_beta_splits_gradient_between_encoder_and_codebook():
    z = torch.randn(10, 4, requires_grad=True)
    codes = torch.randn(10, 4, requires_grad=True)
    loss, _, _ = beta_commitment_loss(z, codes, beta=0.8)
    loss.backward()
    torch.testing.assert_close(z.grad, 0.2 * 2 * (z - codes).detach() / z.numel())
    torch.testing.assert_close(codes.grad, 0.8 * 2 * (codes - z).detach() / z.numel())


# --- affine re-parameterisation ------------------------------------------------------------------


def test_learned_affine_is_identity_at_initialisation():
    vq = VectorQuantizer(embed_dim=6, codebook_size=10, affine="learned", affine_lr=5.0, affine_groups=2)
    torch.testing.assert_close(vq.codebook, vq.embedding.weight.detach())


def test_running_statistics_match_the_embedding_after_training_steps():
    vq = VectorQuantizer(embed_dim=3, codebook_size=64, affine="running", affine_momentum=0.2)
    mean, std = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.5, 2.0, 1.0])
    for _ in range(60):
        vq(torch.randn(512, 3) * std + mean)  # (N, D) with channels on axis 1
    affine = vq.embedding.affine
    torch.testing.assert_close(affine.running_mean, mean, atol=0.08, rtol=0)
    torch.testing.assert_close(affine.running_var, std**2, atol=0.15, rtol=0.05)
    # The effective codebook carries exactly the tracked statistics.
    torch.testing.assert_close(vq.codebook.mean(0), affine.running_mean, atol=1e-4, rtol=0)
    torch.testing.assert_close(vq.codebook.var(0, unbiased=False), affine.running_var, atol=1e-3, rtol=1e-3)


def test_first_batch_sets_the_running_statistics_directly():
    # Not blended into the initial 0 / 1 with the momentum: early steps would search a codebook shrunk towards 0.
    vq = VectorQuantizer(embed_dim=3, codebook_size=16, affine="running", affine_momentum=0.1)
    z = torch.randn(256, 3) * torch.tensor([0.5, 2.0, 1.0]) + torch.tensor([1.0, -2.0, 0.5])
    vq(z)
    torch.testing.assert_close(vq.embedding.affine.running_mean, z.mean(0))
    torch.testing.assert_close(vq.embedding.affine.running_var, z.var(0, unbiased=False))


def test_running_statistics_are_frozen_in_eval_mode():
    vq = VectorQuantizer(embed_dim=3, codebook_size=16, affine="running")
    vq(torch.randn(64, 3))
    before = vq.embedding.affine.running_mean.clone()
    vq.eval()
    vq(torch.randn(64, 3) + 5)
    assert torch.equal(vq.embedding.affine.running_mean, before)


# --- alternating optimisation --------------------------------------------------------------------


def _assert_codes_moved_towards_assignment_means(quantizer, before, flat_vectors, indices, step_size):
    """Each selected code moved `step_size` of the way from where it was (`before`) to its assignment mean;
    the others did not move."""
    for k in range(quantizer.codebook_size):
        expected = before[k].lerp(flat_vectors[indices == k].mean(0), step_size) if (indices == k).any() else before[k]
        torch.testing.assert_close(quantizer.codebook[k], expected, atol=1e-4, rtol=1e-4, msg=f"code {k}")


# Step sizes other than 1 (where a step that ignores the size lands too) and other than 0.5 (where a step of
# 1 - step_size lands too).
STEP_SIZES = [1.0, 0.3]


@pytest.mark.parametrize("step_size", STEP_SIZES)
@pytest.mark.parametrize("affine", [None, "learned"])
def test_alternating_step_moves_selected_codes_towards_their_assignment_means(affine, step_size):
    vq = VectorQuantizer(
        embed_dim=4, codebook_size=16, alternating=True, alternating_step_size=step_size, affine=affine
    )
    if affine == "learned":
        with torch.no_grad():
            vq.embedding.affine.scale.uniform_(-0.5, 0.5)
            vq.embedding.affine.shift.uniform_(-1, 1)
    z = torch.randn(64, 4)
    before = vq.codebook
    out = vq(z)
    _assert_codes_moved_towards_assignment_means(vq, before, z, out.indices, step_size)
    # The output already uses the updated codes: assignments kept, codes fresh.
    torch.testing.assert_close(out.quantized, vq.codebook[out.indices], atol=1e-5, rtol=1e-5)


def test_alternating_step_with_running_statistics_moves_codes_towards_their_means():
    # Running-statistics codes keep the encoder's mean and variance, so a step that moves most codes
    # at once can only land as close to the means as that constraint allows.
    vq = VectorQuantizer(embed_dim=4, codebook_size=16, alternating=True, alternating_step_size=1.0, affine="running")
    vq(torch.randn(256, 4))
    z = torch.randn(256, 4)
    vq.eval()
    before = vq(z)
    vq.train()
    vq.embedding.affine.momentum = 0.0  # keep the statistics fixed to isolate the step
    after = vq(z)
    assert torch.equal(after.indices, before.indices)
    assert after.codebook_loss < 0.95 * before.codebook_loss


@pytest.mark.parametrize("step_size", STEP_SIZES)
def test_alternating_step_works_per_group_of_a_grouped_quantizer(step_size):
    vq = GroupedVectorQuantizer(
        8, 16, num_groups=2, affine="learned", alternating=True, alternating_step_size=step_size
    )
    z = torch.randn(64, 8)
    before = [group.codebook for group in vq.groups]
    out = vq(z)
    for g, group in enumerate(vq.groups):
        _assert_codes_moved_towards_assignment_means(
            group, before[g], z[:, 4 * g : 4 * g + 4], out.indices[:, g], step_size
        )


@pytest.mark.parametrize("step_size", STEP_SIZES)
def test_alternating_step_works_per_stage_of_a_residual_quantizer(step_size):
    vq = ResidualVectorQuantizer(
        4, 16, num_quantizers=2, affine="learned", alternating=True, alternating_step_size=step_size
    )
    z = torch.randn(64, 4)
    first, second = vq.stages
    before = [first.codebook, second.codebook]
    out = vq(z)
    _assert_codes_moved_towards_assignment_means(first, before[0], z, out.indices[:, 0], step_size)
    residual = z - first.codebook[out.indices[:, 0]]  # computed with the first stage's updated codes
    _assert_codes_moved_towards_assignment_means(second, before[1], residual, out.indices[:, 1], step_size)
    torch.testing.assert_close(vq.get_codebook_entry(out.indices), out.quantized, atol=1e-5, rtol=1e-5)


# --- search, k-means, replacement ------------------------------------------------------------------


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_blocked_search_equals_exhaustive_search(distance):
    vectors, codebook = torch.randn(1000, 16), torch.randn(300, 16)
    if distance == "cosine":
        vectors, codebook = F.normalize(vectors, dim=1), F.normalize(codebook, dim=1)
        exhaustive = (vectors @ codebook.t()).argmax(1)
    else:
        exhaustive = torch.cdist(vectors, codebook).argmin(1)
    blocked = nearest_code_indices(vectors, codebook, distance, max_block_elements=300 * 7)  # 7 rows a block
    assert torch.equal(blocked, exhaustive)


def test_kmeans_keeps_every_code_when_there_are_fewer_vectors_than_codes():
    vectors = torch.randn(10, 4)
    centres = kmeans_plus_plus_init(vectors, num_codes=32)
    assert centres.shape == (32, 4)
    pairwise = (centres[:, None] - centres[None]).norm(dim=-1) + torch.eye(32) * 1e9
    assert pairwise.min() > 1e-4  # no two codes coincide
    # every data vector is itself a centre
    assert (vectors[:, None] - centres[None]).norm(dim=-1).min(1).values.max() < 1e-6


def test_kmeans_init_runs_on_first_training_batch_and_keeps_all_codes():
    vq = VectorQuantizer(embed_dim=4, codebook_size=64, kmeans_init=True)
    assert not bool(vq.initialized)
    z = torch.randn(20, 4) * 3 + 7
    vq(z)
    assert bool(vq.initialized) and vq.codebook.shape == (64, 4)
    assert torch.cdist(z, vq.codebook).min(1).values.max() < 0.1  # codes sit on the data


def test_kmeans_clusters_separated_data():
    centres_true = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    data = (centres_true[:, None] + 0.1 * torch.randn(4, 50, 2)).reshape(-1, 2)
    centres = kmeans_plus_plus_init(data, 4)
    assert torch.cdist(centres_true, centres).min(1).values.max() < 0.2


@pytest.mark.parametrize("affine", [None, "learned", "running"])
def test_replaced_dead_code_lands_on_an_encoder_vector_in_effective_space(affine):
    vq = VectorQuantizer(embed_dim=4, codebook_size=32, affine=affine, replace_freq=3)
    if affine == "learned":
        with torch.no_grad():
            vq.embedding.affine.scale.fill_(-0.7)
            vq.embedding.affine.shift.fill_(2.0)
    if affine == "running":
        vq(torch.randn(256, 4) * 2 + 1)
    vq.steps_since_used.zero_()
    vq.steps_since_used[[3, 17]] = 3
    vectors = torch.randn(50, 4) * 2 + 1
    assert replace_dead_codes(vq.embedding, vq.steps_since_used, vectors, replace_freq=3, noise_scale=0.0) == 2
    distances = (vq.codebook[[3, 17]][:, None] - vectors[None]).norm(dim=-1).min(1).values
    assert distances.max() < 1e-4
    assert vq.steps_since_used[[3, 17]].tolist() == [0, 0]


def test_dead_code_counters_count_consecutive_unused_steps():
    from hf_vq.quantization.replacement import update_dead_code_counters

    counters = torch.tensor([0, 3, 5, 0])
    update_dead_code_counters(counters, code_counts=torch.tensor([2, 0, 1, 0]))
    assert counters.tolist() == [0, 4, 0, 1]  # a used code starts counting again from 0


def test_a_code_in_use_is_never_replaced():
    vq = VectorQuantizer(embed_dim=2, codebook_size=2, replace_freq=2)
    with torch.no_grad():
        vq.embedding.weight.copy_(torch.tensor([[-5.0, 0.0], [5.0, 0.0]]))
    z = torch.tensor([[-5.0, 0.1], [5.0, -0.1]])  # each code picked at every step
    for _ in range(4):
        vq(z)
    assert vq.steps_since_used.tolist() == [0, 0]
    assert torch.equal(vq.codebook, torch.tensor([[-5.0, 0.0], [5.0, 0.0]]))


def test_codes_unused_for_replace_freq_steps_are_revived_during_training():
    vq = VectorQuantizer(embed_dim=4, codebook_size=64, replace_freq=2)
    with torch.no_grad():
        vq.embedding.weight[1:] += 100.0  # only code 0 is reachable from the data
    for _ in range(2):
        out = vq(torch.randn(256, 4))
    assert out.usage == 1 / 64
    out = vq(torch.randn(256, 4))  # dead for 2 steps: revived at the start of this step, then searched
    assert out.usage > 0.5
    assert vq.codebook.abs().max() < 20


# --- outputs, layouts, variants ----------------------------------------------------------------------


def test_perplexity_and_usage():
    vq = VectorQuantizer(embed_dim=2, codebook_size=4)
    with torch.no_grad():
        vq.embedding.weight.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]]))
    out = vq(torch.tensor([[0.0, 0.1], [9.9, 0.0], [0.1, 0.0], [10.0, 0.2]]))
    torch.testing.assert_close(out.perplexity, torch.tensor(2.0))  # two codes, used equally
    assert out.usage == 0.5


def test_cosine_distance_returns_unit_codes():
    vq = VectorQuantizer(embed_dim=8, codebook_size=16, distance="cosine")
    out = vq(torch.randn(4, 8, 2, 2) * 5)
    torch.testing.assert_close(out.quantized.norm(dim=1), torch.ones(4, 2, 2))


@pytest.mark.parametrize("channel_dim,shape", [(1, (2, 8, 3, 5)), (-1, (2, 3, 5, 8)), (1, (6, 8))])
def test_layouts(channel_dim, shape):
    vq = VectorQuantizer(embed_dim=8, codebook_size=16, channel_dim=channel_dim)
    out = vq(torch.randn(shape))
    assert out.quantized.shape == shape
    expected = list(shape)
    del expected[channel_dim]
    assert list(out.indices.shape) == expected and out.indices.dtype == torch.int64
    torch.testing.assert_close(vq.get_codebook_entry(out.indices), out.quantized)


@pytest.mark.parametrize(
    "quantizer",
    [
        lambda: GroupedVectorQuantizer(
            8, 16, num_groups=4, kmeans_init=True, replace_freq=1, sync_nu=0.5, affine="running"
        ),
        lambda: ResidualVectorQuantizer(
            8, 16, num_quantizers=3, kmeans_init=True, replace_freq=1, sync_nu=0.5, affine="learned"
        ),
    ],
)
def test_grouped_and_residual_variants_train(quantizer):
    vq = quantizer()
    z = torch.randn(2, 8, 4, 4, requires_grad=True)
    for _ in range(3):
        out = vq(z)
        (out.quantized.sum() + out.loss).backward()
    assert out.indices.shape[:3] == (2, 4, 4) and out.indices.shape[3] in (3, 4)
    torch.testing.assert_close(vq.get_codebook_entry(out.indices), out.quantized, atol=1e-5, rtol=1e-5)


def test_residual_stages_reduce_error():
    z = torch.randn(512, 8)
    errors = []
    for stages in (1, 3):
        torch.manual_seed(0)
        vq = ResidualVectorQuantizer(8, 32, num_quantizers=stages, kmeans_init=True)
        errors.append((vq(z).quantized - z).pow(2).mean().item())
    assert errors[1] < 0.8 * errors[0]


def test_bf16_autocast_computes_in_float32_and_returns_input_dtype():
    vq = VectorQuantizer(embed_dim=8, codebook_size=32, affine="learned", sync_nu=0.2)
    z = torch.randn(2, 8, 4, 4)
    reference = vq(z).indices
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(z.to(torch.bfloat16))
    assert out.quantized.dtype == torch.bfloat16 and out.loss.dtype == torch.float32
    assert (out.indices == reference).float().mean() > 0.9  # bf16 input rounding may flip near-ties only


# --- state -----------------------------------------------------------------------------------------


def test_state_dict_round_trips_including_running_statistics():
    options = dict(embed_dim=4, codebook_size=16, affine="running", kmeans_init=True, replace_freq=2, alternating=True)
    trained = VectorQuantizer(**options)
    for _ in range(5):
        trained(torch.randn(64, 4) * 3 + 1)
    state = trained.state_dict()
    assert {"initialized", "steps_since_used", "embedding.affine.running_mean", "embedding.affine.running_var"} <= set(
        state
    )
    fresh = VectorQuantizer(**options)
    fresh.load_state_dict(state)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state[key]), key
    trained.eval(), fresh.eval()
    z = torch.randn(32, 4)
    assert torch.equal(fresh(z).indices, trained(z).indices)
    # Training on goes on exactly as in the original (same batch, same random draws): every piece of state came
    # back, and the loaded quantizer, already initialised, does not run k-means again.
    batch = torch.randn(32, 4) * 3 + 1
    for quantizer in (trained, fresh):
        torch.manual_seed(1)
        quantizer.train()(batch)
    continued = trained.state_dict()
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, continued[key]), key


def test_kmeans_init_runs_on_the_first_training_batch_only():
    vq = VectorQuantizer(embed_dim=4, codebook_size=16, kmeans_init=True)  # nothing else moves the codes
    vq(torch.randn(64, 4))
    initialised = vq.codebook
    vq(torch.randn(64, 4) + 100)
    assert torch.equal(vq.codebook, initialised)


# --- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(beta=1.5), "beta must lie in"),
        (dict(beta=-0.1), "beta must lie in"),
        (dict(sync_nu=-1.0), "sync_nu must be >= 0"),
        (dict(distance="manhattan"), "unknown distance"),
        (dict(affine="batchnorm"), "unknown affine mode"),
        (dict(replace_freq=-5), "replace_freq"),
        (dict(codebook_size=0), "codebook_size"),
        (dict(affine="learned", affine_groups=3), "affine_groups=3 must divide"),
    ],
)
def test_invalid_options_are_rejected(options, message):
    kwargs = dict(embed_dim=4, codebook_size=16) | options
    with pytest.raises(ValueError, match=message):
        VectorQuantizer(**kwargs)


@pytest.mark.parametrize(
    "z,error,message",
    [
        (torch.randn(2, 5, 3, 3), ValueError, "embed_dim=4"),
        (torch.randint(0, 5, (2, 4, 3, 3)), TypeError, "floating-point"),
        (torch.full((2, 4, 3, 3), float("nan")), NonFiniteInputError, "NaN or Inf"),
        (torch.tensor([[1.0, float("inf"), 0.0, 0.0]]), NonFiniteInputError, "NaN or Inf"),
        (torch.randn(4), ValueError, "at least 2 dimensions"),
    ],
)
def test_bad_inputs_get_clear_errors(z, error, message):
    with pytest.raises(error, match=message):
        VectorQuantizer(embed_dim=4, codebook_size=16)(z)


def test_out_of_range_indices_get_a_clear_error():
    vq = VectorQuantizer(embed_dim=4, codebook_size=16)
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        vq.get_codebook_entry(torch.tensor([[0, 16]]))
    with pytest.raises(ValueError, match="euclidean"):
        ResidualVectorQuantizer(4, 16, num_quantizers=2, distance="cosine")


def test_codebook_property_is_a_detached_copy():
    vq = VectorQuantizer(embed_dim=4, codebook_size=8)
    codebook = vq.codebook
    assert not codebook.requires_grad
    codebook.zero_()
    assert vq.embedding.weight.abs().sum() > 0


def test_kmeans_init_with_more_vectors_than_samples():
    vq = VectorQuantizer(embed_dim=8, codebook_size=16, kmeans_init=True, kmeans_max_samples=100)
    out = vq(torch.randn(300, 8))
    assert bool(vq.initialized) and out.usage > 0.5
