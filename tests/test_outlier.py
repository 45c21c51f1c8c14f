"""Tests of FlowOutlierDetector: scikit-learn conventions and the scores it returns.

scikit-learn's estimator checks of the detector run in ``test_check_estimator.py``.
"""

import pickle

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import InvalidParameterError

import skflow.estimators.outlier
from skflow.estimators.outlier import FlowOutlierDetector
from skflow.estimators.tabular import MAFDensity, NSFDensity, RealNVPDensity


def _tiny(**params):
    """A small, fast MAF (a few epochs) for the convention tests."""
    return MAFDensity(n_transforms=2, hidden_features=(16,), max_epochs=params.pop("max_epochs", 3), **params)


def _data(n=300, seed=0):
    return np.random.RandomState(seed).normal(size=(n, 2))


def test_score_is_the_log_likelihood_of_the_seeded_member():
    X = _data()
    detector = FlowOutlierDetector(_tiny(), random_state=3).fit(X)
    seed = check_random_state(3).randint(np.iinfo(np.int32).max, size=1)[0]
    reference = _tiny(random_state=int(seed)).fit(X)
    np.testing.assert_allclose(detector.score_samples(X), reference.score_samples(X))
    assert detector.estimator_ is detector.estimators_[0]


def test_ensemble_score_is_the_mean_over_members():
    X = _data()
    detector = FlowOutlierDetector(_tiny(), n_estimators=3, random_state=0).fit(X)
    members = [member.score_samples(X) for member in detector.estimators_]
    np.testing.assert_allclose(detector.score_samples(X), np.mean(members, axis=0))
    # Members are seeded differently, so they differ.
    assert not np.allclose(members[0], members[1])
    assert len({m.random_state for m in detector.estimators_}) == 3


def test_decision_function_and_predict_follow_the_offset():
    X = _data()
    detector = FlowOutlierDetector(_tiny(), random_state=0).fit(X)
    Xt = _data(50, seed=1) * 2
    scores = detector.score_samples(Xt)
    np.testing.assert_allclose(detector.decision_function(Xt), scores - detector.offset_)
    np.testing.assert_array_equal(detector.predict(Xt), np.where(scores >= detector.offset_, 1, -1))
    np.testing.assert_array_equal(detector.fit_predict(X), detector.fit(X).predict(X))


@pytest.mark.parametrize("contamination", [0.01, 0.1, 0.25, 0.5])
def test_contamination_sets_the_fraction_flagged_in_training(contamination):
    X = _data(400)
    labels = FlowOutlierDetector(_tiny(), contamination=contamination, random_state=0).fit_predict(X)
    assert abs(np.mean(labels == -1) - contamination) <= 1.0 / len(X)


def test_auto_threshold_is_tukeys_lower_fence():
    X = _data(400)
    detector = FlowOutlierDetector(_tiny(max_epochs=20), random_state=0).fit(X)
    scores = detector.score_samples(X)
    q1, q3 = np.percentile(scores, [25, 75])
    assert detector.offset_ == pytest.approx(q1 - 1.5 * (q3 - q1))
    # For a Gaussian cloud the fence flags a few percent of the training rows,
    # and points far from the cloud are flagged.
    assert 0.0 < np.mean(detector.predict(X) == -1) < 0.1
    np.testing.assert_array_equal(detector.predict([[6.0, 6.0], [-7.0, 0.0]]), [-1, -1])


def test_detects_planted_outliers():
    rng = np.random.RandomState(0)
    inliers = rng.multivariate_normal([0, 0], [[1, 0.9], [0.9, 1]], size=400)
    # Off the correlated ridge but within the marginal ranges.
    outliers = rng.uniform(-1, 1, size=(40, 2)) * 0.3 + np.array([[1.5, -1.5]])
    detector = FlowOutlierDetector(_tiny(max_epochs=40), random_state=0).fit(inliers[:300])
    X_test = np.vstack([inliers[300:], outliers])
    y_outlier = np.r_[np.zeros(100), np.ones(40)]
    assert roc_auc_score(y_outlier, -detector.score_samples(X_test)) > 0.99


def test_trim_refits_without_the_least_likely_rows():
    rng = np.random.RandomState(0)
    X = np.vstack([rng.normal(size=(200, 2)), rng.uniform(-8, 8, size=(20, 2))])
    detector = FlowOutlierDetector(_tiny(max_epochs=10), trim=0.1, random_state=0).fit(X)
    seed = int(check_random_state(0).randint(np.iinfo(np.int32).max, size=1)[0])
    first = _tiny(max_epochs=10, random_state=seed).fit(X)
    keep = np.sort(np.argsort(first.score_samples(X), kind="stable")[22:])
    refit = _tiny(max_epochs=10, random_state=seed).fit(X[keep])
    np.testing.assert_allclose(detector.score_samples(X), refit.score_samples(X))
    # The dropped rows are mostly the scattered outliers.
    assert np.mean(np.setdiff1d(np.arange(len(X)), keep) >= 200) > 0.7


def test_default_estimator_is_a_maf():
    detector = FlowOutlierDetector(random_state=0)
    assert detector.estimator is None
    default = skflow.estimators.outlier._default_estimator()
    assert isinstance(default, MAFDensity) and default.point_mass_noise == 0.4
    params = FlowOutlierDetector(MAFDensity()).get_params()
    assert "estimator__n_transforms" in params


def test_grid_search_tunes_nested_parameters():
    rng = np.random.RandomState(0)
    X = np.vstack([rng.normal(size=(150, 2)), rng.uniform(-6, 6, size=(30, 2))])
    y_inlier = np.r_[np.ones(150), np.zeros(30)]
    search = GridSearchCV(
        FlowOutlierDetector(_tiny(), random_state=0),
        {"estimator__n_transforms": [1, 2]},
        scoring="roc_auc",
        cv=StratifiedKFold(2, shuffle=True, random_state=0),
    ).fit(X, y_inlier)
    # the nested parameter reached the fitted copy of the inner density
    assert search.best_estimator_.estimator_.n_transforms == search.best_params_["estimator__n_transforms"]
    assert search.best_score_ > 0.8


@pytest.mark.parametrize(
    "density",
    [
        NSFDensity(n_transforms=1, hidden_features=(16,), max_epochs=10),
        RealNVPDensity(coupling_map="spline", n_transforms=2, hidden_features=(16,), max_epochs=10),
    ],
    ids=["nsf", "realnvp_spline"],
)
def test_spline_flows_flag_far_points(density):
    detector = FlowOutlierDetector(density, random_state=0).fit(_data(400))
    assert type(detector.estimator_) is type(density) and detector.estimator_ is not density
    np.testing.assert_array_equal(detector.predict([[0.0, 0.0], [6.0, 6.0], [-7.0, 0.0]]), [1, -1, -1])


def test_pipeline_and_realnvp_estimator():
    X = _data() * 100 + 5
    pipe = make_pipeline(
        StandardScaler(), FlowOutlierDetector(RealNVPDensity(n_transforms=2, max_epochs=3), random_state=0)
    )
    labels = pipe.fit(X).predict(X)
    assert set(np.unique(labels)) <= {-1, 1}


def test_pickle_round_trip():
    X = _data()
    detector = FlowOutlierDetector(_tiny(), n_estimators=2, random_state=0).fit(X)
    restored = pickle.loads(pickle.dumps(detector))
    np.testing.assert_array_equal(restored.score_samples(X), detector.score_samples(X))
    assert restored.offset_ == detector.offset_


def test_pandas_input_matches_numpy():
    X = _data()
    frame = pd.DataFrame(X, columns=["a", "b"])
    from_frame = FlowOutlierDetector(_tiny(), random_state=0).fit(frame)
    from_array = FlowOutlierDetector(_tiny(), random_state=0).fit(X)
    np.testing.assert_array_equal(from_frame.feature_names_in_, ["a", "b"])
    np.testing.assert_allclose(from_frame.score_samples(frame), from_array.score_samples(X))
    with pytest.warns(UserWarning, match="feature names"):
        from_frame.predict(X)


def test_random_state_makes_fits_reproducible():
    X = _data()
    a = FlowOutlierDetector(_tiny(), random_state=0).fit(X).score_samples(X)
    b = FlowOutlierDetector(_tiny(), random_state=0).fit(X).score_samples(X)
    c = FlowOutlierDetector(_tiny(), random_state=1).fit(X).score_samples(X)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_the_given_estimator_is_left_unfitted():
    estimator = _tiny()
    FlowOutlierDetector(estimator, random_state=0).fit(_data())
    assert not hasattr(estimator, "net_")


def test_bad_inputs_raise():
    X = _data()
    detector = FlowOutlierDetector(_tiny(), random_state=0)
    with pytest.raises(NotFittedError):
        detector.score_samples(X)
    X_nan = X.copy()
    X_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        detector.fit(X_nan)
    with pytest.raises(ValueError):
        detector.fit(np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(TypeError, match="[Ss]parse"):
        detector.fit(sparse.csr_matrix(X))
    detector.fit(X)
    with pytest.raises(ValueError, match="features"):
        detector.predict(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        detector.score_samples(X_nan)


@pytest.mark.parametrize(
    "params",
    [
        {"contamination": 0.6},
        {"contamination": 0.0},
        {"contamination": "high"},
        {"n_estimators": 0},
        {"trim": 0.5},
    ],
)
def test_invalid_parameters_raise(params):
    with pytest.raises(InvalidParameterError):
        FlowOutlierDetector(_tiny(), **params).fit(_data())


def test_invalid_estimator_raises():
    with pytest.raises(InvalidParameterError):
        FlowOutlierDetector(StandardScaler()).fit(_data())


def test_images_are_passed_to_an_image_density():
    from sklearn.datasets import load_digits

    from skflow.estimators.image import RealNVPImageDensity

    images = load_digits().images[:60].astype(int)  # (60, 8, 8), values 0..16
    density = RealNVPImageDensity(n_bins=17, hidden_channels=4, n_blocks=1, max_epochs=2, n_score_draws=1)
    detector = FlowOutlierDetector(density, random_state=0).fit(images)
    assert detector.sample_shape_ == (8, 8) and detector.n_features_in_ == 64
    scores = detector.score_samples(images[:5])
    np.testing.assert_allclose(scores, detector.estimator_.score_samples(images[:5]))
    # Flat rows of the same pixels are reshaped to images before scoring.
    np.testing.assert_allclose(detector.score_samples(images[:5].reshape(5, 64)), scores)
    with pytest.raises(ValueError, match="features"):
        detector.score_samples(np.zeros((2, 7, 7)))


def test_copies_fit_in_parallel_with_the_same_result():
    X = np.random.RandomState(0).normal(size=(200, 3))
    make = lambda n_jobs: FlowOutlierDetector(  # noqa: E731
        MAFDensity(max_epochs=3, n_transforms=1, hidden_features=(8,)),
        n_estimators=2,
        random_state=0,
        n_jobs=n_jobs,
    )
    serial, parallel = make(1).fit(X), make(2).fit(X)  # n_jobs=None would stack the copies instead
    np.testing.assert_allclose(parallel.score_samples(X), serial.score_samples(X), rtol=1e-6, atol=1e-6)
    assert parallel.offset_ == pytest.approx(serial.offset_, abs=1e-6)
