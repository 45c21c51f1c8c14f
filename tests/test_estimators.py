"""The estimators behave as a scikit-learn user expects."""

import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.datasets import load_wine
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import skflow._preprocessing
import skflow.base
from skflow import MADEDensity, MAFDensity, RealNVPDensity
from skflow._training import BatchIterator, TensorDataset
from skflow.base import FlowDensity
from skflow.distributions import StandardNormal
from skflow.flows import Flow
from skflow.transforms import Compose, Transform

FAST = dict(max_epochs=5, hidden_features=(16,))
ALL = [MADEDensity, MAFDensity, RealNVPDensity]


@pytest.fixture(scope="module")
def wine():
    return load_wine().data


@pytest.mark.parametrize("cls", ALL)
def test_fit_score_sample_shapes_and_types(cls, wine):
    est = cls(**FAST, random_state=0)
    assert est.fit(wine) is est
    scores = est.score_samples(wine)
    assert scores.shape == (len(wine),) and scores.dtype == np.float64 and np.all(np.isfinite(scores))
    assert est.score(wine) == pytest.approx(scores.mean())
    samples = est.sample(7, random_state=1)
    assert samples.shape == (7, wine.shape[1]) and samples.dtype == np.float64
    assert est.sample().shape == (1, wine.shape[1])
    assert est.n_features_in_ == wine.shape[1]
    assert est.n_iter_ == len(est.history_) <= 5


@pytest.mark.parametrize("cls", ALL)
def test_same_random_state_gives_identical_results(cls, wine):
    a = cls(**FAST, random_state=3).fit(wine)
    b = cls(**FAST, random_state=3).fit(wine)
    c = cls(**FAST, random_state=4).fit(wine)
    np.testing.assert_array_equal(a.score_samples(wine), b.score_samples(wine))
    np.testing.assert_array_equal(a.sample(5, random_state=0), b.sample(5, random_state=0))
    assert not np.array_equal(a.score_samples(wine), c.score_samples(wine))
    assert not np.array_equal(a.sample(5, random_state=0), a.sample(5, random_state=1))


def test_fit_leaves_global_torch_rng_alone(wine):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    MAFDensity(**FAST, random_state=0).fit(wine)
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.mark.parametrize("cls", ALL)
def test_pickle_and_joblib_round_trips(cls, wine, tmp_path):
    est = cls(**FAST, random_state=0).fit(wine)
    expected = est.score_samples(wine)
    restored = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(restored.score_samples(wine), expected)
    joblib.dump(est, tmp_path / "model.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "model.joblib").score_samples(wine), expected)
    np.testing.assert_array_equal(restored.sample(3, random_state=0), est.sample(3, random_state=0))


def test_clone_pipeline_and_grid_search(wine):
    est = MAFDensity(n_transforms=1, max_epochs=5, hidden_features=(8,), random_state=0)
    assert clone(est).get_params() == est.get_params()
    pipe = make_pipeline(FunctionTransformer(np.log1p), est)
    pipe.fit(wine)
    assert np.isfinite(pipe.score(wine))
    search = GridSearchCV(est, {"n_transforms": [1, 2], "lr": [1e-3, 3e-3]}, cv=2, n_jobs=2).fit(wine)
    assert search.best_params_["n_transforms"] in (1, 2)
    assert np.isfinite(search.best_score_)
    means = search.cv_results_["mean_test_score"]
    assert search.best_score_ == pytest.approx(np.max(means))


def test_pandas_in_and_out(wine):
    names = [f"f{i}" for i in range(wine.shape[1])]
    df = pd.DataFrame(wine, columns=names)
    est = RealNVPDensity(**FAST, random_state=0).fit(df)
    np.testing.assert_array_equal(est.feature_names_in_, names)
    samples = est.sample(4, random_state=0)
    assert isinstance(samples, pd.DataFrame) and list(samples.columns) == names
    np.testing.assert_array_equal(est.score_samples(df), est.score_samples(wine))
    with pytest.warns(UserWarning, match="feature names"):
        est.score_samples(wine)
    with pytest.raises(ValueError, match="feature names"):
        est.score_samples(df[names[::-1]])


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 4.0]]), "NaN"),
        (np.array([[0.0, np.inf], [1.0, 2.0], [3.0, 4.0]]), "infinity"),
        (np.array([["a", "b"], ["c", "d"]], dtype=object), "could not convert|dtype"),
        (sp.csr_matrix(np.eye(3)), "[Ss]parse"),
        (np.arange(5.0), "2D array"),
        (np.zeros((2, 2, 2)), "dim 3|3D|3 dimensions"),
        (np.zeros((0, 3)), "0 sample"),
        (np.ones((1, 3)), "1 sample"),
    ],
)
def test_bad_input_raises_clear_errors(bad, message):
    # scikit-learn's convention: ValueError, and TypeError for sparse input
    with pytest.raises((ValueError, TypeError), match=message):
        MAFDensity(**FAST).fit(bad)


def test_bad_input_at_score_time(wine):
    est = MAFDensity(**FAST, random_state=0).fit(wine)
    with pytest.raises(ValueError, match="features"):
        est.score_samples(wine[:, :5])
    with pytest.raises(ValueError, match="NaN"):
        est.score_samples(np.where(wine > 100, np.nan, wine))
    with pytest.raises(ValueError):
        est.sample(0)


@pytest.mark.parametrize("method", ["score_samples", "score", "sample"])
def test_calls_before_fit(method, wine):
    with pytest.raises(NotFittedError):
        getattr(MAFDensity(), method)(*(() if method == "sample" else (wine,)))


@pytest.mark.parametrize(
    "params",
    [
        dict(n_transforms=0),
        dict(lr=-1.0),
        dict(lr=0),
        dict(hidden_features=(0, 8)),
        dict(hidden_features=()),
        dict(hidden_features=64),
        dict(device="tpu"),
        dict(validation_fraction=1.0),
        dict(base="student"),
        dict(batch_size=0),
        dict(dequantize="sometimes"),
        dict(patience=0),
        dict(point_mass_noise=-0.1),
    ],
)
def test_invalid_hyperparameters_raise_at_fit(params, wine):
    est = MAFDensity(**params)  # __init__ never validates
    with pytest.raises(ValueError):
        est.fit(wine)


def test_early_stopping_and_history(wine):
    stopped = MADEDensity(hidden_features=(32, 32), max_epochs=500, patience=3, random_state=0).fit(wine)
    assert stopped.n_iter_ < 500
    valid = np.array(stopped.history_[:, "valid_loss"])
    # the best weights are restored: the final model scores the best validation epoch
    assert np.argmin(valid) == len(valid) - 1 - 3
    full = MADEDensity(max_epochs=7, validation_fraction=0.0, random_state=0).fit(wine)
    assert full.n_iter_ == 7 and "valid_loss" not in full.history_[-1]


def test_verbose_prints_a_progress_table(wine, capsys):
    MAFDensity(**FAST, verbose=1, random_state=0).fit(wine)
    out = capsys.readouterr().out
    assert "train_loss" in out and "valid_loss" in out


def test_integer_columns_are_dequantized_and_sampled_as_integers():
    rng = np.random.default_rng(0)
    X = np.c_[rng.poisson(3, 800), rng.normal(size=800), rng.integers(0, 2, 800)].astype(float)
    est = MAFDensity(n_transforms=2, hidden_features=(32, 32), max_epochs=30, random_state=0).fit(X)
    np.testing.assert_array_equal(est.standardizer_.integer_, [True, False, True])
    samples = est.sample(500, random_state=0)
    assert np.all(samples[:, [0, 2]] == np.round(samples[:, [0, 2]]))
    assert set(np.unique(samples[:, 2])) <= {-1.0, 0.0, 1.0, 2.0}
    # the density over a dequantized column's unit cell is a probability: sums over the
    # integers of the binary column give about one (the density cannot spike on integers)
    cells = np.array([[3.0, 0.0, b] for b in (0.0, 1.0)])
    grid = np.linspace(-6, 6, 2001)
    mass = sum(
        np.trapezoid(np.exp(est.score_samples(np.c_[np.full_like(grid, 3.0), grid, np.full_like(grid, b)])), grid)
        for b in cells[:, 2]
    )
    p3 = np.mean(X[:, 0] == 3)
    assert 0.5 * p3 < mass < 1.5 * p3
    off = MAFDensity(n_transforms=2, max_epochs=3, dequantize=False, random_state=0).fit(X)
    assert not off.standardizer_.integer_.any()


def test_constant_columns_are_harmless():
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=300), np.full(300, 7.25), np.full(300, 3.0)]
    est = MAFDensity(n_transforms=2, max_epochs=10, random_state=0).fit(X)
    scores = est.score_samples(X)
    assert np.all(np.isfinite(scores))
    samples = est.sample(50, random_state=0)
    np.testing.assert_array_equal(samples[:, 1], 7.25)
    np.testing.assert_array_equal(samples[:, 2], 3.0)
    moved = X.copy()
    moved[:, 1] += 5.0
    assert np.all(est.score_samples(moved) < scores)


@pytest.mark.parametrize("scale", [1e-8, 1e8])
def test_huge_and_tiny_scales(scale, wine):
    X = wine[:, :4]
    # One batch per epoch: over many steps Adam amplifies the float32 rounding of the standardised data.
    params = dict(FAST, batch_size=256)
    base = MAFDensity(**params, random_state=0).fit(X)
    scaled = MAFDensity(**params, random_state=0).fit(X * scale)
    shifted = base.score_samples(X) - 4 * np.log(scale)
    np.testing.assert_allclose(scaled.score_samples(X * scale), shifted, rtol=1e-6)


@pytest.mark.parametrize("cls", ALL)
def test_heavy_tails_and_unseen_extremes_get_sensible_log_densities(cls):
    rng = np.random.default_rng(0)
    X = np.c_[rng.standard_t(1.5, 2000), rng.normal(size=2000), rng.lognormal(0, 1, 2000)]
    est = cls(hidden_features=(32, 32), max_epochs=25, random_state=0).fit(X)
    assert np.all(np.isfinite(est.score_samples(X)))
    # held-out rows far beyond the training range: finite, and lower the further out
    center = np.median(X, axis=0)
    steps = [5, 10, 20, 40]
    far = np.array([center + [0, s * X[:, 1].std(), 0] for s in steps])
    far_scores = est.score_samples(far)
    assert np.all(np.isfinite(far_scores))
    assert np.all(np.diff(far_scores) < 0)
    # a 40-sigma outlier in a Gaussian column costs about 40^2/2 = 800 nats for a Gaussian;
    # bounded scales keep the flow within a moderate factor of that, not 1e7
    assert far_scores[-1] > -1e5


class _Exploding(Transform):
    """A transform whose log-determinant turns NaN after ``after`` forward calls in training."""

    def __init__(self, after, forever):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.calls, self.after, self.forever = 0, after, forever

    def forward(self, x):
        if self.training:
            self.calls += 1
        bad = self.training and self.calls > self.after and (self.forever or self.calls <= self.after + 2)
        ladj = (self.weight * 0 + (float("nan") if bad else 0.0)).expand(x.shape[0])
        return x * torch.exp(self.weight), ladj + self.weight * x.shape[1]

    def inverse(self, z):
        return z * torch.exp(-self.weight), (-self.weight * z.shape[1]).expand(z.shape[0])


class _ExplodingDensity(FlowDensity):
    _parameter_constraints = {**FlowDensity._parameter_constraints}

    def __init__(self, forever=True, max_epochs=20, random_state=0):
        self.forever = forever
        self.max_epochs = max_epochs
        self.random_state = random_state
        self.hidden_features = (1,)
        self.batch_size = 32
        self.lr = 1e-2
        self.weight_decay = 0.0
        self.validation_fraction = 0.2
        self.patience = 50
        self.dequantize = "auto"
        self.device = "cpu"
        self.verbose = 0

    def _build_flow(self, n_features):
        return Flow(Compose(_Exploding(after=5, forever=self.forever)), StandardNormal(n_features))


def test_divergence_is_recovered_from_or_reported(wine):
    recovered = _ExplodingDensity(forever=False).fit(wine)
    assert np.all(np.isfinite(recovered.score_samples(wine)))
    assert recovered.net_.optimizer_.param_groups[0]["lr"] < 1e-2  # the learning rate was halved
    with pytest.raises(FloatingPointError, match="smaller `lr`"):
        _ExplodingDensity(forever=True).fit(wine)


def test_scoring_and_sampling_run_in_batches(wine, monkeypatch):
    est = MAFDensity(**FAST, random_state=0).fit(wine)
    expected = est.score_samples(wine)
    samples = est.sample(40, random_state=0)
    monkeypatch.setattr(skflow.base, "INFERENCE_BATCH", 7)
    np.testing.assert_allclose(est.score_samples(wine), expected, rtol=1e-6)
    assert est.sample(40, random_state=0).shape == samples.shape


def test_device_auto_resolves_to_available_device():
    assert skflow.base.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert skflow.base.resolve_device("cpu") == "cpu"


def test_tail_guard_bounds_unseen_values_of_a_near_constant_column():
    # one column holds a single value in 99.5% of rows (as in ADBench's cardio); a held-out
    # value that no training row had, inside the training range, used to get about -1e6 nats
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=(2000, 2)), np.where(rng.random(2000) < 0.995, 0.5, rng.uniform(0, 30, 2000))]
    est = MAFDensity(hidden_features=(32, 32), max_epochs=30, random_state=0).fit(X)
    unseen = np.array([[0.0, 0.0, 17.3], [1.0, -1.0, 0.5 + 1e-3]])
    scores = est.score_samples(unseen)
    z = est.standardizer_.transform(unseen)
    floor = (
        np.log(skflow.base.TAIL_WEIGHT)
        - 0.5 * np.sum((z / skflow.base.TAIL_SCALE) ** 2, axis=1)
        - 3 * np.log(skflow.base.TAIL_SCALE * np.sqrt(2 * np.pi))
        + est.standardizer_.log_det_
    )
    assert np.all(scores >= floor - 1e-9)
    assert np.all(scores > -100)
    # and the guard costs at most log(1 - w) where the flow is confident
    typical = est.score_samples(X[:200])
    Z = est.standardizer_.transform(X[:200])
    flow_only = est._log_prob(Z) + est.standardizer_.log_det_
    assert np.all(typical >= flow_only + np.log1p(-skflow.base.TAIL_WEIGHT) - 1e-9)


def test_point_mass_columns_are_detected():
    rng = np.random.default_rng(0)
    n = 1000
    X = np.c_[
        rng.normal(size=n),  # continuous
        np.where(rng.random(n) < 0.3, 0.0, rng.normal(5, 1, n)),  # missing-value code 0 in 30% of rows
        np.where(rng.random(n) < 0.05, -1.0, rng.normal(size=n)),  # a 5% tie: below the threshold
        np.full(n, 2.0),  # constant: handled separately
    ]
    standardizer = skflow._preprocessing.Standardizer().fit(X)
    np.testing.assert_array_equal(standardizer.point_mass_, [False, True, False, False])


def test_smoothing_noise_reaches_only_the_given_columns():
    dataset = TensorDataset(np.zeros((20000, 3)))
    batches = BatchIterator(dataset, batch_size=20000, shuffle=True, smoothing_std=[0.0, 0.5, 2.0], seed=0)
    (X, _), = list(batches)
    np.testing.assert_array_equal(X[:, 0].numpy(), 0.0)
    np.testing.assert_allclose(X[:, 1:].std(dim=0).numpy(), [0.5, 2.0], rtol=0.03)


def test_point_mass_noise_flattens_the_spike_of_a_repeated_value():
    # 40% of the second column is exactly 0 (a missing-value code): the plain flow grows a spike
    # there, the smoothed one does not, while both keep the continuous part
    rng = np.random.default_rng(1)
    n = 1500
    X = np.c_[rng.normal(size=n), np.where(rng.random(n) < 0.4, 0.0, rng.normal(3, 1, n))]
    at_mass, beside = np.array([[0.0, 0.0]]), np.array([[0.0, 0.3]])
    spikes = []
    for noise in (0.0, 0.4):
        est = MAFDensity(
            n_transforms=2, hidden_features=(32, 32), point_mass_noise=noise, max_epochs=40, random_state=0
        ).fit(X)
        spikes.append(float(est.score_samples(at_mass)[0] - est.score_samples(beside)[0]))
        assert est.standardizer_.point_mass_.tolist() == [False, True]
    plain, smoothed = spikes
    assert plain > 2.0  # the unsmoothed density jumps by more than e^2 at the repeated value
    assert smoothed < 1.0 and smoothed < plain - 1.5
