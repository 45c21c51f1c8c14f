"""Densities are normalised, in the units of X, and reproducible."""

import numpy as np
import pytest

from skflow import MADEDensity, MAFDensity, NSFDensity, RealNVPDensity

ESTIMATORS = {
    "made_mog": lambda **kw: MADEDensity(n_components=4, hidden_features=(32, 32), **kw),
    "maf": lambda **kw: MAFDensity(n_transforms=3, hidden_features=(32, 32), **kw),
    "maf_bn_mixture": lambda **kw: MAFDensity(
        n_transforms=2, hidden_features=(32,), batch_norm=True, base="mixture", n_components=3, **kw
    ),
    "maf_made_mixture": lambda **kw: MAFDensity(
        n_transforms=2, hidden_features=(32,), base="made_mixture", **kw
    ),
    "realnvp": lambda **kw: RealNVPDensity(n_transforms=4, hidden_features=(32, 32), **kw),
}


def _two_moons(n=600, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, np.pi, n)
    upper = rng.random(n) < 0.5
    x = np.where(upper, np.cos(t), 1 - np.cos(t))
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    return np.c_[x, y] * [3.0, 0.5] + rng.normal(0, 0.1, (n, 2)) + [10.0, -2.0]


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_1d_density_integrates_to_one(name):
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(-2, 0.5, 300), rng.normal(3, 1.0, 300)][:, None] * 10.0 + 100.0
    est = ESTIMATORS[name](max_epochs=30, random_state=0).fit(X)
    grid = np.linspace(X.min() - 80, X.max() + 80, 20001)
    density = np.exp(est.score_samples(grid[:, None]))
    assert abs(np.trapezoid(density, grid) - 1) < 0.01


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_2d_density_integrates_to_one(name):
    X = _two_moons()
    est = ESTIMATORS[name](max_epochs=30, random_state=0).fit(X)
    lo, hi = X.min(0) - 3 * X.std(0), X.max(0) + 3 * X.std(0)
    gx, gy = np.linspace(lo[0], hi[0], 401), np.linspace(lo[1], hi[1], 401)
    xx, yy = np.meshgrid(gx, gy, indexing="ij")
    density = np.exp(est.score_samples(np.c_[xx.ravel(), yy.ravel()])).reshape(xx.shape)
    assert abs(np.trapezoid(np.trapezoid(density, gy), gx) - 1) < 0.01


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("c", [4.0, 0.125])
def test_scaling_x_shifts_log_density_by_log_jacobian(name, c):
    X = _two_moons(300)
    base = ESTIMATORS[name](max_epochs=5, random_state=0).fit(X)
    scaled = ESTIMATORS[name](max_epochs=5, random_state=0).fit(X * c)
    expected = base.score_samples(X) - X.shape[1] * np.log(c)
    np.testing.assert_allclose(scaled.score_samples(X * c), expected, rtol=1e-10, atol=1e-10)


def test_gaussian_data_recovers_gaussian_log_likelihood():
    rng = np.random.default_rng(0)
    cov = np.array([[2.0, 1.2, 0.0], [1.2, 1.5, -0.4], [0.0, -0.4, 0.7]])
    X = rng.multivariate_normal([1.0, -2.0, 5.0], cov, size=4000)
    X_test = rng.multivariate_normal([1.0, -2.0, 5.0], cov, size=2000)
    _, logdet = np.linalg.slogdet(cov)
    diff = X_test - [1.0, -2.0, 5.0]
    true = (
        -0.5 * np.einsum("ij,jk,ik->i", diff, np.linalg.inv(cov), diff)
        - 0.5 * logdet
        - 1.5 * np.log(2 * np.pi)
    )
    est = MAFDensity(n_transforms=2, hidden_features=(32,), max_epochs=40, random_state=0).fit(X)
    # the fitted model's held-out likelihood is within 0.05 nats/row of the true density's
    assert abs(est.score(X_test) - true.mean()) < 0.05
    samples = est.sample(20000, random_state=0)
    np.testing.assert_allclose(samples.mean(0), [1.0, -2.0, 5.0], atol=0.06)
    np.testing.assert_allclose(np.cov(samples.T), np.cov(X.T), atol=0.2)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MAFDensity(n_transforms=2, hidden_features=(16,), base="made_mixture", n_components=3),
        lambda: NSFDensity(n_transforms=2, hidden_features=(16,), spline_bins=6),
    ],
    ids=["maf_made_mixture", "nsf"],
)
def test_class_conditional_densities_integrate_to_one(make):
    """Fitted with labels: the marginal and every p(x | y) are normalised, and Bayes' rule holds."""
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(-2, 0.5, 150), rng.normal(3, 1.0, 350)][:, None] * 10.0 + 100.0
    y = np.r_[np.zeros(150, int), np.ones(350, int)]
    est = make().set_params(max_epochs=20, random_state=0).fit(X, y)
    grid = np.linspace(X.min() - 80, X.max() + 80, 20001)[:, None]
    log_marginal = est.score_samples(grid)
    assert abs(np.trapezoid(np.exp(log_marginal), grid[:, 0]) - 1) < 0.01
    proba = est.predict_proba(grid)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-10)
    np.testing.assert_allclose(est.class_prior_, [0.3, 0.7])
    for c in range(2):  # p(x | c) = p(c | x) p(x) / p(c)
        conditional = proba[:, c] * np.exp(log_marginal) / est.class_prior_[c]
        assert abs(np.trapezoid(conditional, grid[:, 0]) - 1) < 0.01
    # the classes are told apart where their clusters lie
    assert est.predict(np.array([[80.0], [130.0]])).tolist() == [0, 1]


@pytest.mark.parametrize(
    "estimator",
    [
        lambda: MADEDensity(hidden_features=(8,)),
        lambda: MADEDensity(hidden_features=(8,), n_components=3),
        lambda: MAFDensity(n_transforms=1, hidden_features=(8,)),
        lambda: NSFDensity(n_transforms=1, hidden_features=(8,), base="diagonal"),
    ],
    ids=["made", "made-mog", "maf-1-made-mixture", "nsf-1-diagonal"],
)
def test_chain_rule_terms_sum_to_the_log_density(estimator):
    """log_prob_terms splits log p(x) into one term per feature, and term j depends on x_<=j only."""
    import torch

    est = estimator()
    est.table_ = None
    torch.manual_seed(0)
    model = est._build_module(3, 0).double()
    for parameter in model.parameters():  # away from the identity start, so the test can fail
        torch.nn.init.normal_(parameter, std=0.3)
    x = torch.randn(6, 3, dtype=torch.float64)
    terms = model.log_prob_terms(x)
    torch.testing.assert_close(terms.sum(dim=1), model.log_prob(x), rtol=1e-12, atol=1e-12)
    changed = x.clone()
    changed[:, 2] += 1.0  # the last column in the natural order: earlier terms must not move
    torch.testing.assert_close(model.log_prob_terms(changed)[:, :2], terms[:, :2], rtol=1e-12, atol=1e-12)


def test_deeper_flows_have_no_per_feature_terms():
    import torch

    for est in (
        MAFDensity(n_transforms=2, hidden_features=(8,)),
        RealNVPDensity(n_transforms=1, hidden_features=(8,)),
    ):
        est.table_ = None
        with pytest.raises(TypeError, match="per-feature"):
            est._build_module(3, 0).log_prob_terms(torch.randn(2, 3))
