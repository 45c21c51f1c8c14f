"""The tabular estimators behave as a scikit-learn user expects.

The shared tests run on every tabular density (MADE, MAF, IAF, NSF, RealNVP with affine and
spline couplings); the tests of one mechanism (early stopping, dequantization, point masses,
the tail guard, ...) run on MAF and on NSF.
"""

import copy
import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from scipy.special import logsumexp, softmax
from scipy.stats import norm
from sklearn.base import clone
from sklearn.datasets import load_iris, load_wine
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from skorch.callbacks import Callback, ProgressBar

import skflow.estimators.density
from skflow import IAFDensity, MADEDensity, MAFDensity, NSFDensity, RealNVPDensity
from skflow.data import Standardizer
from skflow.estimators.density import FlowDensity, resolve_device
from skflow.models.distributions import StandardNormal
from skflow.models.flow import Flow
from skflow.training import BatchIterator, TensorDataset
from skflow.transforms import Compose, Transform

FAST = dict(max_epochs=5, hidden_features=(16,))

#: Every tabular density, with small settings: (id, class, extra parameters).
CONFIGS = {
    "made": (MADEDensity, {}),
    "maf": (MAFDensity, dict(n_transforms=2)),
    "iaf": (IAFDensity, dict(n_transforms=2)),
    "nsf": (NSFDensity, dict(n_transforms=2)),
    "realnvp": (RealNVPDensity, dict(n_transforms=2)),
    "realnvp_spline": (RealNVPDensity, dict(n_transforms=2, coupling_map="spline")),
}
ALL = list(CONFIGS)
#: The densities whose mechanisms (integer columns, point masses, ...) are tested in depth.
MAF_NSF = ["maf", "nsf"]
#: Class-conditional densities tested on iris.
CONDITIONAL = ["made", "maf", "nsf", "realnvp", "realnvp_spline"]


def make(name, **params):
    cls, extra = CONFIGS[name]
    return cls(**{**extra, **params})


@pytest.fixture(scope="module")
def wine():
    return load_wine().data


@pytest.fixture(scope="module")
def iris():
    return load_iris(return_X_y=True)


# --------------------------------------------------------------- shared tests
@pytest.mark.parametrize("name", ALL)
def test_fit_score_sample_shapes_and_types(name, wine):
    est = make(name, **FAST, random_state=0)
    assert est.fit(wine) is est
    scores = est.score_samples(wine)
    assert scores.shape == (len(wine),) and scores.dtype == np.float64 and np.all(np.isfinite(scores))
    assert est.score(wine) == pytest.approx(scores.mean())
    samples = est.sample(7, random_state=1)
    assert samples.shape == (7, wine.shape[1]) and samples.dtype == np.float64
    assert est.sample().shape == (1, wine.shape[1])
    assert est.n_features_in_ == wine.shape[1]
    assert est.n_iter_ == len(est.history_) <= 5
    assert est.classes_ is None and est.class_prior_ is None and est.layout_ is None
    # fitted without labels, the density is not a classifier
    assert not hasattr(est, "predict") and not hasattr(est, "predict_proba")
    with pytest.raises(ValueError, match="without class labels"):
        est.sample(3, y=0)


@pytest.mark.parametrize("name", ALL)
def test_same_random_state_gives_identical_results(name, wine):
    a = make(name, **FAST, random_state=3).fit(wine)
    b = make(name, **FAST, random_state=3).fit(wine)
    c = make(name, **FAST, random_state=4).fit(wine)
    np.testing.assert_array_equal(a.score_samples(wine), b.score_samples(wine))
    np.testing.assert_array_equal(a.sample(5, random_state=0), b.sample(5, random_state=0))
    assert not np.array_equal(a.score_samples(wine), c.score_samples(wine))
    assert not np.array_equal(a.sample(5, random_state=0), a.sample(5, random_state=1))


@pytest.mark.parametrize("name", ALL)
def test_pickle_and_joblib_round_trips(name, wine, tmp_path):
    est = make(name, **FAST, random_state=0).fit(wine)
    expected = est.score_samples(wine)
    restored = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(restored.score_samples(wine), expected)
    joblib.dump(est, tmp_path / "model.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "model.joblib").score_samples(wine), expected)
    np.testing.assert_array_equal(restored.sample(3, random_state=0), est.sample(3, random_state=0))


@pytest.mark.parametrize("name", ALL)
def test_pandas_in_and_out(name, wine):
    names = [f"f{i}" for i in range(wine.shape[1])]
    df = pd.DataFrame(wine, columns=names)
    est = make(name, **FAST, random_state=0).fit(df)
    np.testing.assert_array_equal(est.feature_names_in_, names)
    samples = est.sample(4, random_state=0)
    assert isinstance(samples, pd.DataFrame) and list(samples.columns) == names
    # the same model as from the array (a frame's column-major copy may change the last bit of the mean)
    from_array = make(name, **FAST, random_state=0).fit(wine)
    np.testing.assert_allclose(samples.to_numpy(), from_array.sample(4, random_state=0), rtol=1e-12)
    with pytest.warns(UserWarning, match="feature names"):
        from_rows = est.score_samples(wine)
    np.testing.assert_array_equal(est.score_samples(df), from_rows)
    with pytest.raises(ValueError, match="feature names"):
        est.score_samples(df[names[::-1]])


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("scale", [1e-13, 1e-8, 1e8])
def test_scaling_x_by_c_shifts_log_density_by_minus_d_log_c(name, scale, wine):
    X = wine[:, :4]
    # One batch per epoch: over many steps Adam amplifies the float32 rounding of the standardised data.
    params = dict(FAST, batch_size=256, random_state=0)
    base = make(name, **params).fit(X)
    scaled = make(name, **params).fit(X * scale)
    shifted = base.score_samples(X) - 4 * np.log(scale)
    np.testing.assert_allclose(scaled.score_samples(X * scale), shifted, rtol=1e-6)
    np.testing.assert_allclose(
        scaled.sample(5, random_state=0), scale * base.sample(5, random_state=0), rtol=1e-5
    )


def _trapezoid_1d(est, grid):
    return np.trapezoid(np.exp(est.score_samples(grid[:, None])), grid)


@pytest.mark.parametrize("name", ALL)
def test_one_dimensional_density_integrates_to_one(name):
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(-2.0, 0.5, 300), rng.normal(1.0, 1.0, 300)][:, None] * 10 + 50
    est = make(name, hidden_features=(16,), max_epochs=15, batch_size=128, random_state=0).fit(X)
    grid = np.linspace(X.min() - 60, X.max() + 60, 6001)  # about 20 standard deviations of X
    assert _trapezoid_1d(est, grid) == pytest.approx(1.0, abs=2e-3)
    # at least as good as the Gaussian fit (which is all that MADE, IAF and RealNVP can be in 1-D:
    # their single feature gets an affine map with constant parameters)
    gaussian = norm.logpdf(X, X.mean(), X.std()).mean()
    assert est.score(X) > gaussian - 0.02


@pytest.mark.parametrize("name", ALL)
def test_two_dimensional_density_integrates_to_one(name):
    rng = np.random.default_rng(1)
    x1 = rng.normal(size=600)
    X = np.c_[x1, 0.5 * x1**2 + 0.3 * rng.normal(size=600)]  # a banana
    est = make(name, hidden_features=(16,), max_epochs=15, batch_size=128, random_state=0).fit(X)
    t1 = np.linspace(-12, 12, 481)
    t2 = np.linspace(-10, 14, 481)
    g1, g2 = np.meshgrid(t1, t2, indexing="ij")
    density = np.exp(est.score_samples(np.c_[g1.ravel(), g2.ravel()])).reshape(g1.shape)
    assert np.trapezoid(np.trapezoid(density, t2, axis=1), t1) == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize(
    "bad, message",
    [
        # tabular densities take NaN cells (tests/test_missing.py), not a row with none observed
        (np.array([[np.nan, np.nan], [1.0, 2.0], [3.0, 4.0]]), "NaN|every cell missing"),
        (np.array([[0.0, np.inf], [1.0, 2.0], [3.0, 4.0]]), "infinity"),
        (np.array([["a", "b"], ["c", "d"]], dtype=object), "could not convert|dtype"),
        (sp.csr_matrix(np.eye(3)), "[Ss]parse"),
        (np.arange(5.0), "2D array"),
        (np.zeros((2, 2, 2)), "dim 3|3D|3 dimensions"),
        (np.zeros((0, 3)), "0 sample"),
        (np.ones((1, 3)), "1 sample"),
    ],
    ids=["nan", "inf", "strings", "sparse", "1d", "3d", "empty", "one_row"],
)
@pytest.mark.parametrize("name", ALL)
def test_bad_input_raises_clear_errors(name, bad, message):
    # scikit-learn's convention: ValueError, and TypeError for sparse input
    with pytest.raises((ValueError, TypeError), match=message):
        make(name, **FAST).fit(bad)


@pytest.mark.parametrize("name", ALL)
def test_bad_input_at_score_time(name, wine):
    est = make(name, **FAST, random_state=0).fit(wine)
    with pytest.raises(ValueError, match="features"):
        est.score_samples(wine[:, :5])
    with pytest.raises(ValueError, match="NaN|every cell missing"):
        est.score_samples(np.full(wine.shape, np.nan))
    with pytest.raises(ValueError, match="infinity"):
        est.score_samples(np.where(wine > 100, np.inf, wine))
    with pytest.raises(ValueError, match="could not convert|dtype"):
        est.score_samples(np.full(wine.shape, "a", dtype=object))
    with pytest.raises(TypeError, match="[Ss]parse"):
        est.score_samples(sp.csr_matrix(wine))
    for n in (0, -1, 2.5):
        with pytest.raises(ValueError, match="n_samples"):
            est.sample(n)


@pytest.mark.parametrize("method", ["score_samples", "score", "sample"])
@pytest.mark.parametrize("name", ALL)
def test_calls_before_fit(name, method, wine):
    with pytest.raises(NotFittedError):
        getattr(make(name), method)(*(() if method == "sample" else (wine,)))
    assert not hasattr(make(name), "predict_proba")  # available only once fitted with labels


COMMON_INVALID = [
    dict(lr=-1.0),
    dict(lr=0),
    dict(hidden_features=(0, 8)),
    dict(hidden_features=()),
    dict(hidden_features=64),
    dict(device="tpu"),
    dict(device=3),
    dict(validation_fraction=1.0),
    dict(batch_size=0),
    dict(max_epochs=0),
    dict(dequantize="sometimes"),
    dict(patience=0),
    dict(point_mass_noise=-0.1),
    dict(weight_decay=-1.0),
    dict(lr_schedule="linear"),
    dict(callbacks=ProgressBar()),  # a callback, not a list of them
]
SPECIFIC_INVALID = [
    ("made", dict(n_components=0)),
    ("made", dict(order="backwards")),
    ("maf", dict(n_transforms=0)),
    ("maf", dict(base="student")),
    ("maf", dict(n_components=0)),
    ("iaf", dict(n_transforms=0)),
    ("nsf", dict(n_transforms=0)),
    ("nsf", dict(spline_bins=1)),
    ("nsf", dict(spline_bound=0.0)),
    ("nsf", dict(base="student")),
    ("realnvp", dict(coupling_map="quadratic")),
    ("realnvp", dict(n_transforms=0)),
]


@pytest.mark.parametrize(
    "name, params",
    [(name, p) for name in ALL for p in COMMON_INVALID] + SPECIFIC_INVALID,
    # ids name an object by its type, not its address, so every process collects the same tests
    ids=lambda v: v if isinstance(v, str) else "-".join(
        f"{k}={v[k] if isinstance(v[k], (int, float, str, tuple)) else type(v[k]).__name__}" for k in v
    ),
)
def test_invalid_hyperparameters_raise_at_fit(name, params, wine):
    est = make(name, **params)  # __init__ never validates
    with pytest.raises(ValueError):
        est.fit(wine)


def test_a_non_callback_in_callbacks_is_a_type_error(wine):
    with pytest.raises(TypeError, match="skorch callbacks"):
        MAFDensity(**FAST, callbacks=["progress"]).fit(wine)


@pytest.mark.parametrize("name", MAF_NSF)
def test_fit_leaves_global_torch_rng_alone(name, wine):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make(name, **FAST, random_state=0).fit(wine)
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.mark.parametrize("name, n_jobs", [("maf", 2), ("nsf", 1)])
def test_clone_pipeline_and_grid_search(name, n_jobs, wine):
    est = make(name, max_epochs=5, hidden_features=(8,), random_state=0)
    assert clone(est).get_params() == est.get_params()
    pipe = make_pipeline(FunctionTransformer(np.log1p), est)
    pipe.fit(wine)
    assert np.isfinite(pipe.score(wine))
    search = GridSearchCV(est, {"n_transforms": [1, 2], "lr": [1e-3, 3e-3]}, cv=2, n_jobs=n_jobs).fit(wine)
    # every candidate fitted and scored in the workers (a failed fit scores NaN, with only a warning)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    refit = clone(est).set_params(**search.best_params_).fit(wine)
    np.testing.assert_allclose(search.score_samples(wine), refit.score_samples(wine), rtol=1e-6)


# ----------------------------------------------------- class-conditional fits
def _log_p_given_class(est, X, c):
    """``log p(x | c)`` in X's units from the fitted torch module in float64, the tail guard included."""
    module = copy.deepcopy(est.net_.module_).double().eval()
    Z = est.standardizer_.transform(X)
    context = np.zeros((len(X), len(est.classes_)))
    context[:, c] = 1.0
    with torch.no_grad():
        log_flow = module(torch.as_tensor(Z), torch.as_tensor(context)).numpy()
    w, s = skflow.estimators.density.TAIL_WEIGHT, skflow.estimators.density.TAIL_SCALE
    log_wide = norm.logpdf(Z, scale=s).sum(axis=1)
    return np.logaddexp(np.log1p(-w) + log_flow, np.log(w) + log_wide) + est.standardizer_.log_det_


@pytest.fixture(scope="module", params=CONDITIONAL)
def conditional(request, iris):
    X, y = iris
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    est = make(request.param, hidden_features=(16,), max_epochs=30, lr=1e-2, random_state=0).fit(X, labels)
    return est, X, labels


def test_conditional_scores_are_the_mixture_over_classes(conditional):
    est, X, _ = conditional
    np.testing.assert_array_equal(est.classes_, ["setosa", "versicolor", "virginica"])
    np.testing.assert_allclose(est.class_prior_, [1 / 3] * 3)
    joint = np.stack([_log_p_given_class(est, X, c) for c in range(3)], axis=1) + np.log(est.class_prior_)
    # the classes condition the flow: p(x | c) differs between classes
    assert np.all(np.ptp(joint, axis=1) > 1e-3)
    scores = est.score_samples(X)
    np.testing.assert_allclose(scores, logsumexp(joint, axis=1), rtol=1e-5, atol=1e-4)
    proba = est.predict_proba(X)
    assert proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(proba, softmax(joint, axis=1), atol=1e-5)
    # Bayes' rule: log p(c | x) + log p(x) = log pi_c + log p(x | c)
    np.testing.assert_allclose(np.log(proba) + scores[:, None], joint, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(est.predict(X), est.classes_[np.argmax(proba, axis=1)])
    assert est.score(X) == pytest.approx(scores.mean())


def test_conditional_predict_is_better_than_chance(conditional):
    est, X, labels = conditional
    assert np.mean(est.predict(X) == labels) > 0.9  # chance is 1/3


def test_conditional_sampling_draws_the_given_class(conditional):
    est, X, labels = conditional
    setosa = est.sample(200, random_state=0, y="setosa")
    assert setosa.shape == (200, 4)
    # setosa is well separated: its samples are classified as setosa and lie near its rows
    assert np.mean(est.predict(setosa) == "setosa") > 0.9
    assert np.abs(np.median(setosa, axis=0) - np.median(X[labels == "setosa"], axis=0)).max() < 0.4
    mixed = est.sample(6, random_state=0, y=["setosa", "virginica"] * 3)
    assert mixed.shape == (6, 4)
    assert est.sample(5, random_state=0).shape == (5, 4)  # classes drawn from the prior
    with pytest.raises(ValueError, match="not seen in fit"):
        est.sample(3, y="rosa")
    with pytest.raises(ValueError, match="not seen in fit"):
        est.sample(2, y=["setosa", "rosa"])


def test_conditional_model_pickles(conditional):
    est, X, _ = conditional
    restored = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(restored.predict_proba(X), est.predict_proba(X))
    np.testing.assert_array_equal(
        restored.sample(4, random_state=0, y="virginica"), est.sample(4, random_state=0, y="virginica")
    )


@pytest.mark.parametrize("name", CONDITIONAL)
def test_labels_must_be_classes(name, iris):
    X, y = iris
    with pytest.raises(ValueError, match="class labels"):
        make(name, **FAST).fit(X, X[:, 0] + 0.123)  # continuous y
    with pytest.raises(ValueError, match="samples"):
        make(name, **FAST).fit(X, y[:-1])


# ------------------------------------------------------- training machinery
class EpochCounter(Callback):
    def initialize(self):
        self.epochs = 0
        return self

    def on_epoch_end(self, net, **kwargs):
        self.epochs += 1


@pytest.mark.parametrize("name", MAF_NSF)
def test_user_callbacks_are_called(name, wine, capsys):
    counter = EpochCounter()
    est = make(name, **FAST, callbacks=[counter, ("progress", ProgressBar())], random_state=0).fit(wine)
    assert counter.epochs == est.n_iter_ == 5
    assert est.net_.callbacks_  # skflow's callbacks and the user's, named
    names = dict(est.net_.callbacks_)
    assert "progress" in names and "divergence_guard" in names and "early_stopping" in names


@pytest.mark.parametrize("name", MAF_NSF)
def test_cosine_schedule_decays_the_learning_rate(name, wine):
    lr, epochs = 3e-3, 6
    est = make(
        name,
        **dict(FAST, max_epochs=epochs),
        lr=lr,
        lr_schedule="cosine",
        validation_fraction=0.0,
        random_state=0,
    )
    est.fit(wine)
    used = np.array(est.history_[:, "event_lr"])
    np.testing.assert_allclose(used, lr * (1 + np.cos(np.pi * np.arange(epochs) / epochs)) / 2, rtol=1e-9)
    assert est.net_.optimizer_.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    constant = make(
        name, **dict(FAST, max_epochs=epochs), lr=lr, validation_fraction=0.0, random_state=0
    ).fit(wine)
    assert constant.net_.optimizer_.param_groups[0]["lr"] == lr


def test_device_that_is_not_there_is_an_error_at_fit(wine):
    est = MAFDensity(**FAST, device="cuda:3")
    if torch.cuda.device_count() > 3:
        pytest.skip("this machine has a cuda:3")
    with pytest.raises(ValueError, match="not available"):
        est.fit(wine)
    with pytest.raises(ValueError, match="not available"):
        resolve_device("cuda:3")


def test_device_may_be_a_torch_device(wine):
    est = MAFDensity(**FAST, device=torch.device("cpu"), random_state=0).fit(wine)
    assert est._device() == torch.device("cpu")
    reference = MAFDensity(**FAST, device="cpu", random_state=0).fit(wine)
    np.testing.assert_array_equal(est.score_samples(wine), reference.score_samples(wine))
    assert clone(est).device == torch.device("cpu")


def test_device_auto_resolves_to_available_device():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError):
        resolve_device("tpu")


@pytest.mark.parametrize("name", ["made", "nsf"])
def test_early_stopping_and_history(name, wine):
    patience = 3
    stopped = make(name, hidden_features=(32, 32), max_epochs=500, patience=patience, random_state=0).fit(
        wine
    )
    assert stopped.n_iter_ < 500
    valid = np.array(stopped.history_[:, "valid_loss"])
    # the best weights are restored: the final model scores the best validation epoch
    assert np.argmin(valid) == len(valid) - 1 - patience
    full = make(name, hidden_features=(16,), max_epochs=7, validation_fraction=0.0, random_state=0).fit(wine)
    assert full.n_iter_ == 7 and "valid_loss" not in full.history_[-1]


@pytest.mark.parametrize("name", MAF_NSF)
def test_verbose_prints_a_progress_table(name, wine, capsys):
    make(name, **FAST, verbose=1, random_state=0).fit(wine)
    out = capsys.readouterr().out
    assert "train_loss" in out and "valid_loss" in out


@pytest.mark.parametrize("name", MAF_NSF)
def test_integer_columns_are_dequantized_and_sampled_as_integers(name):
    rng = np.random.default_rng(0)
    X = np.c_[rng.poisson(3, 800), rng.normal(size=800), rng.integers(0, 2, 800)].astype(float)
    est = make(name, hidden_features=(32, 32), max_epochs=30, random_state=0).fit(X)
    np.testing.assert_array_equal(est.standardizer_.integer_, [True, False, True])
    samples = est.sample(500, random_state=0)
    assert np.all(samples[:, [0, 2]] == np.round(samples[:, [0, 2]]))
    assert set(np.unique(samples[:, 2])) <= {-1.0, 0.0, 1.0, 2.0}
    # the density over a dequantized column's unit cell is a probability: sums over the
    # integers of the binary column give about P(x0 = 3) (the density cannot spike on integers)
    grid = np.linspace(-6, 6, 2001)
    mass = sum(
        np.trapezoid(
            np.exp(est.score_samples(np.c_[np.full_like(grid, 3.0), grid, np.full_like(grid, b)])), grid
        )
        for b in (0.0, 1.0)
    )
    p3 = np.mean(X[:, 0] == 3)
    assert 0.5 * p3 < mass < 1.5 * p3
    off = make(name, max_epochs=3, dequantize=False, random_state=0).fit(X)
    assert not off.standardizer_.integer_.any()


@pytest.mark.parametrize("name", MAF_NSF)
def test_constant_columns_are_harmless(name):
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=300), np.full(300, 7.25), np.full(300, 3.0)]
    est = make(name, max_epochs=10, random_state=0).fit(X)
    scores = est.score_samples(X)
    assert np.all(np.isfinite(scores))
    samples = est.sample(50, random_state=0)
    np.testing.assert_array_equal(samples[:, 1], 7.25)
    np.testing.assert_array_equal(samples[:, 2], 3.0)
    moved = X.copy()
    moved[:, 1] += 5.0
    assert np.all(est.score_samples(moved) < scores)


@pytest.mark.parametrize("name", ALL)
def test_heavy_tails_and_unseen_extremes_get_sensible_log_densities(name):
    rng = np.random.default_rng(0)
    X = np.c_[rng.standard_t(1.5, 2000), rng.normal(size=2000), rng.lognormal(0, 1, 2000)]
    # five affine layers (the default) for MAF and RealNVP: bounded log-scales compound over layers
    layers = {"n_transforms": 5} if name in ("maf", "realnvp") else {}
    est = make(name, hidden_features=(32, 32), max_epochs=25, random_state=0, **layers).fit(X)
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


# ----------------------------------------------------------- divergence guard
class _Exploding(Transform):
    """A transform whose log-determinant turns NaN after ``after`` forward calls in training."""

    def __init__(self, after, forever):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.calls, self.after, self.forever = 0, after, forever

    def forward(self, x, context=None):
        if self.training:
            self.calls += 1
        bad = self.training and self.calls > self.after and (self.forever or self.calls <= self.after + 2)
        ladj = (self.weight * 0 + (float("nan") if bad else 0.0)).expand(x.shape[0])
        return x * torch.exp(self.weight), ladj + self.weight * x.shape[1]

    def inverse(self, z, context=None):
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
        self.lr_schedule = "constant"
        self.validation_fraction = 0.2
        self.patience = 50
        self.callbacks = None
        self.dequantize = "auto"
        self.device = "cpu"
        self.precision = "float32"
        self.compile = False
        self.accelerator = None
        self.verbose = 0

    def _build_flow(self, n_features, context_features):
        return Flow(Compose(_Exploding(after=5, forever=self.forever)), StandardNormal(n_features))


def test_divergence_is_recovered_from_or_reported(wine):
    recovered = _ExplodingDensity(forever=False).fit(wine)
    assert np.all(np.isfinite(recovered.score_samples(wine)))
    assert recovered.net_.optimizer_.param_groups[0]["lr"] == pytest.approx(0.5e-2)  # halved once
    assert recovered.n_iter_ == 20
    with pytest.raises(FloatingPointError, match="smaller `lr`"):
        _ExplodingDensity(forever=True).fit(wine)


@pytest.mark.parametrize("name", MAF_NSF)
def test_a_diverging_learning_rate_is_survived_or_reported(name, wine):
    """A real flow at an absurd learning rate: a finite model, or a FloatingPointError with advice.

    (Bounded log-scales and soft-clamped conditioner inputs keep this flow finite at lr=1e3; the
    restore-and-halve path itself is tested with the exploding transform above.)
    """
    try:
        est = make(name, **FAST, lr=1e3, random_state=0).fit(wine)
    except FloatingPointError as error:
        assert "smaller `lr`" in str(error)
    else:
        assert np.all(np.isfinite(est.score_samples(wine)))
        assert np.all(np.isfinite(est.sample(50, random_state=0)))
        # a survivor must have learnt: within a nat per column of the best independent Gaussian
        gaussian = GaussianMixture(1, covariance_type="diag").fit(wine).score(wine)
        assert est.score(wine) > gaussian - wine.shape[1]


@pytest.mark.parametrize("name", ALL)
def test_a_diverged_fit_whose_loss_stays_finite_is_not_returned(name):
    """At lr=1 these flows blow up to losses of 1e10 nats and more without overflowing; the tail
    guard's floor would give such a model a plausible score: fit must refuse it, or have recovered."""
    X = np.random.default_rng(0).normal(size=(200, 2))
    try:
        est = make(name, lr=1.0, max_epochs=15, random_state=0).fit(X)
    except FloatingPointError as error:
        assert "smaller `lr`" in str(error)
    else:
        assert est.score(X) > -2.84 - 2  # the standard normal's -2.84, less a nat per column


def test_batch_norm_on_one_row_batches_uses_its_running_statistics():
    X = np.random.default_rng(0).normal(size=(60, 2))
    est = MAFDensity(batch_norm=True, batch_size=1, max_epochs=3, random_state=0).fit(X)
    assert est.score(X) > -2.84 - 1  # one row has no variance: it used to collapse to the floor (-11)


# ------------------------------------------------------ scoring in batches
@pytest.mark.parametrize("name", MAF_NSF)
def test_scoring_and_sampling_run_in_batches(name, wine, monkeypatch):
    est = make(name, **FAST, random_state=0).fit(wine)
    expected = est.score_samples(wine)
    samples = est.sample(40, random_state=0)
    calls = []
    scorer = est._scoring_module()[0]  # the module that scores (a float64 copy on the CPU)
    parts = scorer.log_prob_parts
    monkeypatch.setattr(
        scorer, "log_prob_parts", lambda *args, **kwargs: calls.append(1) or parts(*args, **kwargs)
    )
    monkeypatch.setattr(est, "_inference_batch", 7)
    np.testing.assert_allclose(est.score_samples(wine), expected, rtol=1e-6)
    assert len(calls) == -(-len(wine) // 7)
    assert est.sample(40, random_state=0).shape == samples.shape


# ---------------------------------------------------- tail guard, point masses
@pytest.mark.parametrize("name", MAF_NSF)
def test_tail_guard_bounds_unseen_values_of_a_near_constant_column(name):
    # one column holds a single value in 99.5% of rows (as in ADBench's cardio); a held-out
    # value that no training row had, inside the training range, used to get about -1e6 nats
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=(2000, 2)), np.where(rng.random(2000) < 0.995, 0.5, rng.uniform(0, 30, 2000))]
    est = make(name, hidden_features=(32, 32), max_epochs=30, random_state=0).fit(X)
    unseen = np.array([[0.0, 0.0, 17.3], [1.0, -1.0, 0.5 + 1e-3]])
    scores = est.score_samples(unseen)
    z = est.standardizer_.transform(unseen)
    floor = (
        np.log(skflow.estimators.density.TAIL_WEIGHT)
        - 0.5 * np.sum((z / skflow.estimators.density.TAIL_SCALE) ** 2, axis=1)
        - 3 * np.log(skflow.estimators.density.TAIL_SCALE * np.sqrt(2 * np.pi))
        + est.standardizer_.log_det_
    )
    assert np.all(scores >= floor - 1e-9)
    assert np.all(scores > -100)
    # and the guard costs at most log(1 - w) where the flow is confident
    typical = est.score_samples(X[:200])
    Z = est.standardizer_.transform(X[:200])
    scorer, dtype = est._scoring_module()
    with torch.no_grad():
        flow = scorer(torch.as_tensor(Z, dtype=dtype)).double().numpy()
    flow_only = flow + est.standardizer_.log_det_
    assert np.all(typical >= flow_only + np.log1p(-skflow.estimators.density.TAIL_WEIGHT) - 1e-9)


def test_point_mass_columns_are_detected():
    rng = np.random.default_rng(0)
    n = 1000
    X = np.c_[
        rng.normal(size=n),  # continuous
        np.where(rng.random(n) < 0.3, 0.0, rng.normal(5, 1, n)),  # missing-value code 0 in 30% of rows
        np.where(rng.random(n) < 0.05, -1.0, rng.normal(size=n)),  # a 5% tie: below the threshold
        np.full(n, 2.0),  # constant: handled separately
    ]
    standardizer = Standardizer().fit(X)
    np.testing.assert_array_equal(standardizer.point_mass_, [False, True, False, False])


def test_smoothing_noise_reaches_only_the_given_columns():
    dataset = TensorDataset(np.zeros((20000, 3)))
    batches = BatchIterator(dataset, batch_size=20000, shuffle=True, smoothing_std=[0.0, 0.5, 2.0], seed=0)
    ((batch, _),) = list(batches)
    X = batch["x"]
    np.testing.assert_array_equal(X[:, 0].numpy(), 0.0)
    np.testing.assert_allclose(X[:, 1:].std(dim=0).numpy(), [0.5, 2.0], rtol=0.03)


@pytest.mark.parametrize("name", MAF_NSF)
def test_point_mass_noise_flattens_the_spike_of_a_repeated_value(name):
    # 40% of the second column is exactly 0 (a missing-value code): the plain flow grows a spike
    # there, the smoothed one does not, while both keep the continuous part
    rng = np.random.default_rng(1)
    n = 1500
    X = np.c_[rng.normal(size=n), np.where(rng.random(n) < 0.4, 0.0, rng.normal(3, 1, n))]
    at_mass, beside = np.array([[0.0, 0.0]]), np.array([[0.0, 0.3]])
    spikes = []
    for noise in (0.0, 0.4):
        est = make(
            name,
            n_transforms=2,
            hidden_features=(32, 32),
            point_mass_noise=noise,
            max_epochs=40,
            random_state=0,
        ).fit(X)
        spikes.append(float(est.score_samples(at_mass)[0] - est.score_samples(beside)[0]))
        assert est.standardizer_.point_mass_.tolist() == [False, True]
    plain, smoothed = spikes
    assert plain > 2.0  # the unsmoothed density jumps by more than e^2 at the repeated value
    assert smoothed < 1.0 and smoothed < plain - 1.5
