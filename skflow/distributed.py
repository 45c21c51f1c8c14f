"""Dask helpers: score out-of-core data block by block, pick a GPU per dask worker.

Nothing here imports dask at module level: ``import skflow.distributed``
works without it, and the functions that need dask raise an ImportError
naming the extra to install (``pip install "skflow[distributed]"``).

Training on a dask cluster needs no helper: scikit-learn's and skflow's
joblib parallelism (``GridSearchCV(n_jobs=...)``,
``FlowOutlierDetector(n_jobs=...)``) runs there under
``joblib.parallel_config(backend="dask")`` once a ``distributed.Client``
exists. This module adds the two pieces joblib does not cover:

* :func:`score_blocks` scores a dask array or DataFrame lazily, one block
  per task, with the fitted estimator shipped to the workers once;
* :func:`worker_device` is the torch device a process (a dask worker
  especially) should use, one GPU per worker on a multi-GPU host.
"""

import numpy as np

__all__ = ["score_blocks", "worker_device"]

#: Methods :func:`score_blocks` may call, and whether they return scores (float64).
_METHODS = {"score_samples": True, "decision_function": True, "predict": False}

_INSTALL_HINT = 'skflow.distributed needs dask and distributed: pip install "skflow[distributed]"'


def _import_dask():
    """``(dask, dask.array, dask.dataframe)``, or an ImportError saying what to install."""
    try:
        import dask
        import dask.array as da
        import dask.dataframe as dd
    except ImportError as error:
        raise ImportError(f"{_INSTALL_HINT} ({error})") from error
    return dask, da, dd


def _active_client():
    """The current ``distributed.Client``, or None (no client, or distributed not installed)."""
    try:
        from distributed import get_client
    except ImportError:
        return None
    try:
        return get_client()
    except ValueError:  # no client and not inside a worker
        return None


def _shipped(estimator):
    """The estimator as one dask key that every block task depends on.

    With a distributed Client it is scattered (broadcast) to every worker once;
    otherwise it is a single delayed literal. Either way it is pickled once,
    not once per block. The key is unique to this call (not a hash of the
    estimator, which dask would take from its hyperparameters alone, giving two
    fitted models with the same parameters one key).
    """
    import dask

    client = _active_client()
    if client is not None:
        future = client.scatter(estimator, broadcast=True, hash=False)
        return dask.delayed(future)
    return dask.delayed(estimator, pure=False, traverse=False)


def _output_dtype(estimator, method):
    """The dtype ``getattr(estimator, method)`` returns, without calling it."""
    if _METHODS[method]:
        return np.dtype(np.float64)
    classes = getattr(estimator, "classes_", None)
    if classes is not None:  # a density fitted with labels: a generative classifier
        return np.asarray(classes).dtype
    if getattr(estimator, "_estimator_type", None) == "outlier_detector" or hasattr(estimator, "offset_"):
        return np.dtype(np.int_)  # np.where(..., 1, -1)
    return np.dtype(np.float64)  # a regressor's conditional mean


def _call_array(block, estimator, method):
    return getattr(estimator, method)(block)


def _call_frame(block, estimator, method, name):
    import pandas as pd

    return pd.Series(getattr(estimator, method)(block), index=block.index, name=name)


def score_blocks(estimator, X, method="score_samples"):
    """Lazily apply a fitted estimator's ``method`` to each row block of a dask collection.

    Parameters
    ----------
    estimator : fitted skflow estimator
        E.g. a :class:`skflow.MAFDensity` or :class:`skflow.FlowOutlierDetector`.
        It is sent to the workers once: scattered with ``broadcast=True``
        when a ``distributed.Client`` is active, otherwise wrapped in one
        ``dask.delayed`` object that every block shares.
    X : dask.array.Array of shape (n_samples, n_features) or dask.dataframe.DataFrame
        Rows to score, in the layout used in fit. A 2-D array may be chunked
        along the rows only; chunked columns are first rechunked into one
        block. A DataFrame is scored partition by partition (pandas
        DataFrames, so an estimator fitted on a DataFrame sees its column
        names).
    method : {"score_samples", "decision_function", "predict"}, default="score_samples"
        The method called on each block. Its result must be one value per
        row (:class:`skflow.FlowRegressor`'s ``score_samples(X, y)`` takes
        ``y`` and is not supported; its single-output ``predict`` is).

    Returns
    -------
    result : dask.array.Array of shape (n_samples,) or dask.dataframe.Series
        Lazy; ``.compute()`` runs it. A Series (named after ``method``)
        keeps the DataFrame's index and divisions. Blocks are scored
        independently, so a method that depends only on each row (all of
        skflow's: on the CPU scoring runs in float64, see
        ``FlowDensity._scoring_module``) gives the in-memory result.

    Raises
    ------
    ImportError
        When dask is not installed.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from skflow import MAFDensity
    >>> from skflow.distributed import score_blocks
    >>> X = np.random.RandomState(0).normal(size=(200, 2))
    >>> density = MAFDensity(hidden_features=(8,), max_epochs=2, random_state=0).fit(X)
    >>> lazy = score_blocks(density, da.from_array(X, chunks=(50, 2)))
    >>> lazy.chunks
    ((50, 50, 50, 50),)
    >>> bool(np.allclose(lazy.compute(), density.score_samples(X)))
    True
    """
    _, da, dd = _import_dask()
    if method not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}, got {method!r}.")
    if not hasattr(estimator, method):
        raise AttributeError(f"{type(estimator).__name__} has no method {method!r}.")
    if method == "predict" and getattr(estimator, "n_outputs_", 1) != 1:
        raise ValueError(
            f"score_blocks needs one value per row: this {type(estimator).__name__} predicts "
            f"{estimator.n_outputs_} targets; call its predict on each block yourself."
        )
    dtype = _output_dtype(estimator, method)

    if isinstance(X, dd.DataFrame):
        import pandas as pd

        meta = pd.Series([], dtype=dtype, name=method, index=X._meta.index)
        return X.map_partitions(_call_frame, _shipped(estimator), method, method, meta=meta)
    if isinstance(X, dd.Series):
        raise TypeError(
            "X must be a 2-D dask array or a dask DataFrame, got a dask Series; use X.to_frame()."
        )
    if not isinstance(X, da.Array):
        raise TypeError(f"X must be a dask array or dask DataFrame, got {type(X).__name__}.")
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D dask array (n_samples, n_features), got {X.ndim} dimension(s).")
    if X.numblocks[1] != 1:
        X = X.rechunk({1: -1})
    return da.map_blocks(
        _call_array,
        X,
        _shipped(estimator),
        method,
        drop_axis=1,
        chunks=(X.chunks[0],),
        dtype=dtype,
        meta=np.empty((0,), dtype=dtype),
    )


# ----------------------------------------------------------------- devices
#: A worker's rank among the workers on its host, by worker address (ranks do not change once read).
_HOST_RANKS = {}


def _current_worker():
    """The dask worker running this code, or None (not in a worker, or distributed absent)."""
    try:
        from distributed import get_worker
    except ImportError:
        return None
    try:
        return get_worker()
    except ValueError:
        return None


def _host_rank(worker):
    """Position of ``worker`` among the scheduler's workers on the same host, sorted by address.

    Asked of the scheduler the first time, then cached per worker address: a
    worker keeps its device even when workers join or leave later.
    """
    address = worker.address
    if address not in _HOST_RANKS:
        from distributed import get_client

        client = get_client()
        try:
            info = client.scheduler_info(n_workers=-1)["workers"]  # newer versions list 5 by default
        except TypeError:  # older versions take no n_workers and list every worker
            info = client.scheduler_info()["workers"]
        host = info.get(address, {}).get("host", worker.ip)
        peers = sorted(a for a, w in info.items() if w.get("host") == host)
        if address not in peers:  # not registered yet (should not happen inside a task)
            peers = sorted([*peers, address])
        _HOST_RANKS[address] = peers.index(address)
    return _HOST_RANKS[address]


def worker_device():
    """The torch device this process should train on: one GPU per dask worker on a host.

    Inside a dask worker on a host with CUDA: ``cuda:k``, with ``k`` the
    worker's position among the workers on the same host (sorted by
    address) modulo ``torch.cuda.device_count()``, so ``n`` workers on an
    ``n``-GPU machine take one GPU each. ``torch.cuda.device_count()`` counts
    the GPUs in ``CUDA_VISIBLE_DEVICES``: a worker started with one visible
    GPU (``dask-cuda``'s ``LocalCUDACluster`` does this) gets ``cuda:0``, its
    own GPU. Outside a worker: "cuda" (torch's current device, within
    ``CUDA_VISIBLE_DEVICES``) when CUDA is available, else "cpu" — what
    ``device="auto"`` gives.

    Returns
    -------
    device : torch.device

    Notes
    -----
    ``MAFDensity(device=worker_device())`` does not do this: the argument is
    evaluated where the estimator is built (the client), not where it is
    fitted. Call it where the fit runs: in a function submitted to the
    cluster, ``MAFDensity(device=str(worker_device())).fit(X)``; or, for
    joblib-driven fits (``GridSearchCV``, ``FlowOutlierDetector(n_jobs=...)``
    under ``joblib.parallel_config(backend="dask")``), leave
    ``device="auto"`` and let ``resolve_device("auto")`` call this function
    at fit time, on the worker. A worker's rank is read from the scheduler
    once and cached, so its fits all stay on one GPU.

    Examples
    --------
    >>> from skflow.distributed import worker_device
    >>> worker_device()  # doctest: +SKIP
    device(type='cpu')
    >>> def fit_on_worker(X):  # doctest: +SKIP
    ...     return MAFDensity(device=str(worker_device())).fit(X)
    >>> future = client.submit(fit_on_worker, X)  # doctest: +SKIP
    """
    import torch

    if not torch.cuda.is_available():
        return torch.device("cpu")
    count = torch.cuda.device_count()
    worker = _current_worker()
    if worker is None or count == 0:
        return torch.device("cuda")
    return torch.device("cuda", _host_rank(worker) % count)
