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
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
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
    X_nan[0, 0] = np.inf  # NaN cells are allowed (tests/test_missing.py)
    with pytest.raises(ValueError, match="infinity"):
        detector.fit(X_nan)
    with pytest.raises(ValueError):
        detector.fit(np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(TypeError, match="[Ss]parse"):
        detector.fit(sparse.csr_matrix(X))
    detector.fit(X)
    with pytest.raises(ValueError, match="features"):
        detector.predict(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="infinity"):
        detector.score_samples(X_nan)


@pytest.mark.parametrize(
    "params",
    [
        {"contamination": 0.6},
        {"contamination": 0.0},
        {"contamination": "high"},
        {"n_estimators": 0},
        {"trim": 0.5},
        {"verbose": -1},
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

    def make(n_jobs):
        density = MAFDensity(max_epochs=3, n_transforms=1, hidden_features=(8,))
        return FlowOutlierDetector(density, n_estimators=2, random_state=0, n_jobs=n_jobs)

    serial, parallel = make(1).fit(X), make(2).fit(X)  # n_jobs=None would stack the copies instead
    np.testing.assert_allclose(parallel.score_samples(X), serial.score_samples(X), rtol=1e-6, atol=1e-6)
    assert parallel.offset_ == pytest.approx(serial.offset_, abs=1e-6)


def test_score_is_the_mean_log_likelihood():
    X, X_test = _data(), _data(50, seed=1)
    detector = FlowOutlierDetector(_tiny(), n_estimators=2, random_state=0).fit(X)
    assert detector.score(X_test) == pytest.approx(np.mean(detector.score_samples(X_test)), rel=1e-12)
    assert detector.score(X_test, np.ones(50)) == detector.score(X_test)  # y ignored
    # mean of the copies' log-likelihoods, per row then over rows
    members = np.mean([m.score_samples(X_test) for m in detector.estimators_])
    assert detector.score(X_test) == pytest.approx(members, rel=1e-12)


def test_grid_search_without_labels_picks_the_best_held_out_likelihood():
    X = _data(200)
    grid = {"estimator__max_epochs": [1, 30]}
    search = GridSearchCV(FlowOutlierDetector(_tiny(), random_state=0), grid, cv=2).fit(X)
    # each split's score is the held-out mean log-likelihood of a detector fitted on the other fold
    for i, params in enumerate(search.cv_results_["params"]):
        for k, (train, test) in enumerate(KFold(2).split(X)):
            detector = FlowOutlierDetector(_tiny(), random_state=0).set_params(**params).fit(X[train])
            expected = np.mean(detector.score_samples(X[test]))
            assert search.cv_results_[f"split{k}_test_score"][i] == pytest.approx(expected, rel=1e-10)
    assert search.best_index_ == np.argmax(search.cv_results_["mean_test_score"])
    assert search.best_params_ == {"estimator__max_epochs": 30}  # 1 epoch is far from fitted


def _two_clusters(n=150, seed=0):
    rng = np.random.RandomState(seed)
    return np.vstack([rng.normal(size=(n, 2)), rng.normal(size=(n, 2)) + 6.0])


def _full_batch(**params):
    """A MAF trained on one full batch without validation split: weights and row repeats then agree."""
    return _tiny(max_epochs=20, batch_size=1024, validation_fraction=0.0, **params)


def test_zero_weight_removes_a_cluster_from_the_fit():
    X = _two_clusters()
    second = np.arange(len(X)) >= 150
    weighted = FlowOutlierDetector(_full_batch(), random_state=0).fit(
        X, sample_weight=(~second).astype(float)
    )
    unweighted = FlowOutlierDetector(_full_batch(), random_state=0).fit(X)
    first_only = FlowOutlierDetector(_full_batch(), random_state=0).fit(X[~second])
    # with weight 0 the second cluster is not part of the density: its rows are outliers
    assert np.mean(weighted.predict(X[second]) == -1) > 0.95
    assert np.mean(unweighted.predict(X[second]) == -1) < 0.1
    # ... and the fit, the threshold and the training statistics are those without its rows
    np.testing.assert_allclose(weighted.score_samples(X), first_only.score_samples(X), rtol=1e-6)
    assert weighted.offset_ == pytest.approx(first_only.offset_, rel=1e-6)
    for method in ("linear", "unify"):
        np.testing.assert_allclose(
            weighted.predict_proba(X, method=method), first_only.predict_proba(X, method=method), atol=1e-6
        )
    np.testing.assert_allclose(weighted.predict_confidence(X), first_only.predict_confidence(X), atol=1e-6)
    assert len(weighted.decision_scores_) == len(X)  # still one score per training row


@pytest.mark.parametrize("params", [{"contamination": 0.1}, {"trim": 0.1}], ids=["percentile", "trim"])
def test_integer_weights_equal_repeated_rows(params):
    rng = np.random.RandomState(0)
    X = np.vstack([rng.normal(size=(100, 2)), rng.uniform(-6, 6, size=(10, 2))])
    weight = rng.randint(0, 4, size=len(X))
    weighted = FlowOutlierDetector(_full_batch(), random_state=0, **params).fit(X, sample_weight=weight)
    repeated = FlowOutlierDetector(_full_batch(), random_state=0, **params).fit(X.repeat(weight, axis=0))
    np.testing.assert_allclose(weighted.score_samples(X), repeated.score_samples(X), rtol=1e-6)
    assert weighted.offset_ == pytest.approx(repeated.offset_, rel=1e-6)
    np.testing.assert_allclose(weighted.predict_proba(X), repeated.predict_proba(X), atol=1e-6)
    np.testing.assert_allclose(weighted.predict_confidence(X), repeated.predict_confidence(X), atol=1e-6)


def test_weighted_percentile_is_the_percentile_of_repeated_values():
    rng = np.random.RandomState(0)
    values, weight = rng.normal(size=30), rng.randint(0, 5, size=30).astype(float)
    for q in (0.0, 1.0, 25.0, 50.0, 75.0, 99.0, 100.0):
        expected = np.percentile(values.repeat(weight.astype(int)), q)
        assert skflow.estimators.outlier._weighted_percentile(values, weight, q) == pytest.approx(expected)
    # fractional weights: scaling them all by 2 is repeating every row twice
    fractional = rng.uniform(0.5, 2.0, size=30)
    doubled = np.r_[fractional, fractional]
    assert skflow.estimators.outlier._weighted_percentile(values, 2 * fractional, 30.0) == pytest.approx(
        skflow.estimators.outlier._weighted_percentile(np.r_[values, values], doubled, 30.0)
    )


def test_bad_sample_weights_raise():
    X = _data()
    detector = FlowOutlierDetector(_tiny(), random_state=0)
    with pytest.raises(ValueError, match="[Nn]egative"):
        detector.fit(X, sample_weight=-np.ones(len(X)))
    with pytest.raises(ValueError, match="shape"):
        detector.fit(X, sample_weight=np.ones(len(X) - 1))
    with pytest.raises(ValueError, match="zero"):
        detector.fit(X, sample_weight=np.zeros(len(X)))


def test_verbose_reaches_the_copies(capsys):
    X = _data(100)
    detector = FlowOutlierDetector(_tiny(max_epochs=2), n_estimators=2, verbose=1, random_state=0).fit(X)
    assert all(member.verbose == 1 for member in detector.estimators_)
    assert "epoch" in capsys.readouterr().out  # skorch's per-epoch table
    # 0 leaves the estimator's own setting, and the given estimator is not changed
    estimator = _tiny(max_epochs=2, verbose=1)
    quiet = FlowOutlierDetector(estimator, random_state=0).fit(X)
    assert quiet.estimator_.verbose == 1
    silent = FlowOutlierDetector(_tiny(max_epochs=2), random_state=0).fit(X)
    assert silent.estimator_.verbose == 0 and capsys.readouterr().out.count("epoch") == 1
    FlowOutlierDetector(estimator, verbose=2, random_state=0).fit(X)
    assert estimator.verbose == 1


def test_verbose_is_ignored_by_an_estimator_without_it():
    from sklearn.neighbors import KernelDensity

    detector = FlowOutlierDetector(KernelDensity(), verbose=1).fit(_data())
    assert "verbose" not in detector.estimator_.get_params()
    np.testing.assert_allclose(
        detector.score_samples(_data()), KernelDensity().fit(_data()).score_samples(_data())
    )


# ------------------------------------------------------------------------------------ explanations
def test_explain_sums_to_the_score_and_its_first_term_is_the_marginal():
    from scipy.integrate import quad

    from skflow import MADEDensity

    rng = np.random.RandomState(0)
    x0 = rng.normal(size=400)
    X = np.c_[x0, x0**2 + 0.3 * rng.normal(size=400)]
    detector = FlowOutlierDetector(
        MADEDensity(n_components=4, hidden_features=(32,), max_epochs=40), random_state=0
    ).fit(X)
    rows = np.array([[0.5, 0.3], [0.0, 3.0], [-1.0, 1.1]])
    contributions = detector.explain(rows)
    assert list(contributions.columns) == ["x0", "x1", "tail_guard"]
    np.testing.assert_allclose(
        contributions.sum(axis=1), detector.score_samples(rows), rtol=1e-10, atol=1e-10
    )
    assert np.all(np.abs(contributions["tail_guard"]) < 0.01)
    # the second cell of [0, 3] is what is unusual: 3 given x0 = 0 (where x1 is about 0)
    assert contributions.loc[1, "x1"] < contributions.loc[1, "x0"] - 2
    # the first column's term is its marginal log-density: integrate the joint over x1
    for i, x in enumerate(rows[:, 0]):
        joint = lambda v, x=x: np.exp(detector.score_samples([[x, v]])[0])
        marginal = quad(joint, -10, 20, limit=200)[0]
        assert contributions.loc[i, "x0"] == pytest.approx(np.log(marginal), abs=5e-3)


def test_explain_refuses_densities_without_a_per_column_split():
    X = np.random.RandomState(0).normal(size=(100, 3))
    detector = FlowOutlierDetector(
        MAFDensity(n_transforms=2, hidden_features=(8,), max_epochs=2), random_state=0
    ).fit(X)
    with pytest.raises(TypeError, match="MADEDensity"):
        detector.explain(X[:3])


def test_explain_keeps_the_rows_labels_and_refuses_densities_without_terms():
    from sklearn.mixture import GaussianMixture

    from skflow import MADEDensity

    X = pd.DataFrame(np.random.RandomState(0).normal(size=(60, 2)), columns=["a", "b"], index=np.arange(60) + 100)
    detector = FlowOutlierDetector(MADEDensity(hidden_features=(8,), max_epochs=2), random_state=0).fit(X)
    assert detector.explain(X.iloc[[5, 2]]).index.tolist() == [105, 102]
    with pytest.raises(TypeError, match="per-column terms"):
        FlowOutlierDetector(GaussianMixture(), random_state=0).fit(X).explain(X)
