"""FlowRegressor's predictive distribution, CRPS and interval scores, mixed X and sample weights."""

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kstest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skflow import FlowRegressor, MAFDensity, NSFDensity
from skflow.estimators import quadrature
from skflow.metrics import crps, interval_score

SMALL = {"hidden_features": (16,), "max_epochs": 100, "random_state": 0}


def _data(n=300, seed=0, k=1):
    """Heteroscedastic targets: y = x^2 + (0.2 + 0.3 |x|) noise."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, size=(n, 2))
    noise = rng.normal(size=(n, k)) * (0.2 + 0.3 * np.abs(X[:, :1]))
    Y = X[:, :1] ** 2 + noise + np.arange(k)
    return X, (Y[:, 0] if k == 1 else Y)


@pytest.fixture(scope="module")
def fitted():
    X, y = _data()
    reg = FlowRegressor(NSFDensity(n_transforms=1, **SMALL), n_estimators=3, random_state=0).fit(X, y)
    X_test, y_test = _data(40, seed=1)
    return reg, X_test, y_test


def _dense(reg, x, low=-40.0, high=60.0, n=200_001):
    """The exact density of one row on a fine uniform grid, and its cumulative trapezoid integral."""
    t = np.linspace(low, high, n)
    density = np.exp(reg.score_samples(np.repeat(x[None], n, axis=0), t))
    F = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(t))])
    return t, density, F


def _moments_by_quadrature(reg, x):
    t, density, F = _dense(reg, x)
    mean = np.trapezoid(t * density, t) / F[-1]
    return mean, np.trapezoid((t - mean) ** 2 * density, t) / F[-1]


def test_log_pdf_is_the_exact_mixture_density(fitted):
    reg, X, y = fitted
    dist = reg.predict_proba(X)
    np.testing.assert_array_equal(dist.log_pdf(y), reg.score_samples(X, y))
    np.testing.assert_allclose(dist.pdf(y), np.exp(reg.score_samples(X, y)))
    assert len(dist) == len(X) and dist.shape == (len(X), 1)
    with pytest.raises(ValueError, match="rows"):
        dist.log_pdf(y[:3])


def test_cdf_differences_are_integrals_of_the_exact_density(fitted):
    reg, X, _ = fitted
    dist = reg.predict_proba(X[:5])
    mean, std = dist.mean(), np.sqrt(dist.var())
    points = mean[:, None] + std[:, None] * np.array([-2.5, -1.0, -0.2, 0.7, 1.9])
    cdf = dist.cdf(points)
    assert np.all(np.diff(cdf, axis=1) > 0)
    for i in range(5):
        t, _, F = _dense(reg, X[i])
        reference = np.interp(points[i], t, F)
        np.testing.assert_allclose(np.diff(cdf[i]), np.diff(reference), atol=1e-3)
        np.testing.assert_allclose(cdf[i], reference, atol=1e-3)  # the cdf itself, tails included
    assert np.all(dist.cdf(-1e3) == 0) and np.all(dist.cdf(1e3) == 1)


def test_ppf_and_cdf_invert_each_other(fitted):
    reg, X, _ = fitted
    dist = reg.predict_proba(X)
    p = np.array([1e-4, 0.01, 0.05, 0.3, 0.5, 0.77, 0.95, 0.999])
    quantiles = dist.ppf(p[None, :])
    assert quantiles.shape == (len(X), len(p)) and np.all(np.diff(quantiles, axis=1) > 0)
    np.testing.assert_allclose(dist.cdf(quantiles), np.broadcast_to(p, quantiles.shape), atol=1e-12)
    y = dist.mean()[:, None] + np.array([-3.0, -0.5, 0.0, 0.4, 2.0])
    np.testing.assert_allclose(dist.ppf(dist.cdf(y)), y, atol=1e-9)
    np.testing.assert_array_equal(dist.quantile([0.05, 0.5]), dist.ppf(np.array([[0.05, 0.5]])))
    assert np.all(dist.ppf(0.0) == -np.inf) and np.all(dist.ppf(1.0) == np.inf)
    with pytest.raises(ValueError, match="between 0 and 1"):
        dist.ppf(1.5)


def test_mean_and_var_match_quadrature_of_the_exact_density(fitted):
    reg, X, _ = fitted
    dist = reg.predict_proba(X[:4])
    mean, var = dist.mean(), dist.var()
    for i in range(4):
        ref_mean, ref_var = _moments_by_quadrature(reg, X[i])
        # a Monte Carlo mean of 1000 draws errs by about 3 % of a standard deviation, its variance by 4.5 %
        assert mean[i] == pytest.approx(ref_mean, abs=5e-3 * np.sqrt(ref_var))
        assert var[i] == pytest.approx(ref_var, rel=1e-2)
    predicted, std = reg.predict(X[:4], return_std=True)
    np.testing.assert_array_equal(predicted, mean)
    np.testing.assert_array_equal(std, np.sqrt(var))


def test_samples_follow_the_cdf(fitted):
    reg, X, _ = fitted
    dist = reg.predict_proba(X[:3])
    draws = dist.sample(3000, random_state=0)
    assert draws.shape == (3, 3000)
    for i in range(3):
        assert kstest(draws[i], lambda v, i=i: dist[i].cdf(np.asarray(v)[None, :])[0]).pvalue > 0.01
    np.testing.assert_array_equal(dist.sample(5), dist.sample(5))  # seeded by the regressor's random_state
    np.testing.assert_array_equal(reg.sample_y(X[:3], 4, random_state=1), dist.sample(4, random_state=1))


def test_a_row_does_not_depend_on_the_rows_passed_with_it(fitted):
    reg, X, _ = fitted
    order = np.random.default_rng(0).permutation(len(X))
    whole, shuffled, alone = reg.predict_proba(X), reg.predict_proba(X[order]), reg.predict_proba(X[7:8])
    p = np.array([[0.05, 0.5, 0.95]])
    back = np.argsort(order)
    for method, args in [("mean", ()), ("var", ()), ("ppf", (p,)), ("cdf", (1.0,))]:
        value = getattr(whole, method)(*args)
        np.testing.assert_array_equal(getattr(shuffled, method)(*args)[back], value)
        np.testing.assert_array_equal(getattr(alone, method)(*args)[0], value[7])
    assert reg.predict(X[7:8])[0] == reg.predict(X)[7]
    np.testing.assert_array_equal(reg.predict_quantiles(X[7:8]), reg.predict_quantiles(X)[7:8])
    np.testing.assert_array_equal(
        reg.predict_interval(X[7:8], kind="shortest"), reg.predict_interval(X, kind="shortest")[7:8]
    )


def test_indexing_selects_rows(fitted):
    reg, X, y = fitted
    dist = reg.predict_proba(X[:10])
    dist.mean()  # index after the grid is built: the part keeps its rows of it
    part = dist[2:5]
    fresh = reg.predict_proba(X[2:5])
    assert len(part) == 3 and list(part.index) == [2, 3, 4]
    np.testing.assert_array_equal(part.mean(), fresh.mean())
    np.testing.assert_array_equal(part.ppf(0.3), fresh.ppf(0.3))
    np.testing.assert_array_equal(dist.iloc[[4, 1]].log_pdf(y[[4, 1]]), dist.log_pdf(y[:10])[[4, 1]])
    mask = np.arange(10) % 3 == 0
    np.testing.assert_array_equal(dist[mask].var(), dist.var()[mask])
    assert len(dist[6]) == 1
    np.testing.assert_array_equal(reg.pred_dist(X[:2]).mean(), reg.predict_proba(X[:2]).mean())
    loaded = pickle.loads(pickle.dumps(dist))
    np.testing.assert_array_equal(loaded.mean(), dist.mean())


def test_several_targets():
    X, Y = _data(200, k=2)
    reg = FlowRegressor(MAFDensity(n_transforms=1, **SMALL), n_estimators=2, n_samples=300, random_state=0)
    dist = reg.fit(X, Y).predict_proba(X[:5])
    assert dist.shape == (5, 2)
    np.testing.assert_allclose(dist.log_pdf(Y[:5]), reg.score_samples(X[:5], Y[:5]))
    assert dist.pdf(Y[:5]).shape == (5,)
    mean, var = dist.mean(), dist.var()
    assert mean.shape == var.shape == (5, 2) and np.all(var > 0)
    draws = dist.sample(300, random_state=0)  # the draws the moments come from are seeded the same way
    assert draws.shape == (5, 2, 300)
    np.testing.assert_array_equal(mean, reg.predict(X[:5]))
    np.testing.assert_array_equal(mean, dist.sample(300).mean(axis=2))
    for method, args in [("cdf", (0.0,)), ("ppf", (0.5,)), ("crps", (Y[:5],))]:
        with pytest.raises(ValueError, match="single target"):
            getattr(dist, method)(*args)


def test_narrow_conditionals_are_resolved_by_finer_grids(monkeypatch):
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(400, 1))
    y = 3 * X[:, 0] + 0.05 * rng.normal(size=400)  # the conditional spread is 1 % of the marginal one
    reg = FlowRegressor(MAFDensity(n_transforms=1, **SMALL), n_estimators=1, random_state=0).fit(X, y)
    with monkeypatch.context() as patch:  # the first grid alone misses the mass, and says so
        patch.setattr(quadrature, "N_LEVELS", 1)
        patch.setattr(quadrature, "N_MOVES", 0)
        with pytest.warns(UserWarning, match="instead of 1"):
            reg.predict_proba(X[:3]).mean()
    dist = reg.predict_proba(X[:3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean, var = dist.mean(), dist.var()
    assert np.all(np.abs(dist._grid.mass - 1) < 1e-2)
    for i in range(3):
        t, _, F = _dense(reg, X[i])
        q = dist[i].ppf(np.array([[0.05, 0.25, 0.5, 0.75, 0.95]]))[0]
        np.testing.assert_allclose(np.interp(q, t, F), [0.05, 0.25, 0.5, 0.75, 0.95], atol=2e-3)
        ref_mean, ref_var = _moments_by_quadrature(reg, X[i])
        assert mean[i] == pytest.approx(ref_mean, abs=0.01 * np.sqrt(ref_var))
        # the variance is mostly the densities' wide Gaussian of weight 0.001 (std(y | x) is 0.05), which
        # lies on the coarse nodes: a looser tolerance
        assert var[i] == pytest.approx(ref_var, rel=0.15)


# ----------------------------------------------------------------- scores
def _crps_by_brute_force(reg, x, y):
    """``int (F - 1{t >= y})^2 dt`` with F the cumulative trapezoid of the exact density on a fine grid."""
    t, _, F = _dense(reg, x)
    return np.trapezoid((F - (t >= y)) ** 2, t)


def test_crps_equals_a_brute_force_reference(fitted):
    reg, X, y = fitted
    observed = y[:4] + np.array([0.0, 1.5, -2.0, 50.0])  # the last beyond the grid: CRPS grows linearly
    reference = [_crps_by_brute_force(reg, X[i], observed[i]) for i in range(4)]
    np.testing.assert_allclose(reg.predict_proba(X[:4]).crps(observed), reference, rtol=2e-3)
    assert crps(reg, X[:4], observed) == pytest.approx(-np.mean(reference), rel=2e-3)
    # the energy form E|Y - y| - E|Y - Y'| / 2, from the flows' own draws
    draws = reg.sample_y(X[:1], 4000, random_state=0)[0]
    energy = np.mean(np.abs(draws - observed[0])) - np.mean(np.abs(draws[:2000] - draws[2000:])) / 2
    assert reference[0] == pytest.approx(energy, abs=0.02)


def test_interval_score_of_the_central_90_percent_interval(fitted):
    reg, X, y = fitted
    lower, upper = reg.predict_interval(X, coverage=0.9).T
    reference = (upper - lower) + 20 * np.maximum(lower - y, 0) + 20 * np.maximum(y - upper, 0)
    assert interval_score(reg, X, y) == pytest.approx(-np.mean(reference))
    assert interval_score(reg, X, y) < -np.mean(upper - lower)  # some rows miss their interval
    assert interval_score(reg, X, y, coverage=0.5) != interval_score(reg, X, y)
    for coverage in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="coverage"):
            interval_score(reg, X, y, coverage=coverage)


def test_grid_search_with_the_new_scorers():
    X, y = _data(200)
    pipe = make_pipeline(StandardScaler(), FlowRegressor(MAFDensity(**SMALL), n_estimators=1, random_state=0))
    grid = {"flowregressor__estimator__n_transforms": [1, 2]}
    for scorer in (crps, interval_score):
        search = GridSearchCV(pipe, grid, cv=2, scoring=scorer).fit(X, y)
        assert np.isfinite(search.cv_results_["mean_test_score"]).all()
        assert np.all(search.cv_results_["mean_test_score"] < 0)
        best = search.best_estimator_
        assert scorer(best, X, y) == pytest.approx(scorer(best[-1], best[0].transform(X), y))
    multi = {"crps": crps, "interval": interval_score}
    search = GridSearchCV(pipe, grid, cv=2, scoring=multi, refit="crps").fit(X, y)
    assert set(search.cv_results_) >= {"mean_test_crps", "mean_test_interval"}


# ----------------------------------------------------------------- mixed X, sample weights
def _mixed(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=n)
    group = rng.choice(["low", "mid", "high"], size=n)
    shift = pd.Series(group).map({"low": -2.0, "mid": 0.0, "high": 2.0}).to_numpy()
    frame = pd.DataFrame({"x": x, "group": group, "flag": pd.Categorical(rng.choice(["a", "b"], size=n))})
    return frame, x + shift + 0.3 * rng.normal(size=n)


def test_mixed_dataframe_X():
    frame, y = _mixed()
    reg = FlowRegressor(MAFDensity(n_transforms=1, **SMALL), n_estimators=2, random_state=0).fit(frame, y)
    assert list(reg.feature_names_in_) == ["x", "group", "flag"] and reg.n_features_in_ == 3
    assert reg.estimator_.context_encoder_ is not None  # the members one-hot encode the strings
    test, y_test = _mixed(60, seed=1)
    predicted = reg.predict(test)
    assert predicted.shape == (60,) and np.corrcoef(predicted, y_test)[0, 1] > 0.9  # the groups are used
    assert reg.predict(test.iloc[5:6])[0] == predicted[5]
    assert np.all(np.isfinite(reg.score_samples(test, y_test)))
    assert reg.predict_interval(test).shape == (60, 2)
    assert list(reg.predict_proba(test.set_index(test.index + 100)).index[:2]) == [100, 101]
    unseen = test.iloc[:2].assign(group=["other", "low"])
    assert np.all(np.isfinite(reg.predict(unseen)))
    with pytest.raises(ValueError, match="feature"):
        reg.predict(test[["x", "group"]])
    with pytest.raises(ValueError):
        reg.predict(test.rename(columns={"x": "z"}))
    with pytest.raises(ValueError, match="NaN"):
        FlowRegressor(MAFDensity(**SMALL), n_estimators=1).fit(frame, np.where(y > 2, np.nan, y))
    # a missing category in X: all-zero indicators, as an unseen one
    gaps = frame.assign(group=frame.group.where(y < 2))
    assert np.all(np.isfinite(FlowRegressor(MAFDensity(**SMALL), n_estimators=1).fit(gaps, y).predict(gaps)))


def test_sample_weight_reaches_every_member():
    X, y = _data(200)
    weights = np.random.default_rng(0).uniform(0.2, 3, size=len(y))
    density = MAFDensity(n_transforms=1, **SMALL)
    weighted = FlowRegressor(density, n_estimators=1).fit(X, y, sample_weight=weights)
    direct = clone(density).fit(y[:, None], context=X, sample_weight=weights)
    np.testing.assert_array_equal(weighted.score_samples(X, y), direct.score_samples(y[:, None], context=X))
    plain = FlowRegressor(density, n_estimators=1).fit(X, y)
    assert not np.allclose(weighted.score_samples(X, y), plain.score_samples(X, y))
    ones = FlowRegressor(density, n_estimators=1).fit(X, y, sample_weight=np.ones(len(y)))
    np.testing.assert_array_equal(ones.score_samples(X, y), plain.score_samples(X, y))
    # stacked members get the weights too
    stacked = FlowRegressor(density, n_estimators=3, random_state=0)
    a, b = clone(stacked).fit(X, y, sample_weight=weights), clone(stacked).fit(X, y)
    assert not np.allclose(a.score_samples(X, y), b.score_samples(X, y))
