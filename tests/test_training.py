"""Training options of the shared loop: size-adaptive settings, bf16, compile, process sharding."""

import pickle
import shutil
import sys

import numpy as np
import pytest
import torch
from sklearn.utils._param_validation import InvalidParameterError

from skflow import MAFDensity, NSFDensity
from skflow.training import BatchIterator, TensorDataset, training_settings
from skflow.training.sizing import BASE, SMALL_DATA


@pytest.fixture
def X():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(600, 2))
    return np.column_stack([z[:, 0], z[:, 0] ** 2 + 0.3 * z[:, 1]])


@pytest.mark.parametrize("n", [1, 100, SMALL_DATA])
def test_auto_settings_are_the_small_data_recipe_up_to_the_threshold(n):
    assert training_settings(n) == BASE


def test_auto_settings_grow_with_the_data_and_stay_bounded():
    sizes = [SMALL_DATA * k for k in (2, 5, 50, 500, 5000)]
    settings = [training_settings(n) for n in sizes]
    batches = [s["batch_size"] for s in settings]
    assert batches == sorted(batches) and batches[0] > BASE["batch_size"] and batches[-1] == 1024
    assert all(s["lr"] <= 4e-3 and s["lr"] > BASE["lr"] for s in settings)
    epochs = [s["max_epochs"] for s in settings]
    assert epochs == sorted(epochs, reverse=True) and min(epochs) == 20
    assert min(s["patience"] for s in settings) == 10
    # fit cost ~ rows x epochs stays at most linear in n
    work = [n * s["max_epochs"] for n, s in zip(sizes, settings)]
    assert all(b / a <= n2 / n1 for a, b, n1, n2 in zip(work, work[1:], sizes, sizes[1:]))


def test_numbers_pass_through_and_a_fixed_batch_keeps_the_base_rate():
    s = training_settings(10**6, batch_size=32, lr="auto", max_epochs=7, patience=3)
    assert s == {"batch_size": 32, "lr": BASE["lr"], "max_epochs": 7, "patience": 3}


def test_fitted_estimator_reports_the_settings_it_used(X):
    model = MAFDensity(n_transforms=1, hidden_features=(8,), max_epochs=2, random_state=0).fit(X)
    assert model.training_settings_ == {**BASE, "max_epochs": 2}
    assert len(model.history_) == 2


@pytest.mark.parametrize(
    "param, value", [("batch_size", "big"), ("precision", "float16"), ("accelerator", "gpu")]
)
def test_invalid_training_options_are_clear_errors(X, param, value):
    with pytest.raises(InvalidParameterError, match=param):
        MAFDensity(**{param: value}).fit(X)


def test_missing_accelerate_says_what_to_install(X, monkeypatch):
    class FakeAccelerator:
        num_processes, process_index, device = 1, 0, torch.device("cpu")

        def prepare(self, *objects):
            return objects

        def backward(self, loss):
            loss.backward()

    monkeypatch.setitem(sys.modules, "accelerate", None)
    with pytest.raises(ImportError, match=r"skflow\[distributed\]"):
        MAFDensity(max_epochs=1, accelerator=FakeAccelerator()).fit(X)


def test_bfloat16_training_fits_as_well_and_scores_in_full_precision(X):
    common = dict(n_transforms=2, hidden_features=(32, 32), max_epochs=30, random_state=0)
    full = MAFDensity(**common).fit(X)
    half = MAFDensity(precision="bfloat16", **common).fit(X)
    assert np.all(np.isfinite(half.score_samples(X)))
    assert half.score_samples(X).dtype == np.float64
    assert abs(half.score(X) - full.score(X)) < 0.15
    assert half.score(X) > MAFDensity(
        max_epochs=1, **{k: v for k, v in common.items() if k != "max_epochs"}
    ).fit(X).score(X)
    restored = pickle.loads(pickle.dumps(half))
    np.testing.assert_array_equal(restored.score_samples(X[:20]), half.score_samples(X[:20]))


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("cc") is None, reason="torch.compile needs a C++ compiler"
)
def test_compiled_training_matches_eager_training(X):
    common = dict(n_transforms=2, hidden_features=(16,), spline_bins=4, max_epochs=3, random_state=0)
    eager = NSFDensity(**common).fit(X)
    compiled = NSFDensity(compile=True, **common).fit(X)
    np.testing.assert_allclose(compiled.score_samples(X), eager.score_samples(X), atol=1e-3)
    assert "_compiled" not in compiled.net_.__dict__  # the compiled wrapper is a cache, dropped after fit
    pickle.loads(pickle.dumps(compiled))


def test_process_slices_partition_every_global_batch():
    dataset = TensorDataset(np.arange(103, dtype=float)[:, None])
    batches = {
        k: list(BatchIterator(dataset, 10, shuffle=True, seed=3, num_processes=3, process_index=k))
        for k in range(3)
    }
    reference = list(BatchIterator(dataset, 10, shuffle=True, seed=3))
    assert all(len(b) == len(reference) for b in batches.values())
    for i, (whole, _) in enumerate(reference):
        parts = torch.cat([batches[k][i][0]["x"] for k in range(3)])
        torch.testing.assert_close(parts, whole["x"])


@pytest.mark.parametrize("name", ["GlowDensity", "TarFlowDensity"])
def test_bfloat16_training_of_image_flows(name):
    from sklearn.datasets import load_digits

    import skflow

    X = load_digits().images.astype(int)[:120]
    common = dict(n_bins=17, max_epochs=2, random_state=0)
    full = getattr(skflow, name)(**common).fit(X)
    half = getattr(skflow, name)(precision="bfloat16", **common).fit(X)
    assert np.all(np.isfinite(half.score_samples(X)))
    assert abs(half.score(X) - full.score(X)) < 0.05 * abs(full.score(X))


def test_context_noise_is_added_in_training_only():
    rng = np.random.default_rng(0)
    dataset = TensorDataset(rng.normal(size=(40, 2)), context=rng.normal(size=(40, 3)))
    ((train, _),) = BatchIterator(dataset, 40, shuffle=True, seed=1, context_noise=0.5)
    ((plain, _),) = BatchIterator(dataset, 40, shuffle=True, seed=1)
    ((valid, _),) = BatchIterator(dataset, 40, context_noise=0.5)
    torch.testing.assert_close(valid["context"], dataset.context)  # never noised outside training
    # same shuffle, x untouched, context moved by noise of about the asked size
    torch.testing.assert_close(train["x"], plain["x"])
    spread = (train["context"] - plain["context"]).std().item()
    assert 0.35 < spread < 0.65
