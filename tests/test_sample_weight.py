"""``sample_weight``: a weight of 2 is the row twice, in the scaling and in the training objective."""

import numpy as np
import pytest
import torch

from skflow import FlowMixture, MADEDensity, MAFDensity, NSFDensity
from skflow.training import BatchIterator, NegativeLogLikelihood, TensorDataset

SMALL = {"n_transforms": 1, "hidden_features": (8,), "max_epochs": 2, "random_state": 0}


def _rows(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return np.c_[rng.normal(size=(n, 2)), rng.integers(0, 3, size=n)]


def test_weight_two_is_the_row_twice_in_scaling_and_objective():
    X = _rows()
    weight = np.ones(len(X))
    weight[[3, 11]] = 2.0
    duplicated = np.vstack([X, X[[3, 11]]])
    weighted = MAFDensity(**SMALL).fit(X, sample_weight=weight)
    plain = MAFDensity(**SMALL).fit(duplicated)
    scaler, reference = weighted.standardizer_, plain.standardizer_
    np.testing.assert_allclose(scaler.mean_, reference.mean_, rtol=1e-12)
    np.testing.assert_allclose(scaler.scale_, reference.scale_, rtol=1e-12)
    np.testing.assert_array_equal(scaler.integer_, reference.integer_)
    # the objective at fixed parameters (the weighted fit's, in float64), over all rows at once
    module = weighted.net_.module_.double().eval()
    as_tensor = lambda A: torch.as_tensor(scaler.transform(A), dtype=torch.float64)  # noqa: E731
    with torch.no_grad():
        loss = NegativeLogLikelihood()(module(as_tensor(X)), torch.as_tensor(weight / weight.mean()))
        loss_duplicated = NegativeLogLikelihood()(module(as_tensor(duplicated)))
    assert float(loss) == pytest.approx(float(loss_duplicated), rel=1e-12)


def test_batches_carry_their_rows_weights():
    x = np.arange(10.0)[:, None]
    weight = np.arange(10.0) + 1
    batches = list(BatchIterator(TensorDataset(x, weight=weight), 4, shuffle=True, seed=0))
    for batch, w in batches:
        np.testing.assert_array_equal(w.numpy(), batch["x"][:, 0].numpy() + 1)  # each row with its own weight
    members = TensorDataset(x, weight=weight, members=np.array([[0, 1, 2, 3], [6, 7, 8, 9]]))
    for batch, w in BatchIterator(members, 2, shuffle=True, seed=0):
        assert w.shape == batch["x"].shape[:2]
        np.testing.assert_array_equal(w.numpy(), batch["x"][..., 0].numpy() + 1)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MAFDensity(n_transforms=2, hidden_features=(16,), max_epochs=60, random_state=0),
        lambda: FlowMixture(
            NSFDensity(n_transforms=1, hidden_features=(16,), max_epochs=60), n_estimators=2, random_state=0
        ),
    ],
)
def test_zero_weights_remove_rows_from_the_fit(make):
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(-3, 0.5, size=(200, 1)), rng.normal(3, 0.5, size=(200, 1))]
    weight = np.r_[np.ones(200), np.full(200, 1e-6)]
    model = make().fit(X, sample_weight=weight)
    assert model.score_samples([[-3.0]])[0] > model.score_samples([[3.0]])[0] + 3


def test_equal_weights_are_the_plain_fit_and_bad_weights_are_refused():
    X = _rows()
    plain = MAFDensity(**SMALL).fit(X)
    same = MAFDensity(**SMALL).fit(X, sample_weight=np.full(len(X), 3.0))
    np.testing.assert_array_equal(plain.score_samples(X), same.score_samples(X))
    with pytest.raises(ValueError, match="[Nn]egative"):
        MAFDensity(**SMALL).fit(X, sample_weight=-np.ones(len(X)))
    with pytest.raises(ValueError, match="non-zero"):
        MAFDensity(**SMALL).fit(X, sample_weight=np.zeros(len(X)))
    with pytest.raises(ValueError):
        MAFDensity(**SMALL).fit(X, sample_weight=np.ones(len(X) - 1))


def test_sample_return_y_gives_the_classes_drawn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=300)
    X = (4 * y - 2)[:, None] + 0.3 * rng.normal(size=(300, 1))
    model = MAFDensity(n_transforms=2, hidden_features=(16,), max_epochs=100, random_state=0).fit(X, y)
    draws, labels = model.sample(400, random_state=0, return_y=True)
    assert draws.shape == (400, 1) and set(labels) == {0, 1}
    assert np.mean(np.sign(draws[:, 0]) == 2 * labels - 1) > 0.97  # each draw from its class's mode
    again = model.sample(400, random_state=0)
    np.testing.assert_array_equal(again, draws)  # return_y changes nothing in the draws
    mixture = FlowMixture(
        MAFDensity(n_transforms=1, hidden_features=(8,), max_epochs=10), n_estimators=2, random_state=0
    ).fit(X, y)
    draws, labels = mixture.sample(200, random_state=1, return_y=True, y=1)
    assert np.all(labels == 1) and draws.shape == (200, 1)
    with pytest.raises(ValueError, match="class labels"):
        MAFDensity(**SMALL).fit(X).sample(3, return_y=True)


def test_verbose_prints_plain_progress_and_silent_by_default(capsys):
    X = _rows()
    MAFDensity(**SMALL).fit(X)
    assert capsys.readouterr().out == ""
    MAFDensity(**{**SMALL, "verbose": 1}).fit(X)
    out = capsys.readouterr().out
    assert "train_loss" in out and "\x1b[" not in out  # the epoch table, without colour codes


def test_warm_start_continues_from_the_fitted_weights():
    X = _rows(300)
    model = MAFDensity(n_transforms=2, hidden_features=(16,), max_epochs=40, random_state=0).fit(X)
    fitted = model.score(X)
    scaler = model.standardizer_
    model.set_params(warm_start=True, max_epochs=1, lr=1e-9).fit(X[:200])  # one step of nothing
    assert model.score(X) == pytest.approx(fitted, abs=1e-4)
    assert model.standardizer_ is scaler  # the fitted scaling is kept
    cold = MAFDensity(n_transforms=2, hidden_features=(16,), max_epochs=1, lr=1e-9, random_state=0).fit(X)
    assert cold.score(X) < fitted - 0.5  # from scratch, the same step leaves an untrained flow
    with pytest.raises(ValueError, match="features"):
        model.fit(X[:, :2])
    with pytest.raises(ValueError, match="warm_start"):
        model.fit(X, np.zeros(len(X)))


def test_weighted_class_prior_is_the_rows_repeated():
    X, y = _rows(), np.arange(60) % 3
    weight = np.where(y == 0, 5, 1)
    weighted = MAFDensity(**SMALL).fit(X, y, sample_weight=weight)
    repeated = MAFDensity(**SMALL).fit(np.repeat(X, weight, axis=0), np.repeat(y, weight))
    np.testing.assert_allclose(weighted.class_prior_, repeated.class_prior_, rtol=1e-12)


def test_rows_of_weight_zero_are_absent():
    X = _rows()
    weight = (np.arange(len(X)) % 10 == 0).astype(float)  # a tenth of the rows: most batches would weigh 0
    small = dict(SMALL, batch_size=4)
    weighted = MAFDensity(**small).fit(X, sample_weight=weight)
    kept = MAFDensity(**small).fit(X[weight > 0])
    np.testing.assert_allclose(weighted.score_samples(X), kept.score_samples(X), rtol=1e-4)
    with pytest.raises(ValueError, match="at least 2 rows"):
        MAFDensity(**SMALL).fit(X, sample_weight=np.r_[1.0, np.zeros(len(X) - 1)])


def test_equal_weights_keep_the_mixture_stacked():
    X = np.random.default_rng(0).normal(size=(120, 2))
    make = lambda: FlowMixture(MADEDensity(hidden_features=(8,), max_epochs=3), n_estimators=2, random_state=0)
    plain, ones = make().fit(X), make().fit(X, sample_weight=np.ones(len(X)))
    assert len(plain.stacked_) == 2
    np.testing.assert_array_equal(plain.weights_, ones.weights_)
