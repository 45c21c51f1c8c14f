"""FlowMixture: an equal-weight mixture of seeded flows is an exact density with the estimator contract."""

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

from skflow import FlowMixture, FlowOutlierDetector, MAFDensity, NSFDensity

SMALL = {"n_transforms": 1, "hidden_features": (8,), "max_epochs": 10}


def _bimodal(n=200, d=2, seed=0):
    rng = np.random.default_rng(seed)
    centre = np.where(rng.random((n, 1)) < 0.5, -2.0, 2.0)
    return centre + 0.5 * rng.normal(size=(n, d))


@pytest.fixture(scope="module")
def mixture():
    X = _bimodal()
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
    model = FlowMixture(NSFDensity(**SMALL), n_estimators=2, random_state=0).fit(X)
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
