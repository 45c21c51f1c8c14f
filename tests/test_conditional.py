"""FlowRegressor: conditional densities p(y | x) as scikit-learn regressors."""

import pickle

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad
from scipy.special import logsumexp
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from skflow import (
    FlowRegressor,
    MADEDensity,
    MAFDensity,
    NSFDensity,
    RealNVPDensity,
    conditional_log_likelihood,
)

SMALL = dict(hidden_features=(16,), max_epochs=100, random_state=0)


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
    return FlowRegressor(MAFDensity(n_transforms=2, **SMALL), random_state=0).fit(X, y), X, y


def test_shapes_and_dtypes(fitted):
    reg, X, y = fitted
    scores = reg.score_samples(X[:5], y[:5])
    assert scores.shape == (5,) and scores.dtype == np.float64
    assert reg.predict(X[:5]).shape == (5,)
    assert reg.predict_quantiles(X[:5], [0.1, 0.5, 0.9]).shape == (5, 3)
    assert reg.predict_interval(X[:5]).shape == (5, 2)
    assert reg.sample_y(X[:5], 7, random_state=0).shape == (5, 7)


def test_conditional_density_integrates_to_one_in_1d(fitted):
    reg, X, _ = fitted
    for x in X[:3]:
        mass = quad(lambda v: np.exp(reg.score_samples(x[None], [v])[0]), -30, 30, limit=200)[0]
        assert mass == pytest.approx(1.0, abs=3e-3)


def test_conditional_density_integrates_to_one_in_2d():
    X, Y = _data(k=2)
    reg = FlowRegressor(NSFDensity(n_transforms=1, **SMALL), random_state=0).fit(X, Y)
    grid = np.linspace(-8, 10, 181)
    a, b = np.meshgrid(grid, grid, indexing="ij")
    points = np.column_stack([a.ravel(), b.ravel()])
    density = np.exp(reg.score_samples(np.repeat(X[:1], len(points), axis=0), points)).reshape(a.shape)
    assert np.trapezoid(np.trapezoid(density, grid, axis=1), grid) == pytest.approx(1.0, abs=1e-2)
    assert reg.predict(X[:4]).shape == (4, 2)
    assert reg.sample_y(X[:3], 5, random_state=0).shape == (3, 2, 5)


@pytest.mark.parametrize("k", [1, 2])
def test_change_of_units_shifts_by_log_c(k):
    X, Y = _data(k=k)
    c = 1000.0
    a = FlowRegressor(MAFDensity(n_transforms=1, **SMALL), random_state=0).fit(X, Y)
    b = FlowRegressor(MAFDensity(n_transforms=1, **SMALL), random_state=0).fit(X, c * Y)
    np.testing.assert_allclose(b.score_samples(X, c * Y), a.score_samples(X, Y) - k * np.log(c), atol=1e-4)


def test_mean_quantiles_and_intervals_are_consistent(fitted):
    reg, X, y = fitted
    X_test, y_test = _data(400, seed=1)
    quantiles = reg.predict_quantiles(X_test, [0.05, 0.25, 0.5, 0.75, 0.95])
    assert np.all(np.diff(quantiles, axis=1) > 0)
    interval = reg.predict_interval(X_test, coverage=0.9)
    np.testing.assert_allclose(interval, quantiles[:, [0, 4]])
    covered = np.mean((y_test >= interval[:, 0]) & (y_test <= interval[:, 1]))
    assert 0.8 < covered < 0.97
    # heteroscedastic: intervals widen with |x|
    width = interval[:, 1] - interval[:, 0]
    assert np.corrcoef(np.abs(X_test[:, 0]), width)[0, 1] > 0.5
    # the mean of the draws agrees with the mean of the density integrated on a grid
    grid = np.linspace(-15, 20, 3501)
    for x in X_test[:3]:
        density = np.exp(reg.score_samples(np.repeat(x[None], len(grid), axis=0), grid))
        assert reg.predict(x[None])[0] == pytest.approx(np.trapezoid(grid * density, grid), abs=0.08)
    # one row's prediction does not depend on the rows passed with it
    assert reg.predict(X_test[3:4])[0] == reg.predict(X_test[:6])[3]
    assert reg.score(X_test, y_test) > 0.6  # R^2 of the conditional mean


@pytest.mark.parametrize(
    "density",
    [MADEDensity(**SMALL), NSFDensity(n_transforms=1, **SMALL), RealNVPDensity(n_transforms=2, **SMALL)],
)
def test_any_tabular_flow_serves(density):
    X, y = _data(200)
    reg = FlowRegressor(density, random_state=0).fit(X, y)
    assert np.all(np.isfinite(reg.score_samples(X, y)))


def test_integer_targets_are_dequantized():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 1))
    y = rng.poisson(np.exp(1 + 0.5 * X[:, 0]))
    reg = FlowRegressor(MAFDensity(n_transforms=1, **SMALL), random_state=0).fit(X, y)
    assert reg.estimator_.standardizer_.integer_.all()
    assert np.issubdtype(reg.sample_y(X[:3], 4, random_state=0).dtype, np.floating)
    # the mass of the integers near x = 0 sums to about one (densities at integer cells of width 1)
    mass = np.exp(reg.score_samples(np.zeros((40, 1)), np.arange(40))).sum()
    assert mass == pytest.approx(1.0, abs=0.05)


def test_reproducible_and_picklable(fitted):
    reg, X, y = fitted
    again = FlowRegressor(MAFDensity(n_transforms=2, **SMALL), random_state=0).fit(X, y)
    np.testing.assert_array_equal(reg.score_samples(X, y), again.score_samples(X, y))
    np.testing.assert_array_equal(
        reg.sample_y(X[:3], 3, random_state=1), again.sample_y(X[:3], 3, random_state=1)
    )
    loaded = pickle.loads(pickle.dumps(reg))
    np.testing.assert_array_equal(loaded.predict(X[:4]), reg.predict(X[:4]))


def test_pandas_in_and_errors(fitted):
    reg, X, y = fitted
    frame = pd.DataFrame(X, columns=["a", "b"])
    named = FlowRegressor(MAFDensity(n_transforms=1, **SMALL)).fit(frame, pd.Series(y, name="target"))
    assert list(named.feature_names_in_) == ["a", "b"]
    assert named.predict(frame.iloc[:3]).shape == (3,)
    with pytest.raises(NotFittedError):
        FlowRegressor().predict(X)
    with pytest.raises(ValueError, match="NaN"):  # missing cells of X are allowed (test_missing.py), of y not
        FlowRegressor(MAFDensity(**SMALL)).fit(X, np.where(y > 1.9, np.nan, y))
    with pytest.raises(ValueError):
        FlowRegressor(MAFDensity(**SMALL)).fit(X, np.array(["a"] * len(y)))
    with pytest.raises(ValueError, match="features"):
        reg.predict(X[:, :1])
    with pytest.raises(ValueError, match="columns"):
        reg.score_samples(X[:3], np.ones((3, 2)))
    with pytest.raises(ValueError, match="between 0 and 1"):
        reg.predict_quantiles(X[:3], [0.5, 1.5])
    with pytest.raises(ValueError, match="between 0 and 1"):
        reg.predict_interval(X[:3], coverage=1.0)


def test_grid_search_selects_by_conditional_log_likelihood():
    X, y = _data(200)
    pipe = make_pipeline(StandardScaler(), FlowRegressor(MAFDensity(**SMALL), random_state=0))
    grid = {"flowregressor__estimator__n_transforms": [1, 2]}
    search = GridSearchCV(pipe, grid, cv=2, scoring=conditional_log_likelihood).fit(X, y)
    best = search.best_estimator_
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()  # our scorer, finite for every candidate
    assert conditional_log_likelihood(best, X, y) == pytest.approx(
        np.mean(best[-1].score_samples(best[0].transform(X), y))
    )


def _expected_failures(estimator):
    """Checks a conditional density with a predictive distribution cannot pass, with the reason."""
    needs_y = "score_samples(X, y) is log p(y | x) and needs y; the check calls score_samples(X)"
    distribution = (
        "the check compares predict_proba's outputs as arrays; predict_proba returns the predictive "
        "distribution (a FlowDistribution, skpro's convention), and predict, which it also compares, passes"
    )
    return {
        "check_methods_sample_order_invariance": needs_y,
        "check_methods_subset_invariance": needs_y,
        "check_regressors_no_decision_function": (
            "predict_proba is there on purpose: it returns the predictive distribution, as skpro's "
            "probabilistic regressors do (and NGBoost's pred_dist)"
        ),
        "check_estimators_pickle": distribution,
        "check_estimators_pickle(readonly_memmap=True)": distribution,
        "check_fit_idempotent": distribution,
        "check_sample_weight_equivalence_on_dense_data": (
            "a weight of 2 is not the row repeated for a flow trained by minibatches with early stopping: "
            "the repeated rows change the validation split, the batches and the epoch length"
        ),
    }


@parametrize_with_checks(
    [
        FlowRegressor(
            MAFDensity(n_transforms=2, hidden_features=(32,), max_epochs=100), n_estimators=1, random_state=0
        ),
        FlowRegressor(
            MAFDensity(n_transforms=1, hidden_features=(32,), max_epochs=100), n_estimators=2, random_state=0
        ),
    ],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# ----------------------------------------------------------------- mixtures of flows (n_estimators)
@pytest.fixture(scope="module")
def mixture():
    X, y = _data(200)
    density = MAFDensity(n_transforms=1, hidden_features=(16,), max_epochs=30)
    return FlowRegressor(density, n_estimators=3, random_state=0).fit(X, y), X, y


def test_mixture_log_density_is_the_logsumexp_of_its_members(mixture):
    reg, X, y = mixture
    assert len(reg.estimators_) == 3 and reg.estimator_ is reg.estimators_[0]
    members = np.array([d.score_samples(y[:20, None], context=X[:20]) for d in reg.estimators_])
    assert not np.allclose(members[0], members[1])  # the members differ (seeds, validation splits)
    np.testing.assert_allclose(
        reg.score_samples(X[:20], y[:20]), logsumexp(members, axis=0) - np.log(3), rtol=1e-12
    )


def test_mixture_integrates_to_one_and_samples_every_member(mixture):
    reg, X, _ = mixture
    mass = quad(lambda v: np.exp(reg.score_samples(X[:1], [v])[0]), -30, 30, limit=200)[0]
    assert mass == pytest.approx(1.0, abs=3e-3)
    draws = reg.sample_y(X[:2], 4000, random_state=0)
    assert draws.shape == (2, 4000)
    # the draws follow the mixture: their mean agrees with the mean of the mixture's density
    grid = np.linspace(-15, 20, 3501)
    density = np.exp(reg.score_samples(np.repeat(X[:1], len(grid), axis=0), grid))
    assert draws[0].mean() == pytest.approx(np.trapezoid(grid * density, grid), abs=0.05)
    interval = reg.predict_interval(X[:3])
    assert interval.shape == (3, 2) and np.all(interval[:, 0] < interval[:, 1])


def test_members_are_public_conditional_densities(mixture):
    """Each member is a density of y fitted with x as its context: the regressor adds nothing hidden."""
    reg, X, y = mixture
    member = reg.estimators_[1]
    assert member.n_context_features_ == X.shape[1]
    np.testing.assert_allclose(member.context_scaler_.mean_, X.mean(axis=0))
    single = FlowRegressor(clone(member), n_estimators=1).fit(X, y)  # keeps the member's random_state
    refit = clone(member).fit(y[:, None], context=X)  # the same density through the public path
    np.testing.assert_array_equal(single.score_samples(X, y), refit.score_samples(y[:, None], context=X))


def test_mixture_reproducible_and_picklable(mixture):
    reg, X, y = mixture
    again = clone(reg).fit(X, y)
    np.testing.assert_array_equal(reg.score_samples(X, y), again.score_samples(X, y))
    np.testing.assert_array_equal(
        reg.sample_y(X[:3], 5, random_state=1), again.sample_y(X[:3], 5, random_state=1)
    )
    np.testing.assert_array_equal(reg.predict(X[:4]), again.predict(X[:4]))
    loaded = pickle.loads(pickle.dumps(reg))
    np.testing.assert_array_equal(loaded.score_samples(X, y), reg.score_samples(X, y))
    np.testing.assert_array_equal(loaded.predict_interval(X[:4]), reg.predict_interval(X[:4]))


def test_mixture_members_differ_without_random_state():
    X, y = _data(100)
    density = MAFDensity(n_transforms=1, hidden_features=(8,), max_epochs=3, random_state=0)
    reg = FlowRegressor(density, n_estimators=2).fit(X, y)  # seeds drawn from the estimator's random_state
    a, b = (d.score_samples(y[:, None], context=X) for d in reg.estimators_)
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(reg.score_samples(X, y), clone(reg).fit(X, y).score_samples(X, y))


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3"])
def test_bad_n_estimators_is_refused(bad):
    X, y = _data(50)
    with pytest.raises(ValueError, match="n_estimators"):
        FlowRegressor(MAFDensity(**SMALL), n_estimators=bad).fit(X, y)


# ----------------------------------------------------------------- shortest intervals
def test_shortest_interval_holds_the_coverage_and_is_no_wider_than_the_central_one():
    X, y = _data(200)
    reg = FlowRegressor(MAFDensity(**SMALL), n_estimators=1, random_state=0).fit(X, y)
    central = reg.predict_interval(X[:20], 0.8)
    shortest = reg.predict_interval(X[:20], 0.8, kind="shortest")
    assert np.all(shortest[:, 1] - shortest[:, 0] <= central[:, 1] - central[:, 0] + 1e-12)
    held = np.diff(reg.predict_proba(X[:20]).cdf(shortest), axis=1)[:, 0]  # the mass between the bounds
    np.testing.assert_allclose(held, 0.8, atol=1e-9)


# the learned spike at 0 drifts off the value 0 for rows beyond the training x (|x| > 2.5): those few rows
# are reported as unresolved on the grid
@pytest.mark.filterwarnings("ignore:The predictive density of:UserWarning")
def test_shortest_interval_is_narrower_and_closer_to_nominal_at_an_edge_point_mass():
    # y = 0 with probability 0.6, else exponential: the true central 90% interval [0, q95] covers 95%,
    # the true shortest one [0, q90] covers exactly 90%
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2800, 1))
    y = np.where(rng.uniform(size=2800) < 0.6, 0.0, rng.exponential(size=2800) * (1 + np.abs(X[:, 0])))
    density = NSFDensity(n_transforms=2, hidden_features=(16, 16))
    reg = FlowRegressor(density, n_estimators=1, random_state=0).fit(X[:800], y[:800])
    central = reg.predict_interval(X[800:], 0.9)
    shortest = reg.predict_interval(X[800:], 0.9, kind="shortest")
    covered = lambda interval: np.mean((interval[:, 0] <= y[800:]) & (y[800:] <= interval[:, 1]))
    assert covered(central) > 0.91
    assert abs(covered(shortest) - 0.9) < 0.04
    assert np.mean(shortest[:, 1] - shortest[:, 0]) < 0.8 * np.mean(central[:, 1] - central[:, 0])


def test_bad_interval_kind_is_refused():
    X, y = _data(50)
    reg = FlowRegressor(MAFDensity(**SMALL), n_estimators=1).fit(X, y)
    with pytest.raises(ValueError, match="kind"):
        reg.predict_interval(X, kind="widest")


def test_feature_noise_regularises_reproducibly():
    X, y = _data(150)
    density = MAFDensity(n_transforms=1, hidden_features=(8,), max_epochs=5, random_state=0)
    plain = FlowRegressor(density, n_estimators=1, random_state=0).fit(X, y)
    noisy = FlowRegressor(density, n_estimators=1, feature_noise=0.3, random_state=0).fit(X, y)
    # the noise changes the fit, is reproducible, and scores stay exact densities of the given x
    assert not np.allclose(plain.score_samples(X, y), noisy.score_samples(X, y))
    np.testing.assert_array_equal(noisy.score_samples(X, y), clone(noisy).fit(X, y).score_samples(X, y))
    grid = np.linspace(-15, 25, 4001)
    density_at = np.exp(noisy.score_samples(np.repeat(X[:1], len(grid), axis=0), grid))
    assert abs(np.trapezoid(density_at, grid) - 1) < 1e-3


@pytest.mark.parametrize("bad", [-0.1, "0.2"])
def test_bad_feature_noise_is_refused(bad):
    X, y = _data(50)
    with pytest.raises(ValueError, match="feature_noise"):
        FlowRegressor(MAFDensity(**SMALL), feature_noise=bad).fit(X, y)
