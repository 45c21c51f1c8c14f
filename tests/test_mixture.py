"""FlowMixture: a mixture of seeded flows (stacked with classical densities) is an exact density with the
estimator contract."""

import pickle

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skflow import FlowMixture, FlowOutlierDetector, MAFDensity, NSFDensity
from skflow.estimators.stacking import reference_log_density, stacking_weights, training_noise

SMALL = {"n_transforms": 1, "hidden_features": (8,), "max_epochs": 10}


def _bimodal(n=200, d=2, seed=0):
    rng = np.random.default_rng(seed)
    centre = np.where(rng.random((n, 1)) < 0.5, -2.0, 2.0)
    return centre + 0.5 * rng.normal(size=(n, d))


@pytest.fixture(scope="module")
def mixture():
    X = _bimodal()
    return FlowMixture(MAFDensity(**SMALL), n_estimators=3, stack=None, random_state=0).fit(X), X


@pytest.fixture(scope="module")
def stacked():
    X = _bimodal(n=240)
    return FlowMixture(MAFDensity(**SMALL), n_estimators=3, random_state=0).fit(X), X


def test_log_density_is_the_logsumexp_of_the_members(mixture):
    model, X = mixture
    members = np.array([member.score_samples(X) for member in model.estimators_])
    np.testing.assert_allclose(model.score_samples(X), logsumexp(members, axis=0) - np.log(3), rtol=1e-12)
    assert model.score(X) == pytest.approx(np.mean(model.score_samples(X)))
    # the members differ (own seeds)
    assert not np.allclose(members[0], members[1])
    assert model.n_features_in_ == 2 and model.estimator_ is model.estimators_[0]


def test_one_dimensional_mixture_integrates_to_one():
    X = _bimodal(d=1)
    model = FlowMixture(NSFDensity(**SMALL), n_estimators=2, stack=None, random_state=0).fit(X)
    density = lambda t: float(np.exp(model.score_samples(np.array([[t]])))[0])  # noqa: E731
    total = sum(quad(density, a, b, limit=200)[0] for a, b in [(-30, -2), (-2, 2), (2, 30)])
    assert total == pytest.approx(1.0, abs=2e-3)


def test_reproducible_and_picklable(mixture):
    model, X = mixture
    again = clone(model).fit(X)
    np.testing.assert_array_equal(model.score_samples(X), again.score_samples(X))
    np.testing.assert_array_equal(model.sample(20, random_state=1), again.sample(20, random_state=1))
    assert not np.array_equal(model.sample(20, random_state=1), model.sample(20, random_state=2))
    loaded = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(loaded.score_samples(X), model.score_samples(X))


def test_samples_come_from_every_member_in_drawn_order(mixture):
    model, X = mixture
    draws = model.sample(600, random_state=0)
    assert draws.shape == (600, 2) and np.all(np.isfinite(draws))
    # replay the draw: the copy picked for each row, then each copy's own draws with the same stream
    rng = np.random.RandomState(0)
    member = rng.randint(3, size=600)
    assert len(np.unique(member)) == 3
    for k, density in enumerate(model.estimators_):
        rows = np.flatnonzero(member == k)
        np.testing.assert_array_equal(draws[rows], density.sample(rows.size, random_state=rng))
    # the sample follows the data: both modes, about half each
    assert 0.35 < np.mean(draws[:, 0] > 0) < 0.65


def test_mixed_table_in_and_dataframe_out():
    rng = np.random.default_rng(0)
    n = 150
    colour = rng.choice(["red", "blue"], n)
    df = pd.DataFrame(
        {
            "colour": colour,
            "flag": rng.random(n) < 0.3,
            "value": np.where(colour == "red", 1.0, -1.0) + rng.normal(size=n),
            "count": rng.poisson(3, n),
        }
    )
    model = FlowMixture(MAFDensity(**SMALL), n_estimators=2, random_state=0).fit(df)
    assert list(model.feature_names_in_) == list(df.columns)
    assert np.all(np.isfinite(model.score_samples(df)))
    draws = model.sample(40, random_state=0)
    assert isinstance(draws, pd.DataFrame) and list(draws.columns) == list(df.columns)
    assert list(draws.dtypes) == list(df.dtypes) and set(draws["colour"]) <= {"red", "blue"}
    detector = FlowOutlierDetector(FlowMixture(MAFDensity(**SMALL), n_estimators=2), random_state=0).fit(df)
    assert detector.predict(df).shape == (n,)


def test_class_labels_pass_through():
    X = _bimodal()
    y = (X[:, 0] > 0).astype(int)
    density = MAFDensity(n_transforms=1, hidden_features=(8,), base="normal", lr=1e-2, max_epochs=60)
    model = FlowMixture(density, n_estimators=2, random_state=0).fit(X, y)
    labels = np.arange(100) % 2
    draws = model.sample(100, random_state=0, y=labels)
    rng = np.random.RandomState(0)  # replay: each copy draws its rows with their labels
    member = rng.randint(2, size=100)
    for k, density in enumerate(model.estimators_):
        rows = np.flatnonzero(member == k)
        np.testing.assert_array_equal(
            draws[rows], density.sample(rows.size, random_state=rng, y=labels[rows])
        )
    ones = model.sample(300, random_state=1, y=1)
    zeros = model.sample(300, random_state=1, y=0)
    assert ones[:, 0].mean() > 1 > -1 > zeros[:, 0].mean()  # class 1 is the right-hand mode (+2)
    with pytest.raises(ValueError, match="labels"):
        model.sample(5, y=[1, 0])


def test_grid_search_in_a_pipeline():
    X = _bimodal(120)
    search = GridSearchCV(
        make_pipeline(StandardScaler(), FlowMixture(MAFDensity(**SMALL), random_state=0)),
        {"flowmixture__n_estimators": [1, 2], "flowmixture__estimator__hidden_features": [(4,)]},
        cv=2,
    ).fit(X)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()  # every candidate fitted and scored
    refit = clone(search.estimator).set_params(**search.best_params_).fit(X)
    np.testing.assert_allclose(search.score_samples(X), refit.score_samples(X), rtol=1e-6)


def test_errors():
    X = _bimodal(50)
    with pytest.raises(NotFittedError):
        FlowMixture().score_samples(X)
    with pytest.raises(ValueError, match="n_estimators"):
        FlowMixture(MAFDensity(**SMALL), n_estimators=0).fit(X)
    with pytest.raises(ValueError, match="estimator"):
        FlowMixture("MAF").fit(X)
    bad = X.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        FlowMixture(MAFDensity(**SMALL), n_estimators=2).fit(bad)
    fitted = FlowMixture(MAFDensity(**SMALL), n_estimators=2, random_state=0).fit(X)
    with pytest.raises(ValueError, match="features"):
        fitted.score_samples(X[:, :1])
    with pytest.raises(ValueError, match="n_samples"):
        fitted.sample(0)


# --- stacking with classical densities (Smyth and Wolpert) --------------------------------------------


def test_stacking_weights_recover_a_known_mixture():
    rng = np.random.default_rng(0)
    # rows drawn from 0.7 N(0, 1) + 0.3 N(3, 1); the components' log-densities are known exactly
    x = np.where(rng.random(20000) < 0.7, rng.normal(0, 1, 20000), rng.normal(3, 1, 20000))
    L = np.column_stack([-0.5 * x**2, -0.5 * (x - 3) ** 2]) - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(stacking_weights(L), [0.7, 0.3], atol=0.01)
    np.testing.assert_allclose(stacking_weights(L, prior_rows=0), [0.7, 0.3], atol=0.01)
    # a useless component gets only its prior's share: one pseudo-row among n + 3
    L3 = np.column_stack([L, np.full(len(x), -30.0)])
    assert stacking_weights(L3)[2] == pytest.approx(1 / (len(x) + 3), rel=1e-3)
    assert stacking_weights(L3, prior_rows=0)[2] < 1e-6
    # with a handful of rows the prior keeps the weights away from 0 and 1
    assert np.all(stacking_weights(L3[:5]) > 0.05)


def test_stacked_log_density_is_the_weighted_logsumexp_of_its_components(stacked):
    model, X = stacked
    assert [type(r).__name__ for r in model.stacked_] == ["GaussianMixture", "KernelDensity"]
    assert model.weights_.shape == (5,) and model.weights_.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(model.weights_[:3], model.weights_[0])  # the copies share the flows' weight
    scaler = model.estimator_.standardizer_
    Z = scaler.transform(X)
    parts = [m.score_samples(X) for m in model.estimators_]
    # each stacked density carries the flows' tail guard: 0.999 of it and 0.001 of N(0, 3^2 I)
    wide = multivariate_normal(np.zeros(2), 9 * np.eye(2)).logpdf(Z)
    parts += [np.logaddexp(np.log(0.999) + r.score_samples(Z), np.log(0.001) + wide) + scaler.log_det_
              for r in model.stacked_]
    expected = logsumexp(np.array(parts) + np.log(model.weights_)[:, None], axis=0)
    np.testing.assert_allclose(model.score_samples(X), expected, rtol=1e-10)


def test_stacked_weights_come_from_held_out_rows(stacked):
    model, X = stacked
    scaler = model.estimator_.standardizer_
    Z = scaler.transform(X)
    held_out = []
    for member in model.estimators_:
        valid = member._member_plan(member.random_state, len(X))[3]
        train = np.setdiff1d(np.arange(len(X)), valid)
        # no training noise here: every column is continuous, without a point mass
        columns = [member.score_samples(X[valid]) - scaler.log_det_]
        columns += [reference_log_density(clone(r).fit(Z[train]), Z[valid], 0.001) for r in model.stacked_]
        held_out.append(np.column_stack(columns))
    weights = stacking_weights(np.concatenate(held_out))
    np.testing.assert_allclose(model.weights_[3:], weights[1:], rtol=1e-6)
    np.testing.assert_allclose(model.weights_[:3].sum(), weights[0], rtol=1e-6)


@pytest.mark.parametrize("d", [1, 2])
def test_stacked_mixture_integrates_to_one(d):
    X = _bimodal(n=150, d=d, seed=3)
    model = FlowMixture(NSFDensity(**SMALL), n_estimators=2, random_state=0).fit(X)
    assert model.stacked_ and np.all(model.weights_ > 0)
    if d == 1:
        density = lambda t: float(np.exp(model.score_samples(np.array([[t]])))[0])  # noqa: E731
        total = sum(quad(density, a, b, limit=200)[0] for a, b in [(-30, -2), (-2, 2), (2, 30)])
        assert total == pytest.approx(1.0, abs=2e-3)
    else:
        grid = np.linspace(-12, 12, 481)
        xx, yy = np.meshgrid(grid, grid)
        p = np.exp(model.score_samples(np.c_[xx.ravel(), yy.ravel()]))
        assert p.sum() * (grid[1] - grid[0]) ** 2 == pytest.approx(1.0, abs=1e-2)


def test_stacked_samples_follow_the_weights_and_are_reproducible(stacked):
    model, X = stacked
    draws = model.sample(4000, random_state=0)
    assert draws.shape == (4000, 2) and np.all(np.isfinite(draws))
    np.testing.assert_array_equal(draws, model.sample(4000, random_state=0))
    assert 0.4 < np.mean(draws[:, 0] > 0) < 0.6
    np.testing.assert_allclose(draws.mean(axis=0), X.mean(axis=0), atol=0.25)
    # replay: the component picked per row has the stacked densities' probabilities
    picked = np.random.RandomState(0).choice(5, size=4000, p=model.weights_)
    assert np.bincount(picked, minlength=5)[3:].sum() > 0
    # the Gaussian mixture's draws (which it returns sorted by component) come back shuffled
    gmm = model.stacked_[0]
    rows = np.flatnonzero(picked == 3)
    assert len(rows) > 100 and gmm.n_components > 1
    half = len(rows) // 2
    assert abs(np.mean(draws[rows[:half], 0] > 0) - np.mean(draws[rows[half:], 0] > 0)) < 0.2


def test_stacked_fit_is_reproducible_picklable_and_takes_dataframes(stacked):
    model, X = stacked
    again = clone(model).fit(pd.DataFrame(X, columns=["a", "b"]))
    np.testing.assert_allclose(again.weights_, model.weights_, rtol=1e-9)
    frame = pd.DataFrame(X[:5], columns=["a", "b"])
    np.testing.assert_allclose(again.score_samples(frame), model.score_samples(X[:5]), rtol=1e-9)
    out = again.sample(7, random_state=0)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == ["a", "b"]
    loaded = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(loaded.score_samples(X), model.score_samples(X))


def test_stacked_marginal_of_a_missing_cell_matches_the_integral(stacked):
    model, X = stacked
    row = np.array([[np.nan, 2.0]])
    density = lambda t: float(np.exp(model.score_samples(np.array([[t, 2.0]])))[0])  # noqa: E731
    exact = np.log(sum(quad(density, a, b, limit=200)[0] for a, b in [(-30, -2), (-2, 2), (2, 30)]))
    assert model.score_samples(row)[0] == pytest.approx(exact, abs=0.05)


def test_auto_stacks_only_where_it_can_and_an_explicit_stack_says_why():
    X = _bimodal(n=120)
    small = MAFDensity(**SMALL)
    assert FlowMixture(small, n_estimators=2, stack=None, random_state=0).fit(X).stacked_ == []
    assert FlowMixture(small, n_estimators=2, random_state=0).fit(X[:20]).stacked_ == []  # too few rows
    labels = (X[:, 0] > 0).astype(int)
    assert FlowMixture(small, n_estimators=2, random_state=0).fit(X, labels).stacked_ == []
    holes = X.copy()
    holes[::7, 1] = np.nan
    assert FlowMixture(small, n_estimators=2, random_state=0).fit(holes).stacked_ == []
    weights = np.r_[np.ones(60), np.full(len(X) - 60, 2.0)]
    assert FlowMixture(small, n_estimators=2, random_state=0).fit(X, sample_weight=weights).stacked_ == []
    explicit = FlowMixture(small, n_estimators=2, stack=[GaussianMixture(2)], random_state=0)
    assert len(explicit.fit(X[:20]).stacked_) == 1  # an explicit list has no size limit
    with pytest.raises(ValueError, match="missing cells"):
        explicit.fit(holes)
    with pytest.raises(ValueError, match="class labels"):
        explicit.fit(X, labels)
    with pytest.raises(TypeError, match="fit and score_samples"):
        FlowMixture(small, n_estimators=2, stack=[StandardScaler()], random_state=0).fit(X)
    with pytest.raises(ValueError, match="class labels"):
        FlowMixture(small, n_estimators=2, random_state=0).fit(X).sample(3, return_y=True)
    with pytest.raises(ValueError, match="stack"):
        FlowMixture(small, stack="gmm").fit(X)


def test_stacked_densities_see_the_flows_training_noise():
    rng = np.random.default_rng(0)
    # a continuous column clipped at 0 (a point mass of 40%) beside a continuous one
    x = rng.normal(size=(300, 2))
    x[:, 0] = np.maximum(x[:, 0], -0.25)
    x[:, 0] = np.where(x[:, 0] == -0.25, 0.0, x[:, 0] + 0.25)
    density = MAFDensity(n_transforms=1, hidden_features=(16,), max_epochs=40, point_mass_noise=0.3)
    model = FlowMixture(density, n_estimators=2, random_state=0).fit(x)
    assert model.estimator_.standardizer_.point_mass_[0]
    # smoothed like the flows, no stacked density is a spike at the point mass: a step of 0.02
    # off it costs little
    at, beside = model.score_samples(np.array([[0.0, 0.0], [0.02, 0.0]]))
    assert at - beside < 0.5
    # the noise itself: U(-w/2, w/2) on integer-valued columns, N(0, s^2) on point-mass ones
    counts = np.c_[rng.integers(0, 50, size=300), x[:, 0]]  # no integer holds 10% of the rows
    member = MAFDensity(**SMALL, point_mass_noise=0.3).fit(counts)
    Z = member.standardizer_.transform(counts)
    noise = training_noise(member, Z, np.random.default_rng(1)) - Z
    width = member.standardizer_.noise_width[0]
    assert width > 0 and np.abs(noise[:, 0]).max() <= width / 2
    assert np.std(noise[:, 0]) == pytest.approx(width / np.sqrt(12), rel=0.15)
    assert np.std(noise[:, 1]) == pytest.approx(0.3, rel=0.15)


def test_stacking_tunes_on_shuffled_folds():
    # rows sorted by class: unshuffled 3-fold CV would hold out one class per fold
    from sklearn.datasets import load_iris

    X = load_iris().data
    model = FlowMixture(MAFDensity(**SMALL), n_estimators=2, random_state=0).fit(X)
    assert model.stacked_[0].n_components > 1  # unshuffled folds pick a single Gaussian here


def test_stacking_is_refused_for_discrete_levels():
    from skflow import TarFlowDensity

    X = np.random.default_rng(0).integers(0, 17, size=(120, 4))
    tarflow = TarFlowDensity(n_bins=17, n_blocks=1, n_layers=1, channels=4, n_heads=2, max_epochs=2)
    assert FlowMixture(tarflow, n_estimators=2, random_state=0).fit(X).stacked_ == []
    with pytest.raises(ValueError, match="discrete levels"):
        FlowMixture(tarflow, n_estimators=2, stack=[GaussianMixture()], random_state=0).fit(X)
