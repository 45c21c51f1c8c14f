"""FlowOutlierDetector's PyOD interface: attributes, probabilities, confidence, and use beside PyOD.

PyOD is only a benchmark extra: the detector computes PyOD's quantities itself, and
the tests that compare with PyOD or combine with its detectors skip without it.
"""

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from skflow.estimators.outlier import FlowOutlierDetector
from skflow.estimators.tabular import MAFDensity


def _tiny(max_epochs=5):
    return MAFDensity(n_transforms=2, hidden_features=(16,), max_epochs=max_epochs)


def _data(n=300, seed=0):
    return np.random.RandomState(seed).normal(size=(n, 2))


def _fitted(contamination="auto", max_epochs=5):
    return FlowOutlierDetector(_tiny(max_epochs), contamination=contamination, random_state=0).fit(_data())


@pytest.mark.parametrize("contamination", ["auto", 0.1])
def test_attributes_follow_score_samples_and_offset(contamination):
    X = _data()
    detector = _fitted(contamination)
    scores = detector.score_samples(X)
    # PyOD's sign: higher is more abnormal
    np.testing.assert_array_equal(detector.decision_scores_, -scores)
    assert detector.threshold_ == -detector.offset_
    assert detector.decision_scores_.shape == (len(X),) and detector.labels_.dtype.kind == "i"
    assert set(np.unique(detector.labels_)) == {0, 1}
    # labels_ are PyOD's 0/1 for the rows predict labels +1/-1
    np.testing.assert_array_equal(detector.labels_, (detector.predict(X) == -1).astype(int))
    np.testing.assert_array_equal(detector.labels_, detector.decision_scores_ > detector.threshold_)
    if contamination != "auto":
        assert abs(detector.labels_.mean() - contamination) <= 1.0 / len(X)


@pytest.mark.parametrize("method", ["linear", "unify"])
def test_predict_proba_sums_to_one_and_rises_with_the_outlier_score(method):
    detector = _fitted()
    X = np.vstack([_data(100, seed=1) * 2, [[0.0, 0.0], [8.0, 8.0]]])
    proba = detector.predict_proba(X, method=method)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert np.all((proba >= 0) & (proba <= 1))
    # P(outlier) does not decrease along increasing outlier scores
    order = np.argsort(-detector.score_samples(X))
    assert np.all(np.diff(proba[order, 1]) >= 0)
    assert proba[-1, 1] == 1.0 and proba[-2, 1] < 0.5  # far point certain, the mode not
    assert np.ptp(proba[:, 1]) > 0.5


def test_linear_and_unify_scale_against_the_training_scores():
    detector = _fitted()
    train = detector.decision_scores_
    X = _data()
    linear = detector.predict_proba(X, method="linear")[:, 1]
    np.testing.assert_allclose(linear, (train - train.min()) / (train.max() - train.min()))
    unify = detector.predict_proba(X, method="unify")[:, 1]
    # zero below the mean training outlier score, erf((s - mean) / (std sqrt 2)) above it
    below = train <= train.mean()
    assert np.all(unify[below] == 0)
    z = (train[~below] - train.mean()) / train.std()
    np.testing.assert_allclose(unify[~below], 2 * norm.cdf(z) - 1, rtol=1e-10)


def test_predict_proba_rejects_an_unknown_method_and_returns_confidence():
    detector = _fitted()
    X = _data(20, seed=1)
    with pytest.raises(ValueError, match="method"):
        detector.predict_proba(X, method="softmax")
    proba, confidence = detector.predict_proba(X, method="unify", return_confidence=True)
    np.testing.assert_array_equal(proba, detector.predict_proba(X, method="unify"))
    np.testing.assert_array_equal(confidence, detector.predict_confidence(X))


@pytest.mark.parametrize("contamination", ["auto", 0.1])
def test_confidence_is_high_far_from_the_threshold(contamination):
    detector = _fitted(contamination, max_epochs=20)
    X = np.vstack([_data(200, seed=1) * 1.5, [[0.0, 0.0], [8.0, 8.0], [-7.0, 1.0]]])
    confidence = detector.predict_confidence(X)
    assert confidence.shape == (len(X),)
    assert np.all((confidence >= 0) & (confidence <= 1))
    # the mode and two far points: labelled without doubt
    assert np.all(confidence[-3:] > 0.99)
    # rows nearest the threshold: close to a coin flip
    nearest = np.argsort(np.abs(detector.decision_function(X)))[:3]
    assert np.all(confidence[nearest] < 0.8)


class _PyThreshLike:
    """A fixed threshold in PyThresh's interface: PyOD's path for a non-numeric contamination."""

    def __init__(self, threshold):
        self.threshold = threshold

    def fit(self, scores):
        self.labels_, self.thresh_ = self.predict(scores), self.threshold
        return self

    def predict(self, scores):
        return (scores > self.threshold).astype(int)


@pytest.mark.parametrize("contamination", ["auto", 0.1, 0.29])
def test_probabilities_and_confidence_equal_pyods_own(contamination):
    """PyOD's BaseDetector, handed the detector's outlier scores, computes the same quantities."""
    pytest.importorskip("pyod")
    from pyod.models.base import BaseDetector

    class Mirror(BaseDetector):
        def __init__(self, detector, contamination=0.1):
            super().__init__(contamination=contamination)
            self.detector = detector

        def fit(self, X, y=None):
            self._set_n_classes(y)
            self.decision_scores_ = self.decision_function(X)
            self._process_decision_scores()
            return self

        def decision_function(self, X):
            return -self.detector.score_samples(X)

    X, X_test = _data(), _data(50, seed=1) * 2.5
    detector = _fitted(contamination)
    pyod_contamination = _PyThreshLike(detector.threshold_) if contamination == "auto" else contamination
    reference = Mirror(detector, pyod_contamination).fit(X)
    assert reference.threshold_ == pytest.approx(detector.threshold_, rel=1e-12)
    np.testing.assert_array_equal(reference.labels_, detector.labels_)
    for method in ("linear", "unify"):
        np.testing.assert_allclose(
            detector.predict_proba(X_test, method=method), reference.predict_proba(X_test, method=method)
        )
    np.testing.assert_allclose(detector.predict_confidence(X_test), reference.predict_confidence(X_test))


def test_combined_with_pyod_detectors_ranks_planted_outliers():
    """The documented use: skflow's outlier scores standardised and averaged with PyOD detectors'."""
    pytest.importorskip("pyod")
    combination = pytest.importorskip("pyod.models.combination")  # needs PyOD's `combo` dependency
    from pyod.models.iforest import IForest
    from pyod.models.knn import KNN
    from pyod.utils.utility import standardizer

    rng = np.random.RandomState(0)
    inliers = rng.multivariate_normal([0, 0], [[1, 0.8], [0.8, 1]], size=300)
    outliers = rng.uniform(-6, 6, size=(40, 2))
    outliers = outliers[np.abs(outliers).max(axis=1) > 3.5][:20]
    X_train, X_test = np.vstack([inliers[:200], outliers[:10]]), np.vstack([inliers[200:], outliers[10:]])
    y_train, y_test = np.r_[np.zeros(200), np.ones(10)], np.r_[np.zeros(100), np.ones(10)]

    flow = FlowOutlierDetector(_tiny(max_epochs=30), random_state=0).fit(X_train)
    peers = [KNN().fit(X_train), IForest(random_state=0).fit(X_train)]
    train_scores = np.column_stack([flow.decision_scores_] + [peer.decision_scores_ for peer in peers])
    # PyOD's decision_function is an outlier score: -score_samples for skflow's detector
    test_scores = np.column_stack(
        [-flow.score_samples(X_test)] + [peer.decision_function(X_test) for peer in peers]
    )
    train_z, test_z = standardizer(train_scores, test_scores)
    assert roc_auc_score(y_train, flow.decision_scores_) > 0.95  # same sign as PyOD's
    assert roc_auc_score(y_train, combination.average(train_z)) > 0.95
    assert roc_auc_score(y_test, combination.average(test_z)) > 0.95
