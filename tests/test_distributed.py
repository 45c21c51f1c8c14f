"""skflow.distributed and skflow's joblib parallelism on a dask cluster (skipped without distributed)."""

import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")
dd = pytest.importorskip("dask.dataframe")

import cloudpickle  # a dependency of distributed
import joblib
import pandas as pd
import torch
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import skflow.distributed as skd
from skflow import FlowOutlierDetector, MAFDensity

TINY = {"hidden_features": (8,), "max_epochs": 3, "random_state": 0}


@pytest.fixture(scope="module")
def client():
    """One two-process LocalCluster for the module (its workers run torch with one thread)."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this file
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    return rng.normal(size=(200, 2)) @ np.array([[1.0, 0.5], [0.0, 1.0]]) + [2.0, -1.0]


@pytest.fixture(scope="module")
def density(data):
    return MAFDensity(n_transforms=1, **TINY).fit(data)


def _grid_searches(estimator, grid, X, client):
    local = GridSearchCV(estimator, grid, cv=2, n_jobs=1).fit(X)
    with joblib.parallel_config(backend="dask"):
        remote = GridSearchCV(estimator, grid, cv=2, n_jobs=-1).fit(X)
    return local, remote


@pytest.mark.parametrize("pipeline", [False, True], ids=["maf", "pipeline"])
def test_grid_search_on_dask_matches_serial(client, data, pipeline):
    if pipeline:
        estimator = Pipeline([("scale", StandardScaler()), ("flow", MAFDensity(**TINY))])
        grid = {"flow__n_transforms": [1, 2]}
    else:
        estimator, grid = MAFDensity(**TINY), {"n_transforms": [1, 2]}
    local, remote = _grid_searches(estimator, grid, data, client)
    assert remote.best_params_ == local.best_params_
    # Same seeds and one torch thread on both sides (measured: identical); rtol allows float32 thread effects.
    assert_allclose(remote.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"], rtol=1e-6)
    assert_allclose(
        remote.best_estimator_.score_samples(data), local.best_estimator_.score_samples(data), rtol=1e-6
    )


def test_outlier_detector_ensemble_on_dask_matches_serial(client, data):
    params = {"estimator": MAFDensity(**TINY), "n_estimators": 2, "random_state": 0}
    serial = FlowOutlierDetector(n_jobs=1, **params).fit(data)  # one by one, as the workers fit them
    with joblib.parallel_config(backend="dask"):
        remote = FlowOutlierDetector(n_jobs=2, **params).fit(data)
    assert_allclose(remote.score_samples(data), serial.score_samples(data), rtol=1e-6)
    assert_allclose(remote.offset_, serial.offset_, rtol=1e-6)


def test_score_blocks_dask_array(client, data, density):
    X = da.from_array(data, chunks=(50, 1))  # column chunks are merged into one block
    lazy = skd.score_blocks(density, X)
    assert lazy.chunks == ((50, 50, 50, 50),) and lazy.dtype == np.float64
    assert_allclose(lazy.compute(), density.score_samples(data), rtol=1e-10)


def _shared_key(lazy, kind):
    """The one graph value of type ``kind``, its key checked to be a dependency of every block task."""
    graph = dict(lazy.__dask_graph__())
    unwrap = lambda value: getattr(value, "value", value)  # dask wraps literals in a DataNode
    keys = [key for key, value in graph.items() if isinstance(unwrap(value), kind)]
    assert len(keys) == 1, keys
    blocks = [value for key, value in graph.items() if isinstance(key, tuple) and key[0].startswith("_call_")]
    assert len(blocks) == lazy.npartitions if hasattr(lazy, "npartitions") else lazy.numblocks[0]
    assert all(keys[0] in task.dependencies for task in blocks)
    return unwrap(graph[keys[0]])


def test_score_blocks_ships_the_estimator_once(client, data, density):
    lazy = skd.score_blocks(density, da.from_array(data, chunks=(50, 2)))
    future = _shared_key(lazy, distributed.Future)  # scattered once, referenced by every block
    holders = client.who_has([future])[future.key]
    assert sorted(holders) == sorted(client.scheduler_info(n_workers=-1)["workers"])  # broadcast


def test_score_blocks_without_client(data, density, monkeypatch):
    import dask

    monkeypatch.setattr(skd, "_active_client", lambda: None)
    lazy = skd.score_blocks(density, da.from_array(data, chunks=(50, 2)))
    _shared_key(lazy, MAFDensity)  # one delayed literal shared by every block
    with dask.config.set(scheduler="sync"):
        assert_allclose(lazy.compute(), density.score_samples(data), rtol=1e-10)


def test_two_models_with_equal_parameters_keep_their_own_keys_without_client(data, monkeypatch):
    import dask

    monkeypatch.setattr(skd, "_active_client", lambda: None)
    first = MAFDensity(n_transforms=1, **TINY).fit(data)
    second = MAFDensity(n_transforms=1, **TINY).fit(data * 3 + 5)  # the same parameters, other data
    blocks = da.from_array(data, chunks=(50, 2))
    with dask.config.set(scheduler="sync"):
        a, b = dask.compute(skd.score_blocks(first, blocks), skd.score_blocks(second, blocks))
    assert_allclose(a, first.score_samples(data), rtol=1e-10)
    assert_allclose(b, second.score_samples(data), rtol=1e-10)


def test_score_blocks_dataframe_keeps_index(client, data):
    frame = pd.DataFrame(data, columns=["a", "b"], index=np.arange(200) * 10 + 7)
    fitted = MAFDensity(n_transforms=1, **TINY).fit(frame)
    lazy = skd.score_blocks(fitted, dd.from_pandas(frame, npartitions=4))
    assert isinstance(lazy, dd.Series)
    assert lazy.divisions == dd.from_pandas(frame, npartitions=4).divisions
    result = lazy.compute()
    pd.testing.assert_index_equal(result.index, frame.index)
    assert_allclose(result.to_numpy(), fitted.score_samples(frame), rtol=1e-10)


def test_score_blocks_outlier_detector(client, data):
    detector = FlowOutlierDetector(MAFDensity(**TINY), random_state=0).fit(data)
    X = np.vstack([data, [[8.0, 8.0], [-6.0, 5.0]]])
    blocks = da.from_array(X, chunks=(50, 2))
    decision = skd.score_blocks(detector, blocks, method="decision_function")
    labels = skd.score_blocks(detector, blocks, method="predict")
    assert_allclose(decision.compute(), detector.decision_function(X), rtol=1e-10)
    np.testing.assert_array_equal(labels.compute(), detector.predict(X))
    assert labels.dtype == detector.predict(X).dtype
    assert np.all(detector.predict(X)[-2:] == -1)


def test_score_blocks_rejects_bad_input(data, density):
    with pytest.raises(ValueError, match="method must be one of"):
        skd.score_blocks(density, da.from_array(data), method="sample")
    with pytest.raises(TypeError, match="dask array or dask DataFrame"):
        skd.score_blocks(density, data)
    with pytest.raises(ValueError, match="2-D"):
        skd.score_blocks(density, da.ones(10))


def _worker_view(count):
    """On a worker: (rank, device) with ``count`` fake CUDA devices."""
    cuda = torch.cuda
    saved = cuda.is_available, cuda.device_count
    cuda.is_available, cuda.device_count = (lambda: True), (lambda: count)
    try:
        return skd._host_rank(distributed.get_worker()), str(skd.worker_device())
    finally:
        cuda.is_available, cuda.device_count = saved


def test_worker_device_one_gpu_per_worker(client):
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    views = {
        count: [client.submit(_worker_view, count, workers=[w], pure=False).result() for w in workers]
        for count in (1, 2)
    }
    assert [rank for rank, _ in views[2]] == [0, 1]
    assert [device for _, device in views[2]] == ["cuda:0", "cuda:1"]
    assert [device for _, device in views[1]] == ["cuda:0", "cuda:0"]


def test_worker_device_outside_a_worker(monkeypatch):
    assert skd.worker_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert skd.worker_device() == torch.device("cuda")  # torch's current device, within CUDA_VISIBLE_DEVICES


def test_import_error_without_dask(monkeypatch, data, density):
    for name in ("dask", "dask.array", "dask.dataframe"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "skflow.distributed")
    monkeypatch.delattr(sys.modules["skflow"], "distributed")  # restored afterwards, with sys.modules
    import skflow.distributed as fresh  # the module itself imports without dask

    with pytest.raises(ImportError, match=r'pip install "skflow\[distributed\]"'):
        fresh.score_blocks(density, data)
