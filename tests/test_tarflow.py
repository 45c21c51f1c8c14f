"""TarFlow: the transformer flow modules and the TarFlowDensity estimator."""

import pickle

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from skflow._image import bits_per_dim, dequantization_noise
from skflow._tarflow_parts import _tweedie_step
from skflow.tarflow import TarFlowDensity
from skflow.transforms.tarflow import CausalSelfAttention, TarFlow, TarFlowBlock, TokenMixing, kv_cache

TINY = {"n_blocks": 2, "n_layers": 1, "channels": 16, "n_heads": 2, "max_epochs": 3, "random_state": 0}


def _randomise(module, std=0.3, seed=0):
    """Non-trivial weights (a fresh flow is the identity)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module.double()


def _block(reverse=False, n_classes=0):
    torch.manual_seed(0)
    block = TarFlowBlock(5, 3, channels=8, n_layers=2, n_heads=2, n_classes=n_classes, reverse=reverse)
    return _randomise(block)


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
    """d z_i / d x_i is diagonal exp(-alpha_i) and the Jacobian is triangular."""
    block = _block()
    x = torch.randn(5, 3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda a: block(a[None])[0][0], x).reshape(15, 15)
    assert torch.all(jac.triu(1) == 0)


def test_fresh_flow_is_identity():
    flow = TarFlow(12, image_shape=(3, 2, 2), patch_size=1, channels=8, n_blocks=3, n_layers=1, n_heads=2)
    x = torch.randn(6, 12)
    z, ladj = flow.transform(x)
    torch.testing.assert_close(z.reshape(6, 4, 3).permute(0, 2, 1).reshape(6, 12), x)
    assert torch.all(ladj == 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_features": 8, "image_shape": (2, 2, 2), "patch_size": 1},
        {"n_features": 16, "image_shape": (1, 4, 4), "patch_size": 2},
        {"n_features": 6, "patch_size": 2},
        {"n_features": 5, "patch_size": 1, "n_classes": 3},
        {"n_features": 16, "image_shape": (1, 4, 4), "patch_size": 2, "mixing": True},
        {"n_features": 8, "image_shape": (2, 2, 2), "patch_size": 1, "mixing": True, "logit_alpha": 0.05},
        {"n_features": 6, "patch_size": 3, "mixing": True, "n_classes": 3},
    ],
)
def test_inverse_and_log_det_match_autograd(kwargs):
    flow = _randomise(TarFlow(channels=8, n_blocks=3, n_layers=2, n_heads=2, **kwargs), std=0.2)
    n = kwargs["n_features"]
    x = torch.randn(3, n, dtype=torch.float64)
    if "logit_alpha" in kwargs:  # pixels in (-1, 1)
        x = torch.tanh(x)
    y = torch.tensor([0, 2, 3]) if kwargs.get("n_classes") else None
    z, ladj = flow.transform(x, y)
    x_back, ladj_inv = flow.inverse(z, y)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(ladj_inv, -ladj)
    for k in range(3):
        label = None if y is None else y[k : k + 1]
        jac = torch.autograd.functional.jacobian(
            lambda a, label=label: flow.transform(a[None], label)[0].reshape(-1), x[k]
        )
        torch.testing.assert_close(ladj[k], torch.linalg.slogdet(jac)[1])
        jac_inv = torch.autograd.functional.jacobian(
            lambda b, label=label: flow.inverse(b[None], label)[0][0], z[k]
        )
        jac_inv = jac_inv.reshape(n, n)
        torch.testing.assert_close(ladj_inv[k], torch.linalg.slogdet(jac_inv)[1])


def test_token_mixing_is_one_matrix_for_all_tokens():
    mixing = _randomise(TokenMixing(3), std=0.5)
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    z, ladj = mixing(x)
    bias = mixing.bias
    weight = (mixing(torch.eye(3, dtype=torch.float64)[None])[0][0] - bias).T  # rows e_j -> W e_j + b
    torch.testing.assert_close(z, x @ weight.T + bias)
    torch.testing.assert_close(ladj, (5 * torch.linalg.slogdet(weight)[1]).expand(4))
    torch.testing.assert_close(mixing.inverse(z)[0], x)


def test_fresh_flow_with_mixing_is_identity():
    flow = TarFlow(16, image_shape=(1, 4, 4), patch_size=2, channels=8, n_blocks=2, n_heads=2, mixing=True)
    x = torch.randn(5, 16)
    z, ladj = flow.transform(x)
    torch.testing.assert_close(flow.inverse(z)[0], x)
    assert torch.all(ladj == 0)


def test_logit_pixels_log_det():
    flow = TarFlow(4, patch_size=1, channels=8, n_blocks=1, n_layers=1, n_heads=2, logit_alpha=0.05).double()
    x = torch.tanh(torch.randn(3, 4, dtype=torch.float64))
    p = 0.05 + 0.9 * (x + 1) / 2
    expected = (torch.log(0.45 / (p * (1 - p)))).sum(dim=1)  # d logit(p) / dx = 0.9 / 2 / (p (1 - p))
    torch.testing.assert_close(flow.transform(x)[1], expected)


def test_log_prob_is_base_plus_log_det():
    flow = _randomise(TarFlow(4, patch_size=1, channels=8, n_blocks=2, n_layers=1, n_heads=2), std=0.2)
    x = torch.randn(7, 4, dtype=torch.float64)
    z, ladj = flow.transform(x)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(dim=(1, 2)) + ladj
    torch.testing.assert_close(flow.log_prob(x), expected)


@pytest.mark.parametrize("guidance", [0.0, 1.5])
def test_cached_sampling_equals_uncached(guidance):
    flow = _randomise(
        TarFlow(18, image_shape=(2, 3, 3), patch_size=1, channels=8, n_blocks=3, n_heads=2, n_classes=2)
    )
    y = torch.tensor([0, 1, 1, 0])
    cached = flow.sample(4, torch.Generator().manual_seed(1), y, guidance, cache=True)
    uncached = flow.sample(4, torch.Generator().manual_seed(1), y, guidance, cache=False)
    torch.testing.assert_close(cached, uncached, rtol=1e-12, atol=1e-12)
    assert all(m.cache is None for m in flow.modules() if isinstance(m, CausalSelfAttention))


def test_kv_cache_is_dropped_on_error():
    block = _block()
    attention = [m for m in block.modules() if isinstance(m, CausalSelfAttention)]
    with pytest.raises(RuntimeError, match="boom"), kv_cache(block):
        block(torch.randn(2, 5, 3, dtype=torch.float64))
        assert all(m.cache["k"].shape[2] == 5 for m in attention)  # keys of the 5 positions kept
        raise RuntimeError("boom")
    assert all(m.cache is None for m in attention)


def test_guidance_zero_samples_the_conditional():
    flow = _randomise(TarFlow(6, patch_size=1, channels=8, n_blocks=2, n_heads=2, n_classes=3), std=0.2)
    y = torch.tensor([0, 1, 2, 1])
    z = torch.randn(4, 6, 1, dtype=torch.float64)
    x0, _ = flow.inverse(z, y, guidance=0.0)
    torch.testing.assert_close(flow.transform(x0, y)[0], z)  # x0 = f^{-1}(z | y)
    x_guided, _ = flow.inverse(z, y, guidance=2.0)
    assert not torch.allclose(x_guided, x0)
    # Guidance has no effect when the null class's embedding equals the class's.
    with torch.no_grad():
        for block in flow.blocks:
            block.class_embedding.weight[3] = block.class_embedding.weight[1]
    same = torch.tensor([1, 1, 1, 1])
    torch.testing.assert_close(flow.inverse(z, same, guidance=2.0)[0], flow.inverse(z, same)[0])


def test_guidance_extrapolates_shift_and_log_scale():
    """One block, N=1: x = z * exp(a_w) + mu_w with a_w = a + w (a - a_null)."""
    block = _randomise(TarFlowBlock(1, 2, channels=8, n_layers=1, n_heads=2, n_classes=2))
    z = torch.randn(3, 1, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 0])
    w = 0.7

    def params(labels):
        return block._shift_log_scale(block._embed(z[:, :0], 0, labels, with_start=True))

    (mu, alpha), (mu0, alpha0) = params(y), params(torch.full((3,), 2))
    expected = z * torch.exp(alpha + w * (alpha - alpha0)) + mu + w * (mu - mu0)
    torch.testing.assert_close(block.inverse(z, y, guidance=w)[0], expected)


def test_tweedie_step_on_standard_normal():
    flow = TarFlow(4, channels=8, n_blocks=1, n_layers=1, n_heads=2).double()  # identity: p = N(0, I)
    x = torch.randn(5, 4, dtype=torch.float64)
    torch.testing.assert_close(_tweedie_step(flow, x, None, 0.0, 0.3), x * (1 - 0.09))


# -------------------------------------------------------------- estimator
@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:300], y[:300]


@pytest.fixture(scope="module")
def conditional(digits):
    X, y = digits
    return TarFlowDensity(n_bins=17, image_shape=(1, 8, 8), **TINY).fit(X, y)


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
    "extra", [{}, {"mixing": True, "logit_alpha": 0.05, "lr_schedule": "cosine", "patch_size": 2}]
)
def test_discrete_bound_bookkeeping(extra):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 4, size=(200, 2)).astype(float)
    flow = TarFlowDensity(
        n_bins=4, n_blocks=2, n_layers=1, channels=16, n_heads=2, max_epochs=10, random_state=0, **extra
    )
    flow.fit(X)
    grid = np.array([[a, b] for a in range(4) for b in range(4)], dtype=float)
    log_p = flow.score_samples(grid)
    # mean_k p(x + u_k) is an unbiased estimate of the mass of the cell of x, so the 16 estimates sum to
    # about the mass inside the box: <= 1, exactly 1 in logit space (no mass outside), up to draw noise.
    assert np.exp(log_p).sum() <= 1.05
    # By hand: log mean_k p_scaled((x + u_k) * 2/4 - 1) + 2 log(2/4), the same draws u_k.
    module = flow.net_.module_.eval()
    manual = []
    for u in dequantization_noise(grid, 4):
        scaled = torch.as_tensor((grid + u) * 0.5 - 1.0, dtype=torch.float32)
        with torch.no_grad():
            manual.append(module.log_prob(scaled).double().numpy())
    expected = np.log(np.mean(np.exp(manual), axis=0)) + 2 * np.log(0.5)
    np.testing.assert_allclose(log_p, expected, rtol=1e-5)
    assert bits_per_dim(flow, grid) == pytest.approx(-log_p.mean() / (2 * np.log(2)))


def test_marginal_is_logsumexp_over_classes(conditional, digits):
    X, y = digits
    flow = conditional
    module = flow.net_.module_.eval()
    per_class = []
    for c in range(10):
        labels = torch.full((20,), c)
        logs = []
        for u in dequantization_noise(X[:20], 4):
            Zu = torch.as_tensor((X[:20] + u) * (2 / 17) - 1, dtype=torch.float32)
            with torch.no_grad():
                logs.append(module.log_prob(Zu, labels).double().numpy())
        per_class.append(logsumexp(logs, axis=0) - np.log(4) + 64 * np.log(2 / 17))
    joint = np.stack(per_class, axis=1) + np.log(flow.class_prior_)
    np.testing.assert_allclose(flow.score_samples(X[:20]), logsumexp(joint, axis=1), rtol=1e-6)
    np.testing.assert_allclose(flow.predict_proba(X[:20]), softmax(joint, axis=1), rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(flow.predict(X[:20]), flow.classes_[joint.argmax(axis=1)])
    np.testing.assert_allclose(flow.class_prior_, np.bincount(y) / len(y))


def test_conditional_sampling(conditional):
    flow = conditional
    a = flow.sample(5, y=3, guidance=0.0, random_state=0)
    b = flow.sample(5, y=[3] * 5, random_state=0)
    np.testing.assert_array_equal(a, b)
    guided = flow.sample(5, y=3, guidance=2.0, random_state=0)
    assert guided.shape == (5, 64) and not np.array_equal(guided, a)
    assert guided.dtype == np.int64 and np.all((guided >= 0) & (guided < 17))
    with pytest.raises(ValueError, match="not seen"):
        flow.sample(2, y=11)


def test_unconditional_model_refuses_labels_and_guidance(digits):
    X, _ = digits
    flow = TarFlowDensity(n_bins=17, image_shape=(1, 8, 8), **{**TINY, "max_epochs": 1}).fit(X)
    assert not hasattr(flow, "predict_proba") and flow.classes_ is None
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
    assert samples.shape == (3, *shapes[layout])
    np.testing.assert_array_equal(samples, second.sample(3, random_state=0))
    np.testing.assert_array_equal(first.score_samples(data[:5]), second.score_samples(data[:5]))
    assert first.score_samples(data[:5]).shape == (5,)
    assert first.net_.module_.blocks[0].n_tokens == 16  # 2x2 patches of an 8x8 image


def test_denoising_moves_samples_by_the_score():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    flow = TarFlowDensity(noise_std=0.3, **TINY).fit(X)
    raw = flow.sample(50, random_state=0, denoise=False)
    clean = flow.sample(50, random_state=0)
    assert not np.allclose(raw, clean)
    module = flow.net_.module_.eval()
    z = torch.as_tensor(flow.standardizer_.transform(raw), dtype=torch.float32)
    expected = _tweedie_step(module, z, None, 0.0, 0.3).double().numpy()
    np.testing.assert_allclose(flow.standardizer_.transform(clean), expected, rtol=1e-4, atol=1e-5)


def test_logit_pixels_only_for_noiseless_bins(digits):
    X, _ = digits
    assert TarFlowDensity(n_bins=17, **TINY).fit(X[:100]).net_.module_.logit is not None
    assert TarFlowDensity(n_bins=17, noise_std=0.05, **TINY).fit(X[:100]).net_.module_.logit is None
    assert TarFlowDensity(**TINY).fit(X[:100].reshape(100, -1)).net_.module_.logit is None


def test_invalid_settings():
    X = np.random.default_rng(0).normal(size=(50, 5))
    with pytest.raises(ValueError, match="patch_size"):
        TarFlowDensity(patch_size=2, **TINY).fit(X)
    with pytest.raises(ValueError, match="n_bins"):
        TarFlowDensity(n_bins=4, **TINY).fit(X)
    with pytest.raises(ValueError, match="divisible"):
        TarFlowDensity(**{**TINY, "channels": 15}).fit(X)


def test_pickle_round_trip(conditional, digits):
    X, _ = digits
    clone = pickle.loads(pickle.dumps(conditional))
    np.testing.assert_array_equal(clone.score_samples(X[:5]), conditional.score_samples(X[:5]))


def test_continuous_images_are_scaled_globally():
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, size=(60, 1, 4, 4))
    flow = TarFlowDensity(**TINY).fit(X)
    Z = (X.reshape(60, -1) - X.mean()) / X.std()
    with torch.no_grad():
        log_p = flow.net_.module_.eval().log_prob(torch.as_tensor(Z, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(flow.score_samples(X), log_p - 16 * np.log(X.std()), rtol=1e-5)
    assert flow.sample(2, random_state=0).shape == (2, 1, 4, 4)


def test_grid_search_in_pipeline():
    X = np.random.default_rng(0).normal(size=(120, 4)) * [1.0, 2.0, 3.0, 4.0]
    pipe = make_pipeline(StandardScaler(), TarFlowDensity(**TINY))
    search = GridSearchCV(pipe, {"tarflowdensity__n_blocks": [1, 2]}, cv=2).fit(X)
    assert search.best_params_["tarflowdensity__n_blocks"] in (1, 2)
    assert np.isfinite(search.best_score_)


@parametrize_with_checks(
    [TarFlowDensity(n_blocks=2, n_layers=1, channels=8, n_heads=2, max_epochs=2, batch_size=64)]
)
def test_sklearn_compatible_tabular(estimator, check):
    check(estimator)
