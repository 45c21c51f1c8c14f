"""Missing cells (NaN): marginal likelihoods against numerical integrals, the proposal's math,
posterior draws against a known Gaussian conditional, and the estimators' contract with NaN."""

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline

from skflow import (
    FlowImputer,
    FlowMixture,
    FlowOutlierDetector,
    FlowRegressor,
    MADEDensity,
    MAFDensity,
    NSFDensity,
    RealNVPDensity,
    TarFlowDensity,
)
from skflow.data.missing import GaussianProposal, fill, fit_gaussian
from skflow.data.scaling import Standardizer
from skflow.estimators import density as density_module
from skflow.estimators import imputer as imputer_module
from skflow.estimators.imputer import posterior
from skflow.models.flow import whitening

COV = np.array([[1.0, 0.8, 0.3], [0.8, 1.0, 0.5], [0.3, 0.5, 1.0]])
SMALL = {"n_transforms": 2, "hidden_features": (16,), "max_epochs": 40}


def _gaussian(n=600, seed=0, rate=0.2):
    rng = np.random.default_rng(seed)
    X = rng.multivariate_normal([1.0, -2.0, 0.5], COV, size=n)
    Xm = X.copy()
    Xm[rng.random(X.shape) < rate] = np.nan
    keep = ~np.isnan(Xm).all(axis=1)
    return X[keep], Xm[keep]


def _with_nan(X, seed=0, rate=0.2):
    X = np.array(X, dtype=float)
    X[np.random.default_rng(seed).random(X.shape) < rate] = np.nan
    return X[~np.isnan(X).all(axis=1)]


# ---------------------------------------------------------------------------- the math
def test_standardizer_ignores_missing_cells_and_counts_observed_jacobians():
    _, Xm = _gaussian()
    scaler = Standardizer().fit(Xm)
    observed = [Xm[~np.isnan(Xm[:, j]), j] for j in range(3)]
    np.testing.assert_allclose(scaler.mean_, [c.mean() for c in observed])
    np.testing.assert_allclose(scaler.scale_, [c.std() for c in observed])
    Z = scaler.transform(Xm)
    assert np.array_equal(np.isnan(Z), np.isnan(Xm))
    expected = -np.array([np.log(scaler.scale_[~np.isnan(row)]).sum() for row in Xm])
    np.testing.assert_allclose(scaler.log_det(Z), expected)


def test_em_recovers_the_covariance_of_incomplete_gaussian_rows():
    rng = np.random.default_rng(1)
    X = rng.multivariate_normal(np.zeros(3), COV, size=20_000)
    X[rng.random(X.shape) < 0.3] = np.nan
    mean, cov = fit_gaussian(X, ridge=0.0)
    np.testing.assert_allclose(mean, 0.0, atol=0.03)
    np.testing.assert_allclose(cov, COV, atol=0.04)


@pytest.mark.parametrize("row", [[0.5, np.nan, np.nan], [np.nan, 1.0, -0.5], [1.2, -0.3, np.nan]])
def test_importance_estimate_of_a_gaussian_marginal_is_exact_in_the_limit(row):
    """With the joint itself Gaussian, log mean_k p/q converges to the exact marginal log-density."""
    rng = np.random.default_rng(2)
    proposal = GaussianProposal().fit(rng.multivariate_normal(np.zeros(3), COV, size=5000))
    x = np.array([row])
    factors = proposal.tensors(~np.isnan(x), "cpu", torch.float64)
    gen = torch.Generator().manual_seed(0)
    k = 20_000
    normal = torch.randn(1, k, 3, generator=gen, dtype=torch.float64)
    uniform = torch.rand(1, k, 4, generator=gen, dtype=torch.float64)
    filled, log_q = fill(torch.tensor(x), factors["index"], factors, normal, uniform)
    assert torch.equal(filled[0, :, ~np.isnan(x[0])], torch.tensor(x)[:, ~np.isnan(x[0])].expand(k, -1))
    log_joint = stats.multivariate_normal(np.zeros(3), COV).logpdf(filled[0].numpy())
    estimate = logsumexp(log_joint - log_q[0].numpy()) - np.log(k)
    o = ~np.isnan(x[0])
    exact = stats.multivariate_normal(np.zeros(o.sum()), COV[np.ix_(o, o)]).logpdf(x[0][o])
    assert abs(estimate - exact) < 0.01


def test_whitening_start_maps_the_gaussian_to_a_standard_normal():
    """The layer a flow fitted to incomplete rows starts with: x -> L^-1 (x - mean), exactly invertible,
    log|det| = -log|det L| (checked against autograd's Jacobian in float64)."""
    mean, cov = np.array([1.0, -2.0, 0.5]), COV
    layer = whitening(mean, cov).double()
    x = torch.tensor(np.random.default_rng(0).normal(size=(5, 3)), requires_grad=True)
    z, ladj = layer(x)
    expected = np.linalg.solve(np.linalg.cholesky(cov), (x.detach().numpy() - mean).T).T
    np.testing.assert_allclose(z.detach().numpy(), expected, atol=1e-6)
    jacobian = torch.autograd.functional.jacobian(lambda row: layer(row[None])[0][0], x[0].detach())
    np.testing.assert_allclose(ladj.detach().numpy(), torch.linalg.slogdet(jacobian)[1].item(), atol=1e-6)
    np.testing.assert_allclose(ladj.detach().numpy(), -0.5 * np.linalg.slogdet(cov)[1], atol=1e-6)
    back, _ = layer.inverse(z)
    np.testing.assert_allclose(back.detach().numpy(), x.detach().numpy(), atol=1e-10)


@pytest.fixture(scope="module")
def fitted_2d():
    rng = np.random.default_rng(3)
    x1 = rng.normal(size=700)
    X = np.c_[x1, 0.5 * x1**2 + 0.4 * rng.normal(size=700)]
    return MAFDensity(**SMALL, random_state=0).fit(_with_nan(X, seed=1, rate=0.15))


@pytest.fixture
def many_draws(monkeypatch):
    """2,048 importance draws per row: the estimate then sits within a few hundredths of a nat of
    the integral (with the default 256, within about 0.1 on these bimodal conditionals)."""
    monkeypatch.setattr(density_module, "MISSING_SCORE_DRAWS", 2048)


@pytest.mark.parametrize("value", [-1.0, 0.2, 1.3])
@pytest.mark.parametrize("missing", [0, 1])
def test_2d_marginal_equals_the_integral_of_the_joint(fitted_2d, value, missing, many_draws):
    grid = np.linspace(-10, 12, 4001)
    points = np.empty((len(grid), 2))
    points[:, 1 - missing], points[:, missing] = value, grid
    integral = logsumexp(fitted_2d.score_samples(points)) + np.log(grid[1] - grid[0])
    row = np.full((1, 2), np.nan)
    row[0, 1 - missing] = value
    assert abs(fitted_2d.score_samples(row)[0] - integral) < 0.04


def test_3d_marginal_over_two_missing_cells_equals_the_integral_of_the_joint(many_draws):
    _, Xm = _gaussian(n=800, seed=4)
    model = MAFDensity(**SMALL, random_state=0).fit(Xm)
    a = np.linspace(-4.0, 6.0, 161)
    b = np.linspace(-3.5, 4.5, 161)
    A, B = np.meshgrid(a, b, indexing="ij")
    for x0 in (0.2, 1.5):
        points = np.c_[np.full(A.size, x0), A.ravel(), B.ravel()]
        integral = logsumexp(model.score_samples(points)) + np.log((a[1] - a[0]) * (b[1] - b[0]))
        estimate = model.score_samples(np.array([[x0, np.nan, np.nan]]))[0]
        assert abs(estimate - integral) < 0.04


def test_posterior_draws_match_a_known_gaussian_conditional():
    """With the model's joint replaced by the exact Gaussian, the imputer's mean and draws are those
    of p(x_m | x_o): moments and a two-sample Kolmogorov-Smirnov test."""
    _, Xm = _gaussian(n=400, seed=5)
    imputer = FlowImputer(MAFDensity(n_transforms=1, hidden_features=(4,), max_epochs=2), n_draws=2000,
                          random_state=0).fit(Xm)
    density = imputer.estimator_
    mean = np.array([1.0, -2.0, 0.5])
    scaler = density.standardizer_
    exact = stats.multivariate_normal(mean, COV)
    density._log_prob = lambda Z, context=None, *a, **k: exact.logpdf(Z * scaler.scale_ + scaler.mean_)
    row = np.array([[2.0, np.nan, np.nan]])
    cond_mean = mean[1:] + COV[1:, :1] @ np.linalg.solve(COV[:1, :1], row[0, :1] - mean[:1])
    cond_cov = COV[1:, 1:] - COV[1:, :1] @ np.linalg.solve(COV[:1, :1], COV[:1, 1:])
    np.testing.assert_allclose(imputer.transform(row)[0, 1:], cond_mean, atol=0.05)
    draws = imputer.sample(np.repeat(row, 10, axis=0), n_samples=100, random_state=1)[:, :, 1:].reshape(-1, 2)
    np.testing.assert_allclose(draws.mean(axis=0), cond_mean, atol=0.08)
    np.testing.assert_allclose(np.cov(draws.T), cond_cov, atol=0.08)
    reference = np.random.default_rng(0).multivariate_normal(cond_mean, cond_cov, size=1000)
    for j in range(2):
        assert stats.ks_2samp(draws[:, j], reference[:, j]).pvalue > 0.001


def test_rows_with_few_effective_draws_get_sixteen_times_more(fitted_2d, monkeypatch):
    """``posterior`` yields every incomplete row once: with its ``draws`` proposals when their
    effective sample size is at least ``draws / REFINE_BELOW``, else with those and 15 x ``draws``
    fresh ones. The threshold is raised here (to draws / 1.2) so that some rows of this two-branched
    posterior (x1 given x2 = 0.5 x1^2 + noise) fall below it."""
    monkeypatch.setattr(imputer_module, "REFINE_BELOW", 1.2)
    density = fitted_2d
    rng = np.random.default_rng(7)
    x1 = rng.normal(size=200)
    A = np.c_[x1, 0.5 * x1**2 + 0.4 * rng.normal(size=200)]
    A[rng.random(200) < 0.5, 0] = np.nan
    A[1::7, 1] = np.nan
    A[1::7, 0] = 0.3
    chunks = list(posterior(density, A, draws=64, seed=3))
    rows = np.concatenate([index for index, *_ in chunks])
    np.testing.assert_array_equal(np.sort(rows), np.flatnonzero(np.isnan(A).any(axis=1)))
    first = {}
    base, log_joint = density, density._log_prob
    for index, filled, log_p, log_q in base._importance(density.standardizer_.transform(A),
                                                         np.sort(rows), log_joint, draws=64, seed=3):
        for i, lp, lq in zip(index, log_p, log_q):
            w = np.exp(lp - lq - np.max(lp - lq))
            first[i] = (w.sum() ** 2 / (w**2).sum())  # effective sample size of the first 64 draws
    widths = {i: weight.shape[1] for index, _, weight, _ in chunks for i in index}
    assert {64, 1024} >= set(widths.values())
    assert any(width == 1024 for width in widths.values())  # some rows were refined
    for i, width in widths.items():
        if abs(first[i] - 64 / 1.2) > 1e-6:  # (rounding decides a row exactly at the threshold)
            assert (width == 1024) == (first[i] < 64 / 1.2), i
    for index, filled, weight, _ in chunks:
        np.testing.assert_allclose(weight.sum(axis=1), 1.0)
        assert np.all(filled[~np.isnan(A[index])[:, None, :].repeat(filled.shape[1], 1)]
                      == np.broadcast_to(A[index][:, None, :], filled.shape)[~np.isnan(A[index])[:, None, :]
                                                                             .repeat(filled.shape[1], 1)])


# ------------------------------------------------------------------------- the estimators
@pytest.mark.parametrize(
    "estimator",
    [
        MADEDensity(max_epochs=3, hidden_features=(8,)),
        MAFDensity(n_transforms=1, max_epochs=3, hidden_features=(8,)),
        NSFDensity(n_transforms=1, max_epochs=3, hidden_features=(8,)),
        RealNVPDensity(n_transforms=2, max_epochs=3, hidden_features=(8,)),
        FlowMixture(MAFDensity(n_transforms=1, max_epochs=3, hidden_features=(8,)), n_estimators=2),
    ],
    ids=lambda e: type(e).__name__,
)
def test_tabular_estimators_fit_and_score_rows_with_missing_cells(estimator):
    X, Xm = _gaussian(n=200)
    model = estimator.set_params(random_state=0).fit(Xm)
    scores = model.score_samples(Xm)
    assert np.all(np.isfinite(scores))
    # a row's score does not depend on the rows scored with it, and pickling keeps it
    np.testing.assert_allclose(model.score_samples(Xm[:7]), scores[:7])
    np.testing.assert_allclose(pickle.loads(pickle.dumps(model)).score_samples(Xm[:7]), scores[:7])
    # fewer observed cells: a density over fewer dimensions (no Jacobian of the missing cells)
    row = X[:1].copy()
    row[0, 2] = np.nan
    assert np.isfinite(model.score_samples(row)[0])


def test_reproducible_with_missing_cells():
    _, Xm = _gaussian(n=200)
    fit = lambda: MAFDensity(n_transforms=1, max_epochs=3, random_state=0).fit(Xm).score_samples(Xm[:20])
    np.testing.assert_array_equal(fit(), fit())


def test_bad_missing_input_gets_clear_errors():
    X, Xm = _gaussian(n=100)
    Xm[3] = np.nan  # a row with every cell missing
    with pytest.raises(ValueError, match="every cell missing"):
        MAFDensity(max_epochs=1).fit(Xm)
    X2 = X.copy()
    X2[1:, 0] = np.nan
    with pytest.raises(ValueError, match="fewer than 2 observed"):
        MAFDensity(max_epochs=1).fit(X2)
    X3 = X.copy()
    X3[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        MAFDensity(max_epochs=1).fit(X3)
    with pytest.raises(ValueError, match="NaN"):
        TarFlowDensity(max_epochs=1).fit(_with_nan(np.random.default_rng(0).normal(size=(50, 4))))
    model = MADEDensity(max_epochs=1).fit(X)
    with pytest.raises(ValueError, match="complete rows"):
        model.log_conditionals(_with_nan(X))


def test_mixed_table_with_missing_categories_and_values():
    rng = np.random.default_rng(0)
    n = 300
    kind = rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2])
    value = np.select([kind == "a", kind == "b"], [0.0, 3.0], 6.0) + rng.normal(size=n)
    frame = pd.DataFrame({"kind": kind, "value": value, "other": value + rng.normal(size=n)})
    frame.loc[rng.random(n) < 0.15, "kind"] = None
    frame.loc[rng.random(n) < 0.15, "value"] = np.nan
    frame = frame[~frame.isna().all(axis=1)].reset_index(drop=True)
    imputer = FlowImputer(MAFDensity(n_transforms=1, max_epochs=30, hidden_features=(16,)), random_state=0)
    filled = imputer.fit(frame).transform(frame)
    assert not filled.isna().any().any()
    assert list(filled.dtypes) == list(frame.dtypes)
    observed = frame.notna()
    assert (filled[observed] == frame[observed]).sum().sum() == observed.sum().sum()
    assert set(filled["kind"]) <= {"a", "b", "c"}
    # a missing kind is imputed from its value: the category whose values it holds
    known = frame["kind"].isna() & frame["value"].notna() & (np.abs(frame["value"] - 6) < 1)
    assert (filled.loc[known, "kind"] == "c").mean() > 0.7
    scores = imputer.estimator_.score_samples(frame)
    assert np.all(np.isfinite(scores))


def test_imputer_contract():
    X, Xm = _gaussian(n=300)
    imputer = FlowImputer(MAFDensity(n_transforms=1, max_epochs=20), random_state=0).fit(Xm)
    filled = imputer.transform(Xm)
    observed = ~np.isnan(Xm)
    assert not np.isnan(filled).any() and np.array_equal(filled[observed], Xm[observed])
    np.testing.assert_array_equal(imputer.transform(Xm), filled)  # the mean: deterministic
    draws = imputer.sample(Xm[:10], n_samples=4, random_state=0)
    assert draws.shape == (4, 10, 3)
    np.testing.assert_array_equal(draws, imputer.sample(Xm[:10], n_samples=4, random_state=0))
    assert not np.array_equal(draws[0], draws[1]) or not np.isnan(Xm[:10]).any()
    one = imputer.set_params(sample_posterior=True).transform(Xm[:10])
    assert np.array_equal(one[~np.isnan(Xm[:10])], Xm[:10][~np.isnan(Xm[:10])])
    # better than the column means on the removed cells
    removed = np.isnan(Xm)
    X_rows = X
    error = np.abs(filled - X_rows)[removed].mean()
    baseline = np.abs(np.nanmean(Xm, axis=0) - X_rows)[removed].mean()
    assert error < baseline
    frame = pd.DataFrame(Xm, columns=["a", "b", "c"])
    out = FlowImputer(MAFDensity(n_transforms=1, max_epochs=3), random_state=0).fit(frame).transform(frame)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == ["a", "b", "c"]
    rows = ~np.isnan(Xm[:, :2]).all(axis=1)
    pipe = make_pipeline(FlowImputer(MAFDensity(n_transforms=1, max_epochs=3), random_state=0),
                         LinearRegression()).fit(Xm[rows, :2], X[rows, 2])
    assert np.isfinite(pipe.predict(Xm[rows, :2])).all()


def test_detector_and_regressor_take_missing_cells():
    X, Xm = _gaussian(n=300)
    detector = FlowOutlierDetector(MAFDensity(n_transforms=1, max_epochs=10), n_estimators=2,
                                   random_state=0).fit(Xm)
    scores = detector.score_samples(Xm)
    assert np.all(np.isfinite(scores)) and set(detector.predict(Xm)) <= {-1, 1}
    # rows with missing cells are scored like complete ones: their median scores agree within noise
    incomplete = np.isnan(Xm).any(axis=1)
    spread = np.std(scores[~incomplete])
    assert abs(np.median(scores[incomplete]) - np.median(scores[~incomplete])) < spread
    # a FlowMixture inside the detector scores them the same way: E[log p(x_o, x_m) | x_o] under
    # the whole (stacked) mixture
    mixture = FlowOutlierDetector(FlowMixture(MAFDensity(n_transforms=1, max_epochs=10), n_estimators=2),
                                  random_state=0).fit(X)
    expected = mixture.estimator_.score_samples(Xm)
    member = mixture.estimator_
    A = member.estimator_._validate(Xm, reset=False)
    assert member.stacked_
    for index, _, weight, log_joint in posterior(member, A):
        expected[index] = np.sum(weight * log_joint, axis=1)
    np.testing.assert_allclose(mixture.score_samples(Xm), expected, rtol=1e-10)
    assert not np.allclose(expected[incomplete], member.score_samples(Xm)[incomplete])
    reg = FlowRegressor(MAFDensity(n_transforms=1, max_epochs=10), n_estimators=2, random_state=0)
    reg.fit(Xm[:, :2], X[:, 2])
    assert np.all(np.isfinite(reg.predict(Xm[:, :2])))
    assert np.all(np.isfinite(reg.score_samples(Xm[:, :2], np.zeros(len(Xm)))))


def test_imputer_keeps_the_index_dtypes_and_constant_columns():
    _, Xm = _gaussian(n=200)
    frame = pd.DataFrame(Xm, columns=["a", "b", "c"], index=np.arange(len(Xm))[::-1] * 3)
    frame["year"] = np.arange(len(Xm)) % 4 + 2000  # int64, never missing
    frame["const"] = 7.5
    frame.loc[frame.index[:5], "const"] = np.nan
    imputer = FlowImputer(MAFDensity(n_transforms=1, max_epochs=3), random_state=0).fit(frame)
    out = imputer.transform(frame.iloc[:20])
    # the rows keep their labels (pd.concat and ColumnTransformer align by them) and their dtypes
    assert out.index.equals(frame.index[:20]) and out.dtypes.equals(frame.dtypes)
    assert np.all(out["const"] == 7.5)  # a constant column is filled with its constant
    draws = imputer.sample(frame.iloc[:20], n_samples=3, random_state=0)
    assert all(d.index.equals(frame.index[:20]) and d.dtypes.equals(frame.dtypes) for d in draws)
    assert all(np.all(d["const"] == 7.5) for d in draws)


def test_imputer_refuses_densities_that_are_not_skflow_flows():
    from sklearn.mixture import GaussianMixture

    _, Xm = _gaussian(n=50)
    with pytest.raises(TypeError, match="skflow tabular density"):
        FlowImputer(GaussianMixture()).fit(Xm)


def test_per_column_terms_of_a_fit_with_missing_cells_are_refused_with_the_reason():
    X, Xm = _gaussian(n=200)
    made = MADEDensity(max_epochs=2, random_state=0)
    assert made.fit(X).log_conditionals(X[:3]).shape == (3, 3)
    with pytest.raises(TypeError, match="missing cells"):
        made.fit(Xm).log_conditionals(X[:3])
