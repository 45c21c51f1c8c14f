"""IAFDensity: the inverse autoregressive layer against autograd, and the estimator end to end."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from skflow.estimators.tabular import IAFDensity, MAFDensity
from skflow.transforms import Inverse, MaskedAffineAutoregressive


def _perturbed_iaf(n_features, seed, context_features=0):
    order = torch.randperm(n_features)
    layer = Inverse(
        MaskedAffineAutoregressive(n_features, (16, 16), order, context_features=context_features)
    ).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return layer


def _jacobian(fn, row, context=None):
    return torch.autograd.functional.jacobian(lambda v: fn(v[None], context)[0][0], row)


@pytest.mark.parametrize("seed", [0, 1])
def test_iaf_layer_inverse_and_log_dets_match_autograd(seed):
    torch.manual_seed(seed)
    layer = _perturbed_iaf(4, seed)
    z = torch.randn(6, 4, dtype=torch.float64)
    x, ladj_sample = layer.inverse(z)  # noise -> data: one pass
    z_back, ladj_score = layer(x)  # data -> noise: D passes
    torch.testing.assert_close(z_back, z, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ladj_score, -ladj_sample, rtol=1e-9, atol=1e-9)
    for i in range(len(z)):
        jac_sample = _jacobian(layer.inverse, z[i])
        jac_score = _jacobian(layer, x[i])
        torch.testing.assert_close(ladj_sample[i], torch.linalg.slogdet(jac_sample)[1], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(ladj_score[i], torch.linalg.slogdet(jac_score)[1], rtol=1e-9, atol=1e-9)
        # Sampling direction: x_i depends on z_j only for j earlier in the order (triangular).
        order = layer.transform.made.order
        later = order[None, :] > order[:, None]
        assert torch.all(jac_sample[later] == 0)


@pytest.fixture(scope="module")
def gaussian_data():
    rng = np.random.default_rng(0)
    cov = np.array([[1.0, 0.8], [0.8, 1.0]])
    return rng.multivariate_normal([2.0, -1.0], cov, size=1500), cov


@pytest.fixture(scope="module")
def fitted(gaussian_data):
    X, _ = gaussian_data
    return IAFDensity(
        n_transforms=2, hidden_features=(32, 32), max_epochs=30, batch_size=128, random_state=0
    ).fit(X)


def test_fitted_density_is_normalized(fitted):
    t = np.linspace(-8, 8, 321)
    g1, g2 = np.meshgrid(t + 2.0, t - 1.0, indexing="ij")
    density = np.exp(fitted.score_samples(np.column_stack([g1.ravel(), g2.ravel()]))).reshape(g1.shape)
    assert abs(np.trapezoid(np.trapezoid(density, t, axis=1), t) - 1) < 0.01


def test_fit_is_close_to_the_true_gaussian(fitted, gaussian_data):
    _X, cov = gaussian_data
    rng = np.random.default_rng(1)
    X_test = rng.multivariate_normal([2.0, -1.0], cov, size=2000)
    diff = X_test - [2.0, -1.0]
    true_log_p = -0.5 * np.einsum("ij,jk,ik->i", diff, np.linalg.inv(cov), diff) - 0.5 * np.log(
        np.linalg.det(2 * np.pi * cov)
    )
    # Held-out log-likelihood within 0.05 nats of the truth (which is its upper bound in expectation).
    assert fitted.score(X_test) > true_log_p.mean() - 0.05
    samples = fitted.sample(5000, random_state=0)
    np.testing.assert_allclose(samples.mean(axis=0), [2.0, -1.0], atol=0.08)
    np.testing.assert_allclose(np.cov(samples.T), cov, atol=0.1)


def test_sampling_and_scoring_agree(fitted):
    """The one-pass sampling direction and the D-pass scoring direction are the same density."""
    module = fitted.net_.module_.eval()
    with torch.no_grad():
        z, log_q = module.rsample_and_log_prob(300, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(module.log_prob(z), log_q, rtol=1e-4, atol=1e-4)


def test_iaf_and_maf_model_the_same_family():
    """A MAF layer and an IAF layer that share weights are inverse maps of each other."""
    torch.manual_seed(0)
    maf_layer = _perturbed_iaf(3, seed=5).transform
    iaf_layer = Inverse(maf_layer)
    x = torch.randn(10, 3, dtype=torch.float64)
    z, _ = maf_layer(x)
    torch.testing.assert_close(iaf_layer(z)[0].detach(), maf_layer.inverse(z)[0].detach())
    torch.testing.assert_close(iaf_layer.inverse(x)[0].detach(), z.detach())


def test_sklearn_glue(gaussian_data):
    X, _ = gaussian_data
    X = X[:300]
    est = IAFDensity(n_transforms=1, hidden_features=(8,), max_epochs=3, random_state=0)
    a, b = clone(est).fit(X), clone(est).fit(X)
    np.testing.assert_array_equal(a.score_samples(X[:5]), b.score_samples(X[:5]))
    restored = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(restored.score_samples(X[:5]), a.score_samples(X[:5]))
    search = GridSearchCV(
        make_pipeline(FunctionTransformer(), est), {"iafdensity__n_transforms": [1, 2]}, cv=2
    ).fit(X)
    assert search.best_params_["iafdensity__n_transforms"] in (1, 2)


def test_same_interface_as_maf():
    assert set(IAFDensity().get_params()) == set(MAFDensity().get_params())


def test_conditional_iaf_layer_matches_autograd():
    """With a context, the layer is still a bijection of x for each context, with the right log-det."""
    torch.manual_seed(2)
    layer = _perturbed_iaf(3, seed=2, context_features=2)
    z = torch.randn(4, 3, dtype=torch.float64)
    context = torch.randn(4, 2, dtype=torch.float64)
    x, ladj_sample = layer.inverse(z, context)
    z_back, ladj_score = layer(x, context)
    torch.testing.assert_close(z_back, z, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ladj_score, -ladj_sample, rtol=1e-9, atol=1e-9)
    for i in range(len(z)):
        jac = _jacobian(layer.inverse, z[i], context[i : i + 1])
        torch.testing.assert_close(ladj_sample[i], torch.linalg.slogdet(jac)[1], rtol=1e-9, atol=1e-9)
    # the context conditions the map
    other, _ = layer.inverse(z, context + 1.0)
    assert not torch.allclose(other, x)


def test_class_conditional_iaf():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600)
    X = rng.normal(size=(600, 2)) + np.where(y[:, None] == 1, [3.0, -3.0], [0.0, 0.0])
    est = IAFDensity(n_transforms=2, hidden_features=(16,), max_epochs=15, lr=1e-2, random_state=0).fit(X, y)
    assert np.mean(est.predict(X) == y) > 0.95
    module = est.net_.module_.eval()
    context = torch.eye(2)[torch.tensor([0, 1] * 100)]
    with torch.no_grad():
        x, log_q = module.rsample_and_log_prob(200, context, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(module.log_prob(x, context), log_q, rtol=1e-4, atol=1e-4)
    samples = est.sample(400, random_state=0, y=1)
    np.testing.assert_allclose(samples.mean(axis=0), [3.0, -3.0], atol=0.3)
