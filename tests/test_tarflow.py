"""TarFlow: the transformer flow pieces (skflow.transforms.tarflow_blocks) and TarFlowDensity."""

import pickle

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax
from scipy.stats import norm
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from skflow.data import scoring_noise
from skflow.estimators.tarflow import TarFlowDensity, _tweedie_step
from skflow.metrics import bits_per_dim
from skflow.models.dequantization import UniformDequantization
from skflow.models.distributions import StandardNormal
from skflow.models.flow import DequantizedFlow, Flow
from skflow.transforms import Compose, LULinear
from skflow.transforms.attention import CausalSelfAttention
from skflow.transforms.multiscale import FixedAffine, Logit
from skflow.transforms.tarflow_blocks import Patchify, TarFlowBlock, guided, kv_cache, tarflow

TINY = {"n_blocks": 2, "n_layers": 1, "channels": 16, "n_heads": 2, "max_epochs": 3, "random_state": 0}


def _randomise(module, std=0.3, seed=0):
    """Non-trivial weights (a fresh block is the identity), in float64."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module.double()


def _block(reverse=False, context_features=0):
    torch.manual_seed(0)
    block = TarFlowBlock(
        5, 3, channels=8, n_layers=2, n_heads=2, context_features=context_features, reverse=reverse
    )
    return _randomise(block)


def _one_hot(labels, n_classes):
    """One-hot rows; a label of -1 gives the all-zero (null) context."""
    context = torch.zeros(len(labels), n_classes, dtype=torch.float64)
    for i, label in enumerate(labels):
        if label >= 0:
            context[i, label] = 1.0
    return context


def _tarflow_flow(n_features, image_shape=None, patch_size=1, pixels=None, std=0.3, **kwargs):
    """``Flow(tarflow(...), StandardNormal(N, D))`` with random weights; ``pixels`` goes first."""
    settings = {"channels": 8, "n_blocks": 3, "n_layers": 2, "n_heads": 2, **kwargs}
    torch.manual_seed(0)
    blocks = tarflow(n_features, image_shape, patch_size, **settings)
    patches = blocks.transforms[0]
    transform = blocks if pixels is None else Compose(pixels, blocks)
    flow = Flow(transform, StandardNormal(patches.n_tokens, patches.token_features))
    return _randomise(flow, std=std)


def _one_token_parameters(block, context):
    """``(mu, alpha)`` of a one-token block, read off its forward map ``z = (x - mu) exp(-alpha)``."""
    n, d = len(context), block.out_proj.out_features // 2
    zeros = torch.zeros(n, 1, d, dtype=torch.float64)
    z0, _ = block(zeros, context)
    z1, _ = block(zeros + 1.0, context)
    alpha = -torch.log(z1 - z0)
    return -z0 * torch.exp(alpha), alpha


# ---------------------------------------------------------------- modules
@pytest.mark.parametrize("reverse", [False, True])
def test_block_is_causal(reverse):
    block = _block(reverse)
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    z, _ = block(x)
    for j in range(5):
        x2 = x.clone()
        x2[:, j] += 1.0
        z2, _ = block(x2)
        earlier = slice(0, j) if not reverse else slice(j + 1, 5)
        later = slice(j + 1, 5) if not reverse else slice(0, j)
        torch.testing.assert_close(z2[:, earlier], z[:, earlier], rtol=0, atol=0)
        # Token j moves by exactly exp(-alpha_j): its shift and scale did not see it.
        assert torch.all(z2[:, j] > z[:, j])
        if later.stop - later.start > 0:
            assert not torch.allclose(z2[:, later], z[:, later])


def test_block_token_parameters_ignore_own_token():
    """The Jacobian is block lower triangular with diagonal blocks exp(-alpha_i) I."""
    block = _block(context_features=2)
    x = torch.randn(5, 3, dtype=torch.float64)
    context = _one_hot([1], 2)
    jac = torch.autograd.functional.jacobian(lambda a: block(a[None], context)[0][0], x).reshape(15, 15)
    assert torch.all(jac.triu(1) == 0)
    _, ladj = block(x[None], context)
    torch.testing.assert_close(ladj[0], torch.log(torch.diagonal(jac)).sum())


def test_block_without_context_uses_the_null_class():
    block = _block(context_features=3)
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(
        block(x)[0], block(x, torch.zeros(4, 3, dtype=torch.float64))[0], rtol=0, atol=0
    )
    assert not torch.allclose(block(x)[0], block(x, _one_hot([0, 1, 2, 0], 3))[0])


def test_fresh_transform_is_a_rearrangement():
    transform = tarflow(
        12, image_shape=(3, 2, 2), patch_size=1, channels=8, n_blocks=3, n_layers=1, n_heads=2
    )
    x = torch.randn(6, 12)
    z, ladj = transform(x)
    assert z.shape == (6, 4, 3)  # 4 pixel tokens of 3 channels
    torch.testing.assert_close(z.permute(0, 2, 1).reshape(6, 12), x)
    assert torch.all(ladj == 0)


def test_fresh_transform_with_mixing_is_the_identity():
    transform = tarflow(
        16, image_shape=(1, 4, 4), patch_size=2, channels=8, n_blocks=2, n_heads=2, mixing=True
    )
    assert sum(isinstance(m, LULinear) for m in transform.transforms) == 2  # one before every block
    x = torch.randn(5, 16)
    z, ladj = transform(x)
    torch.testing.assert_close(transform.inverse(z)[0], x)
    assert torch.all(ladj == 0)


def test_patchify_cuts_images_into_patches():
    patches = Patchify(2 * 4 * 6, image_shape=(2, 4, 6), patch_size=2)
    assert (patches.n_tokens, patches.token_features) == (6, 8)
    x = torch.arange(48.0).reshape(1, 48)
    tokens, ladj = patches(x)
    image = x.reshape(2, 4, 6)
    # token (i, j) holds the 2x2 patch at rows 2i.., columns 2j.. of every channel
    torch.testing.assert_close(tokens[0, 1 * 3 + 2], image[:, 2:4, 4:6].reshape(-1))
    torch.testing.assert_close(patches.inverse(tokens)[0], x)
    assert torch.all(ladj == 0)
    tabular = Patchify(6, patch_size=3)
    assert tabular(x[:, :6])[0].tolist() == [[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]]
    with pytest.raises(ValueError, match="patch_size"):
        Patchify(5, patch_size=2)
    with pytest.raises(ValueError, match="patch_size"):
        Patchify(2 * 4 * 6, image_shape=(2, 4, 6), patch_size=4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_features": 8, "image_shape": (2, 2, 2), "patch_size": 1},
        {"n_features": 16, "image_shape": (1, 4, 4), "patch_size": 2},
        {"n_features": 6, "patch_size": 2},
        {"n_features": 5, "patch_size": 1, "context_features": 3},
        {"n_features": 16, "image_shape": (1, 4, 4), "patch_size": 2, "mixing": True},
        {"n_features": 8, "image_shape": (2, 2, 2), "patch_size": 1, "mixing": True, "pixels": "logit"},
        {"n_features": 6, "patch_size": 3, "mixing": True, "context_features": 3, "pixels": "affine"},
    ],
)
def test_inverse_and_log_det_match_autograd(kwargs):
    kwargs = dict(kwargs)
    pixels = {None: None, "logit": Logit(0.05), "affine": FixedAffine(2.0, -1.0)}[kwargs.pop("pixels", None)]
    flow = _tarflow_flow(pixels=pixels, std=0.2, **kwargs)
    transform = flow.transform
    n = kwargs["n_features"]
    x = torch.randn(3, n, dtype=torch.float64)
    if pixels is not None:  # pixels in (0, 1)
        x = torch.sigmoid(x)
    context = _one_hot([0, 2, -1], 3) if kwargs.get("context_features") else None
    z, ladj = transform(x, context)
    x_back, ladj_inv = transform.inverse(z, context)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(ladj_inv, -ladj)
    for k in range(3):
        c = None if context is None else context[k : k + 1]
        jac = torch.autograd.functional.jacobian(lambda a, c=c: transform(a[None], c)[0].reshape(-1), x[k])
        torch.testing.assert_close(ladj[k], torch.linalg.slogdet(jac)[1])
        jac_inv = torch.autograd.functional.jacobian(lambda b, c=c: transform.inverse(b[None], c)[0][0], z[k])
        torch.testing.assert_close(ladj_inv[k], torch.linalg.slogdet(jac_inv.reshape(n, n))[1])


def test_token_mixing_is_one_matrix_for_all_tokens():
    mixing = _randomise(LULinear(3, dim=-1, bias=True), std=0.5)
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    z, ladj = mixing(x)
    bias = mixing.bias
    weight = (mixing(torch.eye(3, dtype=torch.float64)[None])[0][0] - bias).T  # rows e_j -> W e_j + b
    torch.testing.assert_close(weight, mixing.weight())
    torch.testing.assert_close(z, x @ weight.T + bias)
    torch.testing.assert_close(ladj, (5 * torch.linalg.slogdet(weight)[1]).expand(4))
    torch.testing.assert_close(mixing.inverse(z)[0], x)
    torch.testing.assert_close(mixing.inverse(z)[1], -ladj)


def test_logit_pixels_log_det():
    y = torch.rand(3, 4, dtype=torch.float64)
    p = 0.05 + 0.9 * y
    expected = torch.log(0.9 / (p * (1 - p))).sum(dim=1)  # d logit(p) / dy = 0.9 / (p (1 - p))
    z, ladj = Logit(0.05)(y)
    torch.testing.assert_close(z, torch.log(p / (1 - p)))
    torch.testing.assert_close(ladj, expected)


def test_log_prob_is_base_plus_log_det():
    flow = _tarflow_flow(4, patch_size=1, std=0.2, n_blocks=2, n_layers=1)
    x = torch.randn(7, 4, dtype=torch.float64)
    z, ladj = flow.transform(x)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(dim=(1, 2)) + ladj
    torch.testing.assert_close(flow.log_prob(x), expected)


@pytest.mark.parametrize("guidance", [0.0, 1.5])
def test_cached_sampling_equals_uncached(guidance):
    flow = _tarflow_flow(18, image_shape=(2, 3, 3), patch_size=1, context_features=2)
    blocks = [m for m in flow.modules() if isinstance(m, TarFlowBlock)]
    assert len(blocks) == 3 and all(block.use_cache for block in blocks)
    context = _one_hot([0, 1, 1, 0], 2)
    with guided(flow, guidance):
        cached = flow.sample(4, context, torch.Generator().manual_seed(1))
        for block in blocks:
            block.use_cache = False
        uncached = flow.sample(4, context, torch.Generator().manual_seed(1))
    torch.testing.assert_close(cached, uncached, rtol=1e-12, atol=1e-12)
    assert all(m.cache is None for m in flow.modules() if isinstance(m, CausalSelfAttention))
    assert all(block.guidance == 0.0 for block in blocks)
    if guidance == 0.0:  # the sample is f^{-1}(z) for the base draw z
        z = flow.base.sample(4, context, torch.Generator().manual_seed(1))
        torch.testing.assert_close(flow.transform(cached, context)[0], z)


def test_kv_cache_is_dropped_on_error():
    block = _block()
    attention = [m for m in block.modules() if isinstance(m, CausalSelfAttention)]
    with pytest.raises(RuntimeError, match="boom"), kv_cache(block):
        block(torch.randn(2, 5, 3, dtype=torch.float64))
        assert all(m.cache["k"].shape[2] == 5 for m in attention)  # keys of the 5 positions kept
        raise RuntimeError("boom")
    assert all(m.cache is None for m in attention)


def test_guided_is_reset_on_error():
    flow = _tarflow_flow(6, patch_size=1, n_blocks=2, context_features=3)
    blocks = [m for m in flow.modules() if isinstance(m, TarFlowBlock)]
    with pytest.raises(RuntimeError, match="boom"), guided(flow, 2.0):
        assert all(block.guidance == 2.0 for block in blocks)
        raise RuntimeError("boom")
    assert all(block.guidance == 0.0 for block in blocks)


def test_guidance_zero_samples_the_conditional():
    flow = _tarflow_flow(6, patch_size=1, std=0.2, n_blocks=2, context_features=3)
    transform = flow.transform
    context = _one_hot([0, 1, 2, 1], 3)
    z = torch.randn(4, 6, 1, dtype=torch.float64)
    x0, _ = transform.inverse(z, context)
    with guided(flow, 0.0):
        torch.testing.assert_close(transform.inverse(z, context)[0], x0, rtol=0, atol=0)
    torch.testing.assert_close(transform(x0, context)[0], z)  # x0 = f^{-1}(z | y)
    with guided(flow, 2.0):
        x_guided, _ = transform.inverse(z, context)
    assert not torch.allclose(x_guided, x0)
    # Guidance has no effect when the class's embedding equals the null class's (zero context).
    with torch.no_grad():
        for block in flow.modules():
            if isinstance(block, TarFlowBlock):
                block.context_embedding.weight[:, 1] = 0.0
    same = _one_hot([1, 1, 1, 1], 3)
    with guided(flow, 2.0):
        x_same = transform.inverse(z, same)[0]
    torch.testing.assert_close(x_same, transform.inverse(z, same)[0])


def test_guidance_extrapolates_shift_and_log_scale():
    """One block, N=1: x = z * exp(a_w) + mu_w with a_w = a + w (a - a_null)."""
    torch.manual_seed(0)
    block = _randomise(TarFlowBlock(1, 2, channels=8, n_layers=1, n_heads=2, context_features=2))
    z = torch.randn(3, 1, 2, dtype=torch.float64)
    context = _one_hot([0, 1, 0], 2)
    w = 0.7
    mu, alpha = _one_token_parameters(block, context)
    mu0, alpha0 = _one_token_parameters(block, torch.zeros_like(context))
    assert not torch.allclose(mu, mu0)
    alpha_w = alpha + w * (alpha - alpha0)
    expected = z * torch.exp(alpha_w) + mu + w * (mu - mu0)
    with guided(block, w):
        x, ladj = block.inverse(z, context)
    torch.testing.assert_close(x, expected)
    torch.testing.assert_close(ladj, alpha_w.sum(dim=(1, 2)))


def test_tweedie_step_on_standard_normal():
    flow = Flow(tarflow(4, channels=8, n_blocks=1, n_layers=1, n_heads=2), StandardNormal(4, 1)).double()
    x = torch.randn(5, 4, dtype=torch.float64)  # a fresh flow is the identity: p = N(0, I)
    torch.testing.assert_close(_tweedie_step(flow, x, None, 0.0, 0.3), x * (1 - 0.09))


@pytest.mark.parametrize("guidance", [0.0, 1.5])
def test_tweedie_step_follows_the_guided_gaussian_score(guidance):
    """One token: p(x | c) = N(mu_c, exp(2 alpha_c)); the guided score is (1 + w) s_c - w s_null."""
    torch.manual_seed(0)
    block = _randomise(TarFlowBlock(1, 2, channels=8, n_layers=1, n_heads=2, context_features=2))
    flow = Flow(Compose(Patchify(2, patch_size=2), block), StandardNormal(1, 2)).double()
    context = _one_hot([0, 1, 1], 2)
    x = torch.randn(3, 2, dtype=torch.float64)
    mu, alpha = (t[:, 0] for t in _one_token_parameters(block, context))
    mu0, alpha0 = (t[:, 0] for t in _one_token_parameters(block, torch.zeros_like(context)))
    score = -(x - mu) * torch.exp(-2 * alpha)
    score_null = -(x - mu0) * torch.exp(-2 * alpha0)
    expected = x + 0.3**2 * ((1 + guidance) * score - guidance * score_null)
    torch.testing.assert_close(_tweedie_step(flow, x, context, guidance, 0.3), expected)


# -------------------------------------------------------------- estimator
@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:300], y[:300]


@pytest.fixture(scope="module")
def conditional(digits):
    X, y = digits
    return TarFlowDensity(n_bins=17, image_shape=(1, 8, 8), **TINY).fit(X, y)


def _pixels_and_blocks(estimator):
    """The pixel map and the tarflow transform inside a fitted estimator's module."""
    module = estimator.net_.module_.eval()
    flow = module.flow if isinstance(module, DequantizedFlow) else module
    steps = list(flow.transform.transforms)
    if isinstance(steps[0], Patchify):
        return None, flow.transform
    return steps[0], steps[1]


def test_tabular_density_integrates_to_one():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 2)) @ np.array([[1.0, 0.6], [0.0, 0.5]]) + [2.0, -1.0]
    flow = TarFlowDensity(n_blocks=2, n_layers=1, channels=16, n_heads=2, max_epochs=30, random_state=0).fit(
        X
    )
    grid = np.linspace(-8, 10, 301)
    xx, yy = np.meshgrid(grid, grid - 2)
    density = np.exp(flow.score_samples(np.c_[xx.ravel(), yy.ravel()]))
    mass = density.sum() * (grid[1] - grid[0]) ** 2
    assert abs(mass - 1.0) < 0.02
    assert flow.score(X) > -4.0  # well above an N(0, I) in data units


@pytest.mark.parametrize(
    "extra", [{}, {"mixing": False, "logit_alpha": None, "lr_schedule": "cosine", "patch_size": 2}]
)
def test_discrete_bound_bookkeeping(extra):
    """score_samples = log mean_k P(x + u_k), the draws u_k from skflow.data.scoring_noise, through
    the dequantizer inside the model; recomputed here from the blocks, the pixel map by hand and the base."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 4, size=(200, 2)).astype(float)
    flow = TarFlowDensity(
        n_bins=4, n_blocks=2, n_layers=1, channels=16, n_heads=2, max_epochs=10, n_score_draws=3,
        random_state=0, **extra,
    ).fit(X)  # fmt: skip
    module = flow.net_.module_.eval()
    assert isinstance(module, DequantizedFlow) and isinstance(module.dequantizer, UniformDequantization)
    pixels, blocks = _pixels_and_blocks(flow)
    assert isinstance(pixels, FixedAffine if extra else Logit)
    grid = np.array([[a, b] for a in range(4) for b in range(4)], dtype=float)
    log_p = flow.score_samples(grid)
    draws = []
    for u in scoring_noise(grid, 3):
        y = (grid + u) / 4  # dequantized pixels in (0, 1), log q = 2 log 4
        if extra:  # 2 y - 1
            s, ladj_pixels = 2 * y - 1, np.full(len(y), 2 * np.log(2.0))
        else:  # logit(0.05 + 0.9 y)
            p = 0.05 + 0.9 * y
            s, ladj_pixels = np.log(p / (1 - p)), np.sum(np.log(0.9 / (p * (1 - p))), axis=1)
        with torch.no_grad():
            z, ladj = blocks(torch.as_tensor(s, dtype=torch.float32))
            direct = module(
                torch.as_tensor(grid, dtype=torch.float32), noise=torch.as_tensor(u, dtype=torch.float32)
            )
        manual = (
            norm.logpdf(z.double().numpy()).sum(axis=(1, 2))
            + ladj.double().numpy()
            + ladj_pixels
            - 2 * np.log(4)
        )
        np.testing.assert_allclose(direct.double().numpy(), manual, rtol=1e-5)
        draws.append(manual)
    expected = logsumexp(draws, axis=0) - np.log(3)
    np.testing.assert_allclose(log_p, expected, rtol=1e-5)
    # mean_k p(x + u_k) is an unbiased estimate of the mass of the cell of x, so the 16 estimates sum to
    # about the mass inside the box: <= 1, exactly 1 in logit space (no mass outside), up to draw noise.
    assert np.exp(log_p).sum() <= 1.05
    assert bits_per_dim(flow, grid) == pytest.approx(-log_p.mean() / (2 * np.log(2)))
    with pytest.raises(ValueError, match="noise"):
        module(torch.as_tensor(grid, dtype=torch.float32))


def test_marginal_is_logsumexp_over_classes(conditional, digits):
    X, y = digits
    flow = conditional
    module, dtype = flow._scoring_module()  # the module that scores (a float64 copy on the CPU)
    x = torch.as_tensor(X[:20], dtype=dtype)
    per_class = []
    for c in range(10):
        context = torch.zeros(20, 10, dtype=dtype)
        context[:, c] = 1.0
        logs = []
        for u in scoring_noise(X[:20], 4):
            with torch.no_grad():
                logs.append(module(x, context, torch.as_tensor(u, dtype=dtype)).double().numpy())
        per_class.append(logsumexp(logs, axis=0) - np.log(4))
    joint = np.stack(per_class, axis=1) + np.log(flow.class_prior_)
    assert np.ptp(joint - np.log(flow.class_prior_), axis=1).min() > 0  # the class context is used
    np.testing.assert_allclose(flow.score_samples(X[:20]), logsumexp(joint, axis=1), rtol=1e-6)
    proba = flow.predict_proba(X[:20])
    np.testing.assert_allclose(proba, softmax(joint, axis=1), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(flow.predict(X[:20]), flow.classes_[joint.argmax(axis=1)])
    np.testing.assert_array_equal(flow.classes_, np.arange(10))
    np.testing.assert_allclose(flow.class_prior_, np.bincount(y) / len(y))


def test_conditional_sampling(conditional):
    flow = conditional
    a = flow.sample(5, y=3, guidance=0.0, random_state=0)
    b = flow.sample(5, y=[3] * 5, random_state=0)
    np.testing.assert_array_equal(a, b)
    guided_samples = flow.sample(5, y=3, guidance=2.0, random_state=0)
    assert guided_samples.shape == (5, 64) and not np.array_equal(guided_samples, a)
    assert guided_samples.dtype == np.int64 and np.all((guided_samples >= 0) & (guided_samples < 17))
    mixed = flow.sample(4, y=[0, 9, 0, 9], random_state=1)
    assert mixed.shape == (4, 64)
    assert flow.sample(3, random_state=0).shape == (3, 64)  # classes drawn from the prior
    with pytest.raises(ValueError, match="not seen"):
        flow.sample(2, y=11)


def test_conditional_tabular_classifier():
    """Two well-separated Gaussian classes: p(x | y) per class gives an accurate Bayes classifier."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=300)
    X = rng.normal(size=(300, 2)) + np.where(y[:, None] == 1, 3.0, -3.0)
    labels = np.array(["neg", "pos"])[y]
    flow = TarFlowDensity(
        n_blocks=2, n_layers=1, channels=16, n_heads=2, max_epochs=20, batch_size=32, random_state=0
    )
    flow.fit(X, labels)
    np.testing.assert_array_equal(flow.classes_, ["neg", "pos"])
    assert np.mean(flow.predict(X) == labels) > 0.95
    for label, centre in [("pos", 3.0), ("neg", -3.0)]:  # each class's samples: about N(centre, I)
        samples = flow.sample(400, y=label, random_state=0)
        assert samples.shape == (400, 2)
        np.testing.assert_allclose(samples.mean(axis=0), centre, atol=0.5)
        np.testing.assert_allclose(samples.std(axis=0), 1.0, atol=0.4)
    proba = flow.predict_proba(X[:5])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_unconditional_model_refuses_labels_and_guidance(digits):
    X, _ = digits
    flow = TarFlowDensity(n_bins=17, image_shape=(1, 8, 8), **{**TINY, "max_epochs": 1}).fit(X)
    assert not hasattr(flow, "predict_proba") and not hasattr(flow, "predict") and flow.classes_ is None
    with pytest.raises(ValueError, match="without class labels"):
        flow.sample(2, y=1)
    with pytest.raises(ValueError, match="guidance"):
        flow.sample(2, guidance=1.0)


@pytest.mark.parametrize("layout", ["flat", "hw", "chw"])
def test_image_layouts_and_determinism(digits, layout):
    X, _ = digits
    shapes = {"flat": (64,), "hw": (8, 8), "chw": (1, 8, 8)}
    data = X.reshape(len(X), *shapes[layout])
    extra = {"image_shape": (1, 8, 8)} if layout == "flat" else {}
    params = dict(n_bins=17, noise_std=0.05, **TINY, **extra)
    first = TarFlowDensity(**params).fit(data)
    second = TarFlowDensity(**params).fit(data)
    samples = first.sample(3, random_state=0)
    assert samples.shape == (3, *shapes[layout]) and samples.dtype == np.int64
    np.testing.assert_array_equal(samples, second.sample(3, random_state=0))
    np.testing.assert_array_equal(first.score_samples(data[:5]), second.score_samples(data[:5]))
    assert first.score_samples(data[:5]).shape == (5,)
    np.testing.assert_allclose(first.score_samples(X[:5].reshape(5, 1, 8, 8)), first.score_samples(data[:5]))
    assert first.image_shape_ == (1, 8, 8)
    patches = [m for m in first.net_.module_.modules() if isinstance(m, Patchify)]
    assert patches[0].n_tokens == 16 and patches[0].token_features == 4  # 2x2 patches of an 8x8 image


def test_denoising_moves_samples_by_the_score():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    flow = TarFlowDensity(noise_std=0.3, **TINY).fit(X)
    raw = flow.sample(50, random_state=0, denoise=False)
    clean = flow.sample(50, random_state=0)
    assert not np.allclose(raw, clean)
    np.testing.assert_array_equal(clean, flow.sample(50, random_state=0, denoise=True))
    module = flow.net_.module_.eval()
    z = torch.as_tensor(flow.standardizer_.transform(raw), dtype=torch.float32)
    expected = _tweedie_step(module, z, None, 0.0, 0.3).double().numpy()
    np.testing.assert_allclose(flow.standardizer_.transform(clean), expected, rtol=1e-4, atol=1e-5)


def test_pixel_map_is_logit_only_for_noiseless_bins(digits):
    X, _ = digits
    params = {**TINY, "max_epochs": 1}
    assert isinstance(_pixels_and_blocks(TarFlowDensity(n_bins=17, **params).fit(X[:100]))[0], Logit)
    noisy = TarFlowDensity(n_bins=17, noise_std=0.05, **params).fit(X[:100])
    assert isinstance(_pixels_and_blocks(noisy)[0], FixedAffine)
    no_logit = TarFlowDensity(n_bins=17, logit_alpha=None, **params).fit(X[:100])
    assert isinstance(_pixels_and_blocks(no_logit)[0], FixedAffine)
    continuous = TarFlowDensity(**params).fit(X[:100].reshape(100, -1))
    assert _pixels_and_blocks(continuous)[0] is None
    assert not isinstance(continuous.net_.module_, DequantizedFlow)


def test_invalid_settings():
    X = np.random.default_rng(0).normal(size=(50, 5))
    with pytest.raises(ValueError, match="patch_size"):
        TarFlowDensity(patch_size=2, **TINY).fit(X)
    with pytest.raises(ValueError, match="n_bins"):
        TarFlowDensity(n_bins=4, **TINY).fit(X)
    with pytest.raises(ValueError, match="divisible"):
        TarFlowDensity(**{**TINY, "channels": 15}).fit(X)
    with pytest.raises(ValueError, match="pixels"):
        TarFlowDensity(image_shape=(1, 2, 2), **TINY).fit(X)
    with pytest.raises(ValueError, match="y has 3"):
        TarFlowDensity(**TINY).fit(X, np.arange(3))
    with pytest.raises(ValueError, match="class labels"):
        TarFlowDensity(**TINY).fit(X, np.linspace(0, 1, 50))


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has a cuda:7")
def test_absent_device_is_an_error_at_fit():
    X = np.random.default_rng(0).normal(size=(50, 4))
    flow = TarFlowDensity(device="cuda:7", **TINY)  # construction validates nothing
    with pytest.raises(ValueError, match="cuda:7"):
        flow.fit(X)
    assert not hasattr(flow, "net_")


def test_pickle_round_trip(conditional, digits):
    X, _ = digits
    clone = pickle.loads(pickle.dumps(conditional))
    np.testing.assert_array_equal(clone.score_samples(X[:5]), conditional.score_samples(X[:5]))
    np.testing.assert_array_equal(clone.predict(X[:5]), conditional.predict(X[:5]))
    np.testing.assert_array_equal(
        clone.sample(3, y=2, random_state=0), conditional.sample(3, y=2, random_state=0)
    )


def test_continuous_images_are_scaled_globally():
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, size=(60, 1, 4, 4))
    flow = TarFlowDensity(**TINY).fit(X)
    Z = (X.reshape(60, -1) - X.mean()) / X.std()
    with torch.no_grad():
        log_p = flow.net_.module_.eval().log_prob(torch.as_tensor(Z, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(flow.score_samples(X), log_p - 16 * np.log(X.std()), rtol=1e-5)
    samples = flow.sample(2, random_state=0)
    assert samples.shape == (2, 1, 4, 4) and samples.dtype == np.float64


def test_grid_search_in_pipeline():
    X = np.random.default_rng(0).normal(size=(120, 4)) * [1.0, 2.0, 3.0, 4.0]
    pipe = make_pipeline(StandardScaler(), TarFlowDensity(**TINY))
    search = GridSearchCV(pipe, {"tarflowdensity__n_blocks": [1, 2]}, cv=2).fit(X)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()  # every candidate fitted and scored


@parametrize_with_checks(
    [TarFlowDensity(n_blocks=2, n_layers=1, channels=8, n_heads=2, max_epochs=2, batch_size=64)]
)
def test_sklearn_compatible_tabular(estimator, check):
    check(estimator)
