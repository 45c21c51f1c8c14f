"""Data layouts: validate rows ``(n, F)`` or images given as ``(n, C, H, W)``,
``(n, H, W)`` or flat ``(n, C*H*W)`` with ``image_shape``, and give arrays
back in the layout the user passed. :func:`validate_layout` is the one entry
point every estimator's ``fit`` and ``score_samples`` goes through.
"""

from collections import namedtuple

import numpy as np
from sklearn.utils.validation import check_array, validate_data

__all__ = ["ImageLayout", "check_images", "restore_layout", "validate_layout"]

#: How the user laid images out: ``ndim`` of the array (4, 3 or 2) and ``(C, H, W)``.
ImageLayout = namedtuple("ImageLayout", ["ndim", "image_shape"])


def resolve_shape(image_shape):
    """``(C, H, W)`` from ``(C, H, W)`` or ``(H, W)``; a ValueError otherwise."""
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"image_shape must be (C, H, W) or (H, W) of positive integers, got {image_shape!r}."
        )
    return shape


def check_images(X, image_shape=None, **check_params):
    """Validate images in any supported layout; return them as ``(n, C, H, W)``.

    Parameters
    ----------
    X : array-like of shape (n, C, H, W), (n, H, W) or (n, C*H*W)
        Images. A flat array needs ``image_shape``.
    image_shape : tuple of int, default=None
        ``(C, H, W)`` (or ``(H, W)`` for one channel). Required for flat
        input; checked against the other layouts.
    **check_params
        Passed to :func:`sklearn.utils.check_array` (e.g. ``ensure_min_samples``).

    Returns
    -------
    images : ndarray of shape (n, C, H, W), float64
    layout : ImageLayout
        Give it to :func:`restore_layout` to return arrays in X's layout.

    Examples
    --------
    >>> import numpy as np
    >>> images, layout = check_images(np.zeros((5, 8, 8)))
    >>> images.shape, layout
    ((5, 1, 8, 8), ImageLayout(ndim=3, image_shape=(1, 8, 8)))
    >>> check_images(np.zeros((5, 64)), image_shape=(8, 8))[0].shape
    (5, 1, 8, 8)
    """
    X = check_array(X, allow_nd=True, dtype=np.float64, **check_params)
    shape = None if image_shape is None else resolve_shape(image_shape)
    if X.ndim in (3, 4):
        found = (1, *X.shape[1:]) if X.ndim == 3 else X.shape[1:]
        if shape is not None and tuple(found) != shape:
            raise ValueError(f"X has images of shape {tuple(found)}, but image_shape is {shape}.")
        shape = tuple(found)
    elif X.ndim == 2:
        if shape is None:
            raise ValueError("Flat X of shape (n_samples, n_features) needs image_shape=(C, H, W).")
        if int(np.prod(shape)) != X.shape[1]:
            raise ValueError(
                f"X has {X.shape[1]} features, but image_shape {shape} has {int(np.prod(shape))} pixels."
            )
    else:
        raise ValueError(f"Expected images with 2, 3 or 4 dimensions, got an array of {X.ndim}.")
    return X.reshape(len(X), *shape), ImageLayout(X.ndim, shape)


def restore_layout(images, layout):
    """Reshape ``(n, C, H, W)`` images (or flat rows) to the layout recorded by :func:`check_images`."""
    shape = {2: (-1,), 3: layout.image_shape[1:], 4: layout.image_shape}[layout.ndim]
    return images.reshape(len(images), *shape)


def validate_layout(estimator, X, *, reset, images="never", image_shape=None, allow_nan=False):
    """Validate X as rows or images; return flat float64 rows ``(n, n_features)``.

    Parameters
    ----------
    estimator : BaseEstimator
        Receives ``n_features_in_`` (and ``feature_names_in_``) through
        scikit-learn's ``validate_data``; with ``reset`` also ``layout_``
        (an :class:`ImageLayout`, or None for rows) and ``image_shape_``.
    X : array-like
        Rows, or images of shape ``(n, C, H, W)`` / ``(n, H, W)``.
    reset : bool
        True in ``fit``; False when scoring (X must then match the fit).
    images : {"never", "optional", "required"}, default="never"
        Whether X may (or must) be images. With "optional", flat X without
        ``image_shape`` is rows.
    image_shape : tuple of int, default=None
        The estimator's ``image_shape`` parameter (used with ``reset``).
    allow_nan : bool, default=False
        Whether rows may hold missing (NaN) cells; infinite values are refused either way.
    """
    ensure = 2 if reset else 1
    shape = image_shape if reset else getattr(estimator, "image_shape_", None)
    layout = None
    if images != "never" and not hasattr(X, "iloc") and np.asarray(X).ndim in (3, 4):
        stacked, layout = check_images(X, shape, ensure_min_samples=ensure)
        X = stacked.reshape(len(stacked), -1)
    finite = "allow-nan" if allow_nan else True
    X = validate_data(estimator, X, dtype=np.float64, reset=reset, ensure_min_samples=ensure,
                      ensure_all_finite=finite)
    if layout is None and (shape is not None or images == "required"):
        layout = check_images(X, shape)[1]
    if reset:
        estimator.layout_ = layout
        estimator.image_shape_ = None if layout is None else layout.image_shape
    return X
